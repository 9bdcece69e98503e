"""The decision rule of the vet: a report's scores and the installed thresholds -> a verdict.

It works on the report's plain-data form (``VetReport.to_dict()`` or its JSON), so the vet
that writes a report and SafeModel that reads one run the very same rule, and an edited
verdict that its own scores do not support is caught.

Three-way, on intervals:

- **vicious** when a finding shows the model behaves differently from how it was checked
  (:data:`VICIOUS_FINDINGS`), when a test's score is beyond its ``hard`` limit (outputs that
  depend on float32 rounding, jumps under a sub-quantum change of the input), or when the
  lower confidence bound of a leakage statistic exceeds its margin;
- **honest** only when every required check ran and passed, the upper confidence bound of
  the decisive leakage statistic (the excess over an architecture-matched honest twin) is
  below its margin, the probe is at least as large as the one the thresholds were calibrated
  on, it covers the task, and no high or critical finding remains;
- **inconclusive** otherwise, with the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Decision",
    "decide_record",
    "accuracy_adjustment",
    "VICIOUS_FINDINGS",
    "DEFAULT_ENTRIES",
    "DEFAULT_REQUIRED",
    "SELF_DECIDING",
]

HONEST, VICIOUS, INCONCLUSIVE = "honest", "vicious", "inconclusive"

#: Finding codes that are evidence of a model that hides from the vet.
VICIOUS_FINDINGS = ("batch-dependent-outputs", "shape-value-flow", "shape-to-output-flow")
#: Checks that decide through their own ``flagged`` (and findings), with no thresholds entry. Any other
#: check without an entry cannot pass on its own say-so: it leaves the verdict short of honest.
SELF_DECIDING = ("consistency",)
#: Checks that must run and pass for an honest verdict (when the thresholds name none).
DEFAULT_REQUIRED = ("consistency", "leakage", "precision", "continuity")
#: Entries used when a thresholds table predates them (the installed file carries its own).
DEFAULT_ENTRIES: dict[str, dict[str, Any]] = {
    "precision": {
        "statistic": "max_relative_difference",
        "threshold": 1e-4,
        "hard": 1e-2,
        "scale": 1e-4,
        "higher_is_vicious": True,
        "note": "float32 onnxruntime vs the float64 re-evaluation, relative to the output scale",
    },
    "continuity": {
        "statistic": "max_jump_ratio",
        "threshold": 5.0,
        "hard": 25.0,
        "scale": 2.0,
        "higher_is_vicious": True,
        "note": "output change under a sub-quantum change of the input, over the change under a 1% brightness change",
    },
}
#: Tests that only ever decide through their own rule (never the leakage interval rule).
_LEAKAGE_PREFIX = "leakage"


@dataclass
class Decision:
    """What :func:`decide_record` concluded, and why."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    likelihood: float | None = None
    outcomes: dict[str, str] = field(default_factory=dict)  # test -> "vicious" | "pass" | "undecided" | "not-run"


def _entry(table: Mapping[str, Any], name: str, test: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    details = test.get("details") or {}
    key = str(details.get("threshold_entry") or name)
    tests = table.get("tests", {})
    entry = tests.get(key) or DEFAULT_ENTRIES.get(key)
    return key, entry


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if not math.isnan(number) else None


def accuracy_adjustment(entry: Mapping[str, Any], details: Mapping[str, Any]) -> tuple[float, float]:
    """How far (dB) the excess over the twin is raised for the model's accuracy lead: (to convict, to pass).

    Honest models of one architecture leak less the better they are trained (on the calibration
    zoo the excess over the twin falls by ``-accuracy_slope_db`` dB per unit of accuracy), and the
    trained twin, limited to the reference data, is often less accurate than a converged model.
    So a model more accurate than its twin by ``accuracy_gap`` = model - twin accuracy is compared
    with what an honest model of its accuracy would leak. The vet measures both accuracies as
    *recoverable* accuracy (``edgeguard.vetting.accuracy``: the best of top-1, cross-validated
    label probes on the outputs and a probe on the input of the last dense layer), so a per-class
    bias that hides accuracy from top-1 at no cost to the server does not shrink the gap. The
    excess is raised by
    ``-slope * gap``. Conservative both ways: no credit for a model *less* accurate than its twin
    (gap < 0 counts as 0), and a gap beyond the calibrated range (``accuracy_gap_range``) may
    extrapolate to refuse a pass but never to convict. When the vet cannot trust its accuracy
    measure (``accuracy_measure_trusted`` false: ops other than an affine map or a normalisation
    follow the graph's last dense layer, which could hide accuracy), a pass assumes at least the
    calibrated largest lead. (0, 0) when the entry or the report lacks it.
    """
    slope = _number(entry.get("accuracy_slope_db"))
    gap = _number(details.get("accuracy_gap"))
    if slope is None or gap is None or slope >= 0:
        return 0.0, 0.0
    span = entry.get("accuracy_gap_range") or [0.0, 0.0]
    top = _number(span[1]) if isinstance(span, (list, tuple)) and len(span) == 2 else None
    lead = max(gap, 0.0)
    convict = min(lead, max(top or 0.0, 0.0))
    if details.get("accuracy_measure_trusted") is False:  # ops after the last dense layer: assume the largest lead
        lead = max(lead, top or 0.0)
    return -slope * convict, -slope * lead


def _interval(name: str, test: Mapping[str, Any], score: float) -> tuple[float, float, bool]:
    """The test's 95% interval, and whether it is one a pass may rest on.

    A test without ``ci95`` is judged on its score (precision and continuity report a worst case,
    not an estimate); a leakage statistic without a usable interval, or any ``ci95`` that is
    malformed or does not contain its own score, can convict on the score but never pass.
    """
    ci = (test.get("details") or {}).get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        low, high = _number(ci[0]), _number(ci[1])
        if low is not None and high is not None and low <= score <= high:
            return low, high, True
    return score, score, ci is None and not name.startswith(_LEAKAGE_PREFIX)


def decide_record(record: Mapping[str, Any], table: Mapping[str, Any]) -> Decision:
    """The verdict that ``record`` (a report as a dict) supports under ``table`` (thresholds)."""
    combined = table.get("combined", {}) or {}
    weights = combined.get("weights", {}) or {}
    requested = list((record.get("settings") or {}).get("tests") or [])
    required = [name for name in combined.get("required_v3", DEFAULT_REQUIRED)]
    findings = [f for f in record.get("findings") or [] if isinstance(f, Mapping)]
    tests = {name: t for name, t in (record.get("tests") or {}).items() if isinstance(t, Mapping)}
    decision = Decision(INCONCLUSIVE)
    vicious: list[str] = []
    open_reasons: list[str] = []

    hiding = sorted({str(f.get("code")) for f in findings if f.get("code") in VICIOUS_FINDINGS})
    if hiding:
        vicious.append(f"the model behaves differently from how it was checked ({', '.join(hiding)})")

    # a probe that misses classes makes every comparison (twin, baseline) unreliable: intervals cannot convict
    coverage_gaps = bool((record.get("probe") or {}).get("coverage_problems"))
    for name, test in tests.items():
        status = test.get("status")
        if status != "ran":
            decision.outcomes[name] = "not-run"
            if name in required or name in requested:
                open_reasons.append(f"{name} test {status}: {test.get('reason') or 'no reason recorded'}")
            continue
        score = _number(test.get("score"))
        key, entry = _entry(table, name, test)
        if entry is None and test.get("flagged") is not None and name in SELF_DECIDING:  # decides by its findings
            decision.outcomes[name] = "undecided" if test.get("flagged") else "pass"
            if test.get("flagged"):
                open_reasons.append(f"{name} check flagged: {test.get('reason') or 'see its findings'}")
            continue
        if entry is None and test.get("flagged") is not None:  # its own say-so is no evidence
            decision.outcomes[name] = "undecided"
            open_reasons.append(
                f"expected a thresholds entry {key!r} for the {name} check (only {', '.join(SELF_DECIDING)} may decide "
                f"by itself), got none: its flagged={bool(test.get('flagged'))} cannot count as a pass (vet with "
                "thresholds that carry the entry, or drop the check from settings.tests)"
            )
            continue
        if score is None or entry is None:
            decision.outcomes[name] = "informational"
            continue
        if name in weights and float(weights[name]) == 0.0:
            decision.outcomes[name] = "informational"
            continue
        sign = 1.0 if entry.get("higher_is_vicious", True) else -1.0
        low, high, usable = _interval(name, test, score)
        adjusted = ""
        if name.startswith(_LEAKAGE_PREFIX) and sign > 0:
            to_convict, to_pass = accuracy_adjustment(entry, test.get("details") or {})
            if to_convict or to_pass:
                score, low, high = score + to_convict, low + to_convict, high + to_pass
                adjusted = f" (raised by {to_convict:.2g}/{to_pass:.2g} dB for the model's accuracy lead over its twin)"
        if sign < 0:
            low, high = -high, -low
        threshold = sign * float(entry["threshold"])
        hard = _number(entry.get("hard"))
        if name.startswith(_LEAKAGE_PREFIX) and decision.likelihood is None:
            value = max(-50.0, min(50.0, (sign * score - threshold) / float(entry.get("scale", 1.0) or 1.0)))
            decision.likelihood = 1.0 / (1.0 + math.exp(-value))
        if hard is not None and sign * score > sign * hard:
            decision.outcomes[name] = "vicious"
            vicious.append(f"{name} {score:.4g} is beyond its hard limit {hard:.4g} ({key})")
        elif low > threshold and not coverage_gaps:
            decision.outcomes[name] = "vicious"
            vicious.append(
                f"{name}: the lower 95% bound {sign * low:.3g} of {entry.get('statistic', key)} exceeds the margin "
                f"{entry['threshold']:.3g} ({key}){adjusted}"
            )
        elif high < threshold and usable:
            decision.outcomes[name] = "pass"
        elif high < threshold:
            decision.outcomes[name] = "undecided"
            open_reasons.append(
                f"{name}: no usable 95% interval of {entry.get('statistic', key)} (details.ci95 is "
                f"{(test.get('details') or {}).get('ci95')!r}; expected [low, high] around the score {score:.4g}): "
                "a pass needs the upper bound below the margin (re-run the vet)"
            )
        else:
            decision.outcomes[name] = "undecided"
            open_reasons.append(
                f"{name}: the 95% interval [{min(sign * low, sign * high):.3g}, {max(sign * low, sign * high):.3g}] of "
                f"{entry.get('statistic', key)} straddles the margin {entry['threshold']:.3g} ({key}){adjusted}"
            )

    if vicious:
        decision.verdict = VICIOUS
        decision.likelihood = 1.0
        decision.reasons = vicious
        return decision

    probe = record.get("probe") or {}
    problems = list(probe.get("coverage_problems") or [])
    if problems:
        open_reasons.insert(0, "the probe set does not cover the claimed task: " + "; ".join(map(str, problems)))
    minimum = _number(combined.get("min_probe_samples"))
    samples = _number(probe.get("samples"))
    if minimum is not None and (samples is None or samples < minimum):
        open_reasons.append(
            f"the probe has {int(samples or 0)} samples, fewer than the {int(minimum)} the thresholds were calibrated "
            "on: a smaller probe has less power, so no honest verdict (recalibrate with benchmarks/detection.py)"
        )
    for name in required:
        outcome = decision.outcomes.get(name)
        if name not in tests:
            open_reasons.append(f"required check {name} did not run")
        elif outcome not in ("pass", "undecided", "not-run"):  # those two already gave their reason
            open_reasons.append(f"required check {name} gave no pass ({outcome})")
    if "leakage" not in required and decision.outcomes.get("leakage") != "pass":  # a table that requires nothing
        open_reasons.append(
            f"expected the leakage statistic to pass (its upper 95% bound below the margin), got "
            f"{decision.outcomes.get('leakage', 'no leakage test')}: an honest verdict needs positive evidence "
            "(vet with the leakage test and thresholds that require it)"
        )
    leakage = tests.get("leakage")
    if leakage is not None and leakage.get("status") == "ran" and combined.get("require_twin", False):
        details = leakage.get("details") or {}
        if details.get("statistic") != "excess_gain_db":
            why = details.get("twin_missing_reason") or "no architecture-matched honest twin was compared"
            open_reasons.append(f"no honest verdict without a twin: {why}")
    blocking = sorted({str(f.get("code")) for f in findings if f.get("severity") in ("high", "critical")})
    if blocking:
        open_reasons.append(
            "high-severity findings (" + ", ".join(blocking) + ") mean the tests may not see what the model does"
        )
    if open_reasons:
        decision.verdict = INCONCLUSIVE
        decision.reasons = _unique(open_reasons)
        return decision
    decision.verdict = HONEST
    decision.reasons = [
        "every required check ran and passed ("
        + ", ".join(f"{name}: {decision.outcomes.get(name)}" for name in required)
        + ") and the leakage interval lies below its margin"
    ]
    return decision


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]
