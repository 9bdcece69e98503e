"""The vet's verdict: the decision rule of :mod:`edgeguard.verdicts.rule` applied to a report.

The rule works on the report's plain data, so SafeModel re-derives the very same verdict
from a stored report (and refuses one whose verdict its own scores do not support).
"""

from __future__ import annotations

from typing import Any

from edgeguard.verdicts.rule import VICIOUS_FINDINGS, decide_record
from edgeguard.vetting.report import VetReport

__all__ = ["decide", "VICIOUS_FINDINGS"]


def decide(report: VetReport, table: dict[str, Any], problems: list[str] | None = None) -> None:
    """Set ``report.verdict``, ``report.likelihood`` and the leading reasons (``problems``: extra coverage problems)."""
    if problems:
        report.probe.setdefault("coverage_problems", [])
        report.probe["coverage_problems"] = list(report.probe["coverage_problems"]) + list(problems)
    decision = decide_record(report.to_dict(), table)
    for name, outcome in decision.outcomes.items():
        if name in report.tests:
            report.tests[name].details["outcome"] = outcome
            report.tests[name].details["used_in_verdict"] = outcome not in ("informational", "not-run")
    report.verdict = decision.verdict
    report.likelihood = decision.likelihood
    report.reasons = decision.reasons + [r for r in report.reasons if r not in decision.reasons]
