"""SafeModel's verdict policy: verify a vet report (:mod:`edgeguard.verdicts.verify`), act on its verdict.

``on_vicious`` decides what a "vicious" verdict does ("refuse", "argmax", "warn", or None:
not consulted); "inconclusive" is no pass. Only :mod:`edgeguard.verdicts` is imported, never
the vet itself (the runtime does not depend on the analysis package).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeguard._version import __version__
from edgeguard.errors import ModelRefusedError
from edgeguard.filters import Argmax, ClassLabels, OutputFilter
from edgeguard.verdicts.verify import verdict_as_run, verify_report

__all__ = ["VET_POLICIES", "ViciousModelWarning", "VerdictOutcome", "apply_verdict", "label_filters"]

logger = logging.getLogger("edgeguard.safe_model")

#: What a "vicious" (or "inconclusive") verdict does, see SafeModel(on_vicious=...).
VET_POLICIES = ("refuse", "argmax", "warn", None)


class ViciousModelWarning(UserWarning):
    """A vetting verdict says the model is vicious (or could not tell) and the policy lets it run."""


@dataclass(frozen=True)
class VerdictOutcome:
    """What a verdict leaves SafeModel: the filters to use, the verdict, the action taken, the batch sizes the vet checked."""

    filters: list[OutputFilter]
    verdict: str
    action: str | None  # None, "argmax" or "warned"
    vetted_batch_sizes: list[int]


def label_filters(task_type: str) -> list[OutputFilter]:
    """The label-only release: top-1 index (multiclass) or one 0/1 per label (multilabel)."""
    return [ClassLabels()] if task_type == "multilabel" else [Argmax()]


def apply_verdict(
    verdict: Any,
    policy: str,
    filters: list[OutputFilter],
    *,
    model_sha256: str,
    path: Path,
    task_type: str,
    accept_thresholds: bool = False,
    key: bytes | str | os.PathLike | None = None,
) -> VerdictOutcome:
    """Honour a vet report: a full one, bound to this file, this edgeguard and its thresholds, checked the way
    SafeModel runs the model, with a verdict its own scores support (and signed under ``key`` when one is set).

    The checks are :func:`edgeguard.verdicts.verify.verify_report` (the decision rule is re-run
    from the report's scores with the installed thresholds, so an edited verdict is refused).
    ``inconclusive`` is no pass: it is refused under "refuse", label-only under "argmax". An
    "honest" report whose consistency test did not vouch for batch size 1 counts as inconclusive.
    """
    verified = verify_report(
        verdict, model_sha256=model_sha256, version=__version__, key=key, accept_thresholds=accept_thresholds
    )
    value = verdict_as_run(verified)  # "honest" needs the vet to have checked the model the way an app calls it
    outcome = VerdictOutcome(filters, value, None, list(verified.checked.get("batch_sizes") or []))
    if value != verified.verdict:
        logger.warning("the vet report for %s did not check batch-size consistency", path.name)
    if value == "honest":
        logger.info("vetting verdict for %s: honest", path.name)
        return outcome
    what = "inconclusive" if value == "inconclusive" else "vicious"
    if policy == "refuse":
        raise ModelRefusedError(
            f"expected a model that vetting passed, got an {what} verdict for {path.name}; refusing "
            "to run it (on_vicious='refuse'). Use on_vicious='argmax' to release labels only"
            if what == "inconclusive"
            else f"expected a model that vetting did not flag, got a vicious verdict for {path.name}; refusing "
            "to run it (on_vicious='refuse'). Use on_vicious='argmax' to release labels only"
        )
    if policy == "argmax":
        logger.warning("vetting verdict for %s is %s: releasing labels only", path.name, what)
        return replace(outcome, filters=label_filters(task_type), action="argmax")
    message = (
        f"the vetting verdict for {path.name} is inconclusive; running with the filters given"
        if what == "inconclusive"
        else f"vetting flagged {path.name} as vicious; running it anyway with the filters given"
    )
    logger.warning(message)
    warnings.warn(message, ViciousModelWarning, stacklevel=3)
    return replace(outcome, action="warned")
