"""Plain-text rendering of a :class:`VetReport` (summary, findings by severity, scores vs thresholds)."""

from __future__ import annotations

import textwrap
from typing import Any

_RULE = "-" * 78


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + "  ")


def render_text(report: Any) -> str:
    lines: list[str] = []
    counts = {severity: len(items) for severity, items in report.findings_by_severity().items()}
    lines += ["--- Summary " + _RULE[12:], ""]
    lines.append(f" Model:        {report.model_path}")
    lines.append(f" SHA-256:      {report.model_sha256}")
    verdict = report.verdict.upper()
    if report.critical:
        verdict += " (file refused: critical finding)"
    lines.append(f" Verdict:      {verdict}    exit code {report.exit_code}")
    lines.append(f" Likelihood:   {_fmt(report.likelihood, 3)} (combined likelihood of being vicious)")
    capacity = report.capacity_bits
    capacity_text = f"{capacity:.1f} bits" if isinstance(capacity, float) else (capacity or "-")
    lines.append(f" Raw output capacity: {capacity_text} per output row")
    if report.probe:
        lines.append(
            f" Probe set:    {report.probe.get('samples', '-')} samples from {report.probe.get('source', '-')}"
            + (f", model accuracy {report.probe['accuracy']:.3f}" if "accuracy" in report.probe else "")
        )
    lines.append(
        " Findings:     "
        + ", ".join(f"{severity} {count}" for severity, count in counts.items())
        + f"    ({report.seconds:.1f} s)"
    )
    for reason in report.reasons:
        lines.append(_wrap(f"- {reason}", "   "))
    lines += ["", "--- Findings by severity " + _RULE[25:]]
    for severity, items in report.findings_by_severity().items():
        if not items:
            continue
        lines += ["", f" {severity.upper()} ({len(items)})"]
        for finding in items:
            where = f" [{finding.location}]" if finding.location else ""
            lines.append(_wrap(f"* {finding.code}{where}: {finding.message}", "   "))
            if finding.fix:
                lines.append(_wrap(f"fix: {finding.fix}", "     "))
    if not report.findings:
        lines += ["", " none"]
    lines += ["", "--- Scores vs thresholds " + _RULE[25:], ""]
    header = f" {'test':<11} {'status':<8} {'score':>10} {'threshold':>10} {'flags if':>9} {'result':>8} {'likelihood':>10} {'time':>7}"
    lines.append(header)
    for name, test in report.tests.items():
        side = "-" if test.threshold is None else ("above" if test.higher_is_vicious else "below")
        result = "-" if test.flagged is None else ("FLAGGED" if test.flagged else "pass")
        lines.append(
            f" {name:<11} {test.status:<8} {_fmt(test.score):>10} {_fmt(test.threshold):>10} {side:>9} "
            f"{result:>8} {_fmt(test.likelihood, 3):>10} {test.seconds:>6.1f}s"
        )
        if test.status != "ran" and test.reason:
            lines.append(_wrap(f"({test.reason})", "   "))
        elif name == "leakage":
            d = test.details
            ci = d.get("gain_ci95_db") or [float("nan"), float("nan")]
            lines.append(
                f"   best decoder gain {_fmt(d.get('gain_db'), 2)} dB over label-only (95% CI {ci[0]:.2f}..{ci[1]:.2f}; "
                f"{d.get('worst_configuration', '-')}); clean minus augmented {_fmt(d.get('clean_minus_augmented_db'), 2)} dB"
            )
            if "excess_gain_db" in d:
                eci = d.get("excess_ci95_db") or [float("nan"), float("nan")]
                twin = d.get("twin") or {}
                lines.append(
                    f"   honest twin ({twin.get('kind', '?')}, accuracy {_fmt(twin.get('accuracy'), 3)} vs the model's "
                    f"{_fmt(d.get('model_accuracy'), 3)}): gain {_fmt(d.get('twin_gain_db'), 2)} dB; excess "
                    f"{d['excess_gain_db']:.2f} dB (95% CI {eci[0]:.2f}..{eci[1]:.2f})"
                )
            elif d.get("twin_missing_reason"):
                lines.append(_wrap(f"no honest twin: {d['twin_missing_reason']}", "   "))
        elif name == "consistency":
            d = test.details
            lines.append(
                f"   batch sizes {d.get('batch_sizes')}: max difference {_fmt(d.get('max_difference'), 6)} "
                f"of the output scale ({d.get('worst_case')})"
            )
        elif name == "finetune":
            d = test.details
            lines.append(
                f"   statistic {d.get('statistic')}; loss {d.get('loss_before', float('nan')):.4f} -> "
                f"{d.get('loss_after', float('nan')):.4f}; gradient norm {d.get('gradient_norm', float('nan')):.3g}"
            )
        if test.status == "ran" and test.reason:
            lines.append(_wrap(f"({test.reason})", "   "))
        note = test.details.get("calibration_note") if test.details else None
        if note:
            lines.append(_wrap(f"note: {note}", "   "))
    if not report.tests:
        lines.append(" (no behavioural test ran)")
    if report.release:
        r = report.release
        lines += ["", "--- Release audit " + _RULE[18:], ""]
        lines.append(
            f" release {r.get('spec')}: gain {_fmt(r.get('gain_db'), 2)} dB over the label "
            f"(raw outputs {_fmt(r.get('raw_gain_db'), 2)} dB); capacity {r.get('capacity_bits')} bits per row"
        )
    source = report.thresholds.get("source") or report.thresholds.get("file", "-")
    lines += ["", _wrap(f"Thresholds: {report.thresholds.get('file', '-')} (fitted by {source})", " ")]
    for caveat in report.thresholds.get("caveats", []):
        lines.append(_wrap(f"caveat: {caveat}", "   "))
    return "\n".join(lines) + "\n"
