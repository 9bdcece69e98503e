"""SafeModel's verdict policy: read a vet verdict, check it names this file and these thresholds, act on it.

``on_vicious`` decides what a "vicious" verdict does ("refuse", "argmax", "warn", or None:
not consulted); "inconclusive" is no pass. Only :mod:`edgeguard.verdicts` is imported, never
the vet itself (the runtime does not depend on the analysis package).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelRefusedError
from edgeguard.filters import Argmax, ClassLabels, OutputFilter
from edgeguard.verdicts import VERDICTS

__all__ = ["VET_POLICIES", "ViciousModelWarning", "VerdictOutcome", "apply_verdict", "label_filters", "read_verdict"]

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


def read_verdict(verdict: Any) -> tuple[str, str, dict[str, Any]]:
    """(model_sha256, verdict, binding) from a report object, a mapping, or a path to a JSON report.

    ``binding`` holds what a full vet report records besides the verdict (absent keys for
    a hand-made verdict): ``is_report``, ``thresholds_sha256``, ``checked`` (how the vet
    ran the model), ``edgeguard_version``.
    """
    if isinstance(verdict, str | os.PathLike):
        try:
            verdict = json.loads(Path(verdict).read_text())
        except (OSError, ValueError) as error:
            raise ModelRefusedError(
                f"expected a readable JSON vetting report at {verdict}, got {type(error).__name__}: {error}; "
                "refusing to run without the verdict that was asked for"
            ) from None
    if isinstance(verdict, Mapping):
        get = verdict.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(verdict, key, default)

    sha, value = get("model_sha256"), get("verdict")
    value = getattr(value, "value", value)  # an Enum member
    if not isinstance(sha, str) or len(sha) != 64:
        raise ModelRefusedError(
            f"expected a verdict with a 64-hex-digit model_sha256, got {sha!r}; refusing to run (fail closed)"
        )
    if value not in VERDICTS:
        raise ModelRefusedError(f"expected a verdict in {VERDICTS}, got {value!r}; refusing to run (fail closed)")
    thresholds = get("thresholds") or {}
    binding = {
        "is_report": get("thresholds") is not None or get("tests") is not None,
        "thresholds_sha256": get("thresholds_sha256")
        or (thresholds.get("sha256") if isinstance(thresholds, Mapping) else None),
        "checked": dict(get("checked") or {}),
        "edgeguard_version": get("edgeguard_version"),
    }
    return sha.lower(), value, binding


def apply_verdict(
    verdict: Any,
    policy: str,
    filters: list[OutputFilter],
    *,
    model_sha256: str,
    path: Path,
    task_type: str,
    accept_thresholds: bool = False,
) -> VerdictOutcome:
    """Honour a vet verdict: bound to this file, these thresholds, and checked the way SafeModel runs it.

    ``inconclusive`` is no pass: it is refused under "refuse", label-only under "argmax".
    A full vet report made with other thresholds than this edgeguard's is refused unless
    ``accept_thresholds``; an "honest" report whose consistency test did not vouch for the
    batch sizes SafeModel uses counts as inconclusive.
    """
    sha, value, binding = read_verdict(verdict)
    if sha != model_sha256:
        raise ModelRefusedError(
            f"expected a verdict for this file (sha256 {model_sha256}), got one for sha256 {sha}: the "
            "verdict was issued for another file (the model changed since it was vetted); vet this file again"
        )
    outcome = VerdictOutcome(filters, value, None, list(binding["checked"].get("batch_sizes") or []))
    if binding["is_report"] and not accept_thresholds:
        from edgeguard.verdicts.thresholds import load_thresholds

        mine = load_thresholds()["sha256"]
        if binding["thresholds_sha256"] != mine:
            raise ModelRefusedError(
                f"expected a vet report made with this edgeguard's thresholds (sha256 {mine[:12]}), got one made "
                f"with {str(binding['thresholds_sha256'])[:12] or 'unrecorded thresholds'} (edgeguard "
                f"{binding['edgeguard_version'] or '?'}); vet the file again, or pass accept_thresholds=True"
            )
    if value == "honest" and binding["is_report"] and 1 not in outcome.vetted_batch_sizes:
        value = "inconclusive"  # the vet never checked the model the way an app calls it
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
