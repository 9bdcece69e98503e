"""The bench's Markdown: the full report page and the short README fragment."""

from __future__ import annotations

from typing import Any

from edgeguard.bench.results import RUNG_NAMES, BenchResults, _number, _percent

__all__ = ["render", "readme_fragment"]


def render(report: BenchResults, title: str = "Latency versus leakage of edgeguard's output filters") -> str:
    s, m, base = report.settings, report.machine, report.label_only
    lines = [
        f"# {title}",
        "",
        f"Generated {s.get('generated', '')} by `{s.get('command', 'edgeguard.bench.run_bench')}`; one run, "
        "every figure below comes from it.",
        "",
        "## Setup",
        "",
        f"- Model `{s.get('model')}` ({s.get('output_kind')} output, {s.get('num_classes')} classes), decoder "
        f"`{s.get('decoder')}`; data `{s.get('data')}`.",
        f"- Splits (seed {s.get('seed')}): {s.get('eval_size')} evaluation images, {s.get('attack_size')} attacker "
        f"images ({s.get('attack_train')} to fine-tune, {s.get('attack_validation')} held out for model "
        "selection), disjoint.",
        f"- Adaptive attacker: {s.get('attacker_description')}; {s.get('attack_epochs')} epochs, batch "
        f"{s.get('attack_batch_size')}, Adam lr {s.get('attack_learning_rate')}.",
        f"- Latency: batch 1, {s.get('repeats')} timed (raw, SafeModel) pairs per configuration in "
        f"{s.get('rounds')} rounds (each round visits the configurations in a new random order, one block each, "
        f"{s.get('warmup')} warm-up pairs per block, call order alternating); onnxruntime CPU provider, "
        f"{s.get('threads')} intra-op thread(s); the raw call is `InferenceSession.run` on the session the "
        "SafeModel wraps. Median wall time; ratio = SafeModel.predict / raw of the same configuration; for "
        "`none` both calls are raw, so its ratio is the measurement's noise floor.",
        f"- Machine: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, shared: timings are indicative), "
        f"{m.get('platform')}, Python {m.get('python')}, numpy {m.get('numpy')}, onnxruntime "
        f"{m.get('onnxruntime')}, torch {m.get('torch')}; load average before {m.get('load_average_before')}.",
        "",
        "## Results",
        "",
        f"Raw accuracy {100 * report.raw_accuracy:.2f}%. Label-only baseline (per-class mean attacker image of the "
        f"predicted class): PSNR {base['psnr']:.2f} dB, SSIM {base['ssim']:.3f}, R {base['risk']:.3f}: an R near "
        "this means nothing beyond the label.",
        "",
        "### The attacker ladder",
        "",
        "PSNR (dB) / SSIM / R of each rung on the evaluation images; *worst case* = the rung with the highest "
        "PSNR, as a gain over the label-only baseline (dB / SSIM difference / R ratio). "
        f"{RUNG_NAMES['server']}; {RUNG_NAMES['adaptive']} (winner in *r2 by*); "
        f"{RUNG_NAMES['through']} ({report.settings.get('through', {}).get('budget', 'not run')}), with the "
        "accuracy of that model's release (*r3 acc*); "
        f"{RUNG_NAMES['codes']} (details below).",
        "",
        "| filter | capacity bits | acc % | drop pts | ratio | rung 1 | rung 2 | r2 by | rung 3 | r3 acc % "
        "| rung 4 | worst case: gain dB / dSSIM / R ratio | worst rung | top-3 % | conf. AUROC |",
        "|---|---:|---:|---:|---:|---|---|---|---|---:|---|---|---|---:|---:|",
    ]
    for r in report.rows:
        through = (
            f"{r.through_psnr:.2f} / {r.through_ssim:.3f} / {r.through_risk:.3f}"
            if r.through_status in ("run", "cached")
            else "not run"
        )
        codes = (
            f"{r.codes_psnr:.2f} / {r.codes_ssim:.3f} / {r.codes_risk:.3f}" if r.codes_status == "run" else "not run"
        )
        lines.append(
            f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | {100 * r.accuracy:.2f} "
            f"| {r.accuracy_drop_points:.2f} | {r.latency_ratio:.3f} "
            f"| {r.server_psnr:.2f} / {r.server_ssim:.3f} / {r.server_risk:.3f} "
            f"| {r.adaptive_psnr:.2f} / {r.adaptive_ssim:.3f} / {r.adaptive_risk:.3f} | {r.attack_decoder} "
            f"| {through} | {_percent(r.through_accuracy)} | {codes} "
            f"| **{r.worst_psnr_gain_db:+.2f}** / {r.worst_ssim_gain:+.3f} / {r.worst_risk_vs_label_only:.3f} "
            f"| {r.worst_rung} | {_percent(r.top3_accuracy)} | {_number(r.confidence_auroc)} |"
        )
    lines += ["", report.target_statement(), ""]
    lines += [
        "### Latency",
        "",
        "| filter | latency us | raw us | ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{r.filter}` | {r.latency_us:.1f} | {r.raw_latency_us:.1f} | {r.latency_ratio:.3f} |" for r in report.rows
    ]
    lines += ["", *_codes_markdown(report), *_repeats_markdown(report), *_through_failures(report)]
    lines += ["## How to read it", ""]
    lines += [
        "- *rung 1*: the server's decoder as trained, run by onnxruntime on the release mapped to its input "
        "(column `decoder_input` of the CSV). *rung 2*: an attacker who knows the filter and refits the decoder "
        "on filtered outputs (see Setup); *r2 by*: the candidate that won on held-out attacker data (`finetuned` "
        "decoder, `server` decoder as trained, `knn`, `label_only`; the CSV also has the fine-tuning epoch kept "
        "and the projection rank for R). *rung 3*: a classifier and decoder trained through the filter (the "
        "strongest learned attacker measured here); *r3 acc*: the accuracy of that model's release. *rung 4*: a hand-built code (no training) that carries "
        "the model's own outputs through the filter; its ceiling is the capacity bound. *worst case*: "
        "the rung with the highest PSNR, as gain over the label-only baseline. *top-3*: the true class among "
        "the release's 3 highest values (a label release: its top-1 accuracy). *conf. AUROC*: how well the "
        "released top-1 value tells right from wrong top-1 labels (0.5 = no confidence information).",
        "- The capacity bound (bits per release) holds for every attacker; every other number is measured and "
        "holds only for the attackers named. `clipped_laplace` draws its noise with OpenDP's sampler, which "
        "cannot be seeded: its rows are not reproducible bit for bit.",
        "- R is `edgeguard.metrics.reconstruction_risk` with the Mahalanobis reference fitted on the attacker's "
        "images (its default eigenvalue cutoff); it weighs every pixel direction by the inverse of its variance. "
        "For R the adaptive attacker may project its reconstructions onto the principal components of its "
        "images (column *rank*, chosen on held-out data; no projection is one of the choices); its PSNR and "
        "SSIM are of the unprojected reconstructions (each measure gets the attacker's best post-processing).",
        "- Releases that are not the decoder's input kind are mapped as in `edgeguard/bench/mapping.py`: "
        "probabilities to centred log-probabilities for a logits decoder, argmax labels to one-hot rows (times "
        "the class table of mean raw logits for a logits decoder).",
    ]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _repeats_markdown(report: BenchResults) -> list[str]:
    if not report.repeats:
        return []
    counts = sorted({row.repeats for row in report.repeats})
    s = report.settings.get("repeats_experiment", {})
    lines = [
        "### Repeated queries",
        "",
        f"PSNR gain (dB) over the label-only baseline when the receiver averages R releases of the same input, "
        f"on {s.get('eval_size', '?')} evaluation images; attacker: the better (on held-out attacker data) of "
        f"rung 1 and rung 2 fine-tuned for {s.get('epochs', '?')} epoch(s) on R-averaged releases of "
        f"{s.get('train_size', '?')} of its own images. *consistent*: the same spec with `consistent=true` "
        "(noise keyed by an HMAC of the input; = marks R releases that were byte-identical).",
        "",
        "| filter | noise | " + " | ".join(f"R = {c}" for c in counts) + " |",
        "|---|---|" + "---:|" * len(counts),
    ]
    table: dict[tuple[str, str], dict[int, Any]] = {}
    for row in report.repeats:
        table.setdefault((row.filter, row.noise), {})[row.repeats] = row
    for (name, noise), cells in table.items():
        values = []
        for c in counts:
            row = cells.get(c)
            values.append("–" if row is None else f"{row.psnr_gain_db:+.2f}{' =' if c > 1 and row.identical else ''}")
        lines.append(f"| `{name}` | {noise} | " + " | ".join(values) + " |")
    statement = report.repeats_statement()
    return [*lines, "", *([statement, ""] if statement else [])]


def _through_failures(report: BenchResults) -> list[str]:
    missing = [r for r in report.rows if r.through_status not in ("run", "cached")]
    if not missing:
        return []
    reasons: dict[str, list[str]] = {}
    for r in missing:
        reasons.setdefault(r.through_status, []).append(r.filter)
    lines = ["### Rung 3 not run", ""]
    for reason, names in reasons.items():
        lines.append(f"- {reason}: " + ", ".join(f"`{n}`" for n in names))
    return [*lines, ""]


def readme_fragment(report: BenchResults) -> str:
    """A short Markdown table (worst-case leakage by filter, attacker named) for the README generator."""
    lines = [
        "| release | capacity (bits) | accuracy % | worst-case PSNR gain over label-only (dB) | by | "
        "rung 1 / 2 / 3 / 4 gain (dB) | rung 4: code, bits/row carried, accuracy % |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    base = report.label_only.get("psnr", float("nan"))
    for r in report.rows:
        through = f"{r.through_psnr - base:+.2f}" if r.through_status in ("run", "cached") else "not run"
        codes = f"{r.codes_psnr - base:+.2f}" if r.codes_status == "run" else "not run"
        code = (
            f"`{r.codes_code}`, {_number(r.codes_bits_carried, 1)}, {_percent(r.codes_accuracy)}"
            if r.codes_status == "run"
            else "not run"
        )
        lines.append(
            f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | {100 * r.accuracy:.2f} | "
            f"{r.worst_psnr_gain_db:+.2f} | {r.worst_rung} | {r.server_psnr - base:+.2f} / "
            f"{r.adaptive_psnr_gain_db:+.2f} / {through} / {codes} | {code} |"
        )
    s = report.settings
    lines += [
        "",
        f"Attackers: {RUNG_NAMES['server']}; {RUNG_NAMES['adaptive']} (fine-tuned {s.get('attack_epochs')} "
        f"epochs on {s.get('attack_train')} images); {RUNG_NAMES['through']} "
        f"({s.get('through', {}).get('budget', 'not run')}); {RUNG_NAMES['codes']} (no training; the code with the "
        "best held-out PSNR at most 0.5 accuracy points below the model). Worst case = max over "
        f"{report.rungs_run()}; the capacity bound is the only figure that holds for every attacker.",
        report.target_statement(),
    ]
    for statement in (report.codes_statement(), report.repeats_statement()):
        if statement:
            lines.append(statement)
    return "\n".join(lines) + "\n"


def _codes_markdown(report: BenchResults) -> list[str]:
    ran = [r for r in report.rows if r.codes_status == "run"]
    if not ran:
        return []
    base = report.label_only.get("psnr", float("nan"))
    lines = [
        "### Rung 4: hand-built codes",
        "",
        f"{_sentence(report.settings.get('codes', {}).get('description', RUNG_NAMES['codes']))}. *payload bits*: what "
        "a row "
        "carries when its symbols come back exactly; *carried*: bits per row actually carried on the evaluation "
        "images (payload bits times the fraction of rows read back exactly; for the label trade, one bit times "
        "the fraction of traded rows), next to the capacity bound.",
        "",
        "| filter | capacity bits | code | payload bits | carried bits/row | accuracy % | PSNR / SSIM / R | gain dB |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in ran:
        lines.append(
            f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | `{r.codes_code}` | {_number(r.codes_payload_bits, 1)} "
            f"| {_number(r.codes_bits_carried, 2)} | {_percent(r.codes_accuracy)} | {r.codes_psnr:.2f} / "
            f"{r.codes_ssim:.3f} / {r.codes_risk:.3f} | {r.codes_psnr - base:+.2f} |"
        )
    statement = report.codes_statement()
    return [*lines, "", *([statement, ""] if statement else [])]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
