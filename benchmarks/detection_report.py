"""Rendering of benchmarks/detection.py's results: detection.md and the README fragment (detection_readme.md)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render", "readme_fragment"]


# -- rendering --------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rate(entry: dict[str, Any] | None) -> str:
    if not entry or not entry["n"]:
        return "-"
    low, high = entry["ci95"]
    return f"{entry['k']}/{entry['n']} = {entry['rate']:.2f} [{low:.2f}, {high:.2f}]"


def _gain(entry: dict[str, Any]) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.2f} [{entry['min']:.2f}, {entry['max']:.2f}]"


def _median(entry: dict[str, Any]) -> str:
    if not entry or entry.get("median") is None:
        return "-"
    return f"{entry['median']:.1f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"


def render(summary: dict[str, Any]) -> str:
    settings = summary["settings"]
    lines = ["# Detection benchmark v3 (held-out, three-way verdict)", ""]
    lines.append(
        f"Generated {summary['generated']}; wall {summary['wall_seconds'] / 60:.1f} min; "
        f"{summary['machine']['note']} (load average at the end {summary['machine'].get('load_average_end')})."
    )
    lines.append("")
    lines.append(
        "Every figure is on the held-out test zoo (seeds 2-3; architectures "
        + ", ".join(sorted({m["arch"] for m in summary["models"] if m["split"] == "test"}))
        + "; calibration (seeds 0-1) had CNN and MLP only, so resnet (ResNet-10) and wrn (WRN-10-2) are unseen) "
        "unless it says calibration. The vet runs as installed (default tests, thresholds "
        f"{summary['models'][0]['vet'].get('thresholds_sha256', '?')[:12] if summary['models'] else '?'}), probe "
        f"{settings['probe_size']} labelled FMNIST test images (100 per class)"
        + (", `--reference-data` 2000 unseen labelled training images" if settings.get("reference_data") else "")
        + ". Rates: k/n = rate [95% Wilson interval]; gains: mean [min, max] over the family; times: median "
        "[95% bootstrap interval]. Harmful = the server gains >= 1 dB over the honest twin (the honest post-hoc "
        "decoders of the architecture). A non-pass is a vicious or an inconclusive verdict: either way the app "
        "releases no more than the label."
    )
    lines.append("")
    if settings.get("skipped_not_trained"):
        lines.append(
            "Budget cut: left out (zoo models not trained in time, `--cached-only`; models not vetted in time, "
            "`--vetted-only`): " + ", ".join(settings["skipped_not_trained"]) + "."
        )
        lines.append("")
    if settings.get("models_selected"):
        lines.append(
            f"Budget cut: only the models matching `--models {settings['models_selected']}` were vetted "
            f"({len(summary['models'])} models)."
        )
        lines.append("")
    if not settings.get("temperature_variants", True):
        lines.append("Budget cut: the temperature-scaled honest graphs were not vetted (`--no-temperature-variants`).")
        lines.append("")
    if summary.get("refit"):
        lines.append(
            "Margins refitted on the calibration zoo before the held-out run (`--write-thresholds`): "
            + json.dumps(summary["refit"]["changes"])
        )
        lines.append("")
    bar = summary["bar"]
    lines.append("## The bar (issue 17)")
    lines.append("")
    lines.append(
        f"- No harmful vicious model passes: **{'yes' if bar['no_harmful_vicious_passes'] else 'NO'}**"
        + (
            ""
            if bar["no_harmful_vicious_passes"]
            else " (passed: " + "; ".join(f"{f}: {', '.join(n)}" for f, n in bar["harmful_passed"].items()) + ")"
        )
    )
    lines.append(
        f"- At least 90% of honest models pass: **{'yes' if bar['honest_pass_at_least_90'] else 'NO'}** "
        f"(honest-pass rate {_fmt(bar['honest_pass_rate'])})"
    )
    lines.append(f"- Vet time on the held-out CNNs (with the twin): median {_median(summary.get('vet_seconds_cnn'))} s")
    lines.append("")
    for split, title in (("test", "Held-out test zoo"), ("calibration", "Calibration zoo (in-sample: not a headline)")):
        part = summary.get(split)
        if not part:
            continue
        h = part["honest"]
        lines.append(f"## {title}")
        lines.append("")
        lines.append(
            f"Honest models ({h['models']}): honest-pass {_rate(h['honest_pass'])}; vicious verdicts (FPR) "
            f"{_rate(h['fpr_vicious'])}; inconclusive {_rate(h['inconclusive'])}; vet s {_median(h['vet_seconds'])}."
        )
        lines.append("")
        if h["not_passed"]:
            lines.append("Honest models that did not pass:")
            lines.append("")
            for m in h["not_passed"]:
                lines.append(f"- {m['name']}: {m['verdict']}: {m['reason']}")
            lines.append("")
        lines.append(
            "| family | red team | models | harmful | non-pass, harmful | vicious verdict, harmful | "
            "harmful that passed | not-harmful passed | server gain dB | over twin dB | gain behind dither dB | "
            "vet s | meant to be stopped by |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for family, f in part["families"].items():
            lines.append(
                f"| {family} | {'yes' if f['redteam'] else ''} | {f['models']} | {f['harmful']} | {_rate(f['non_pass_harmful'])} | "
                f"{_rate(f['vicious_harmful'])} | {', '.join(f['passed_harmful']) or 'none'} | {f['passed_not_harmful']} | "
                f"{_gain(f['server_gain_db'])} | {_gain(f['gain_over_twin_db'])} | {_gain(f['gain_dithered_db'])} | "
                f"{_median(f['vet_seconds'])} | {f['stopped_by'] or ''} |"
            )
        lines.append("")
    test = summary.get("test") or {}
    if test.get("families"):
        lines.append("## What stopped each family (held-out; verdict: the vet's first reason, count)")
        lines.append("")
        for family, f in test["families"].items():
            observed = "; ".join(f"{reason} ({count})" for reason, count in (f.get("observed") or {}).items())
            lines.append(f"- **{family}**: {observed.replace('|', '/')}")
        lines.append("")
    if summary.get("supplied_twin"):
        lines.append("## With a supplied honest twin (`--reference-model`)")
        lines.append("")
        lines.append(
            "The same held-out models vetted again with the converged honest model of the same architecture and the "
            "other held-out seed as the twin: what the verdict rests on when a twin exists (several red-team graphs "
            "cannot be re-trained as a twin, so the default vet ends inconclusive without one)."
        )
        lines.append("")
        lines.append(
            "| model | family | harmful | twin | verdict | leakage statistic [95% CI] | first reason | vet s |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in summary["supplied_twin"]:
            ci = r.get("ci95") or [None, None]
            lines.append(
                f"| {r['name']} | {r['family']} | {'yes' if r['harmful'] else 'no'} | {r['twin']} | {r.get('verdict')} | "
                f"{r.get('statistic')} {_fmt(r.get('score'))} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                f"{str(r.get('reason', '-'))[:160].replace('|', '/')} | {_fmt(r.get('seconds'), 1)} |"
            )
        lines.append("")
    lines.append("## Every model")
    lines.append("")
    lines.append(
        "| model | split | family | arch | acc | server gain dB | harmful | verdict | first reason | high findings | vet s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in summary["models"]:
        v = m["vet"]
        high = sorted({code for code, severity in v["findings"] if severity in ("high", "critical")})
        reason = (v["reasons"] or ["-"])[0].replace("|", "/")
        lines.append(
            f"| {m['name']} | {m['split']} | {m['family']} | {m['arch']} | {_fmt(m['accuracy'], 3)} | "
            f"{_fmt(m['server_gain_db'])} | {'yes' if m['harmful'] else 'no'} | {v['verdict']} | {reason[:160]} | "
            f"{', '.join(high) or '-'} | {_fmt(v['seconds'], 1)} |"
        )
    lines.append("")
    return "\n".join(lines) + "\n"


def readme_fragment(summary: dict[str, Any]) -> str:
    test = summary.get("test")
    if not test:
        return "No detection result.\n"
    h = test["honest"]
    lines = [
        "| family (held-out test zoo) | harmful / models | non-pass of harmful [95% CI] | server gain over twin, dB | vet s (median) |",
        "|---|---|---|---|---|",
    ]
    for family, f in test["families"].items():
        name = f"{family} (red team)" if f["redteam"] else family
        lines.append(
            f"| {name} | {f['harmful']}/{f['models']} | {_rate(f['non_pass_harmful'])} | "
            f"{_gain(f['gain_over_twin_db'])} | {_fmt((f['vet_seconds'] or {}).get('median'), 1)} |"
        )
    lines.append(
        f"| **honest: pass rate** | {h['models']} held-out | {_rate(h['honest_pass'])} | vicious verdicts "
        f"{_rate(h['fpr_vicious'])} | {_fmt((h['vet_seconds'] or {}).get('median'), 1)} |"
    )
    lines.append("")
    bar = summary["bar"]
    passed = "; ".join(f"{f}: {', '.join(n)}" for f, n in bar["harmful_passed"].items())
    archs = sorted({m["arch"] for m in summary.get("models", []) if m.get("split") == "test"} - {"cnn", "mlp"})
    unseen = ", ".join({"resnet": "ResNet-10", "wrn": "WRN-10-2"}.get(a, a) for a in archs) or "none vetted"
    lines.append(
        f"Held out: new seeds and architectures the calibration never saw ({unseen}); the red-team families are training-free "
        "graph edits (converters/attacks/graph_edits.py) built on held-out honest/vicious pairs, never used for "
        "calibration. A non-pass (vicious or inconclusive) means the app releases no more than the label. "
        + ("No harmful model passed. " if not passed else f"**Harmful models that passed as honest: {passed}.** ")
        + f"Honest-pass rate {_fmt(bar['honest_pass_rate'])}; the honest models that did not pass are listed in "
        "[detection.md](benchmarks/results/detection.md) with the vet's reason."
    )
    return "\n".join(lines) + "\n"
