"""Check a vet report before trusting its verdict (what SafeModel does with ``verdict=``).

A verdict is accepted only as a full report: bound to the file's SHA-256, made by this
edgeguard version with the installed thresholds (their SHA-256), with a verdict that the
decision rule re-derives from the report's own scores and findings, and, when a key is
configured, signed under it. A hand-made ``{"model_sha256": ..., "verdict": "honest"}``
or an edited report is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelRefusedError
from edgeguard.verdicts.rule import decide_record
from edgeguard.verdicts.signing import read_key, verify_signature
from edgeguard.verdicts.thresholds import load_thresholds

__all__ = ["VerifiedReport", "ReportData", "read_report", "verify_report", "verdict_as_run", "REQUIRED_KEYS"]

#: Keys every full vet report has (``VetReport.to_dict()``).
REQUIRED_KEYS = (
    "model_sha256", "verdict", "tests", "findings", "probe", "settings", "thresholds_sha256", "edgeguard_version",
    "checked",
)
_VERDICTS = ("honest", "vicious", "inconclusive")


@dataclass
class VerifiedReport:
    """A report that passed :func:`verify_report`: its verdict, re-derived, and how the model was checked."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)
    signed: bool = False
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    #: SHA-256 of the report's bytes as read (the file's; for a mapping, its canonical JSON)
    sha256: str = ""


@dataclass(frozen=True)
class ReportData:
    """A vet report as plain data, and the SHA-256 of the very bytes it was read from."""

    record: dict[str, Any]
    sha256: str


def verdict_as_run(verified: VerifiedReport) -> str:
    """The verdict an app may act on: "honest" only if the vet also checked batch size 1 (how apps call a model)."""
    if verified.verdict == "honest" and 1 not in list(verified.checked.get("batch_sizes") or []):
        return "inconclusive"
    return verified.verdict


def read_report(source: Any) -> ReportData:
    """A report as plain data: from a path to its JSON, a mapping, or an object with ``to_dict()``.

    The one reader of vet reports (SafeModel, ``edgeguard guard`` and ``edgeguard inspect`` use it):
    a file is read once, and its digest is of those bytes.
    """
    raw: bytes | None = None
    if isinstance(source, (str, os.PathLike)):
        try:
            raw = Path(source).read_bytes()
            data = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError) as error:
            raise ModelRefusedError(
                f"expected a readable JSON vet report at {source}, got {type(error).__name__}: {error}; refusing to "
                "run without the verdict that was asked for"
            ) from None
    elif isinstance(source, Mapping):
        data = dict(source)
    elif callable(getattr(source, "to_dict", None)):
        data = source.to_dict()
    else:
        raise ModelRefusedError(
            f"expected a vet report (VetReport, its dict or a path to its JSON), got {type(source).__name__}; "
            "refusing to run (fail closed)"
        )
    if not isinstance(data, Mapping):
        raise ModelRefusedError(
            f"expected a vet report as a JSON object, got a JSON {type(data).__name__}; vet the file and pass its report"
        )
    try:  # one canonical form whatever the source: what was signed is what is checked
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ModelRefusedError(f"expected a JSON-serialisable vet report, got an error: {error}") from None
    if raw is None:
        raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return ReportData(json.loads(text), hashlib.sha256(raw).hexdigest())


def verify_report(
    source: Any,
    *,
    model_sha256: str,
    version: str,
    key: bytes | str | os.PathLike | None = None,
    accept_thresholds: bool = False,
    thresholds: Any = None,
) -> VerifiedReport:
    """Check ``source`` against this file, this edgeguard and these thresholds; raise ModelRefusedError if not."""
    read = read_report(source)
    record = read.record
    missing = [name for name in REQUIRED_KEYS if name not in record]
    if missing:
        raise ModelRefusedError(
            f"expected a full vet report (as written by `edgeguard vet --format json`), got one without {missing}; "
            "a hand-made verdict is not accepted: vet the file and pass its report"
        )
    signed = False
    if key is not None:
        key_bytes = read_key(key)  # ConfigError when the key file is missing or too short
        problem = verify_signature(record, key_bytes)
        if problem:
            raise ModelRefusedError(
                f"expected a vet report signed with the configured verdict key, got: {problem}; refusing to run "
                "(ask the reviewer for the signed report, `edgeguard vet --sign-key FILE`)"
            )
        signed = True
    sha, claimed = str(record["model_sha256"]).lower(), record["verdict"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelRefusedError(f"expected a report with a 64-hex-digit model_sha256, got {sha!r}; refusing to run")
    if claimed not in _VERDICTS:
        raise ModelRefusedError(f"expected a verdict in {_VERDICTS}, got {claimed!r}; refusing to run (fail closed)")
    if sha != model_sha256.lower():
        raise ModelRefusedError(
            f"expected a verdict for this file (sha256 {model_sha256}), got one for sha256 {sha}: the verdict was "
            "issued for another file (the model changed since it was vetted); vet this file again"
        )
    installed = load_thresholds(thresholds)
    same = record["thresholds_sha256"] == installed["sha256"]
    if not accept_thresholds and not same:
        raise ModelRefusedError(
            f"expected a vet report made with this edgeguard's thresholds (sha256 {installed['sha256'][:12]}), got "
            f"one made with {str(record['thresholds_sha256'])[:12] or 'unrecorded thresholds'} (edgeguard "
            f"{record['edgeguard_version'] or '?'}); vet the file again, or pass accept_thresholds=True"
        )
    if not accept_thresholds and record["edgeguard_version"] != version:
        raise ModelRefusedError(
            f"expected a vet report made by edgeguard {version}, got one made by {record['edgeguard_version']!r}; "
            "vet the file again with this version, or pass accept_thresholds=True"
        )
    table = installed if same else (record.get("thresholds") or {})
    if not isinstance(table, Mapping) or "tests" not in table:
        raise ModelRefusedError("expected the report to carry the thresholds it was made with; vet the file again")
    decision = decide_record(record, table)
    if decision.verdict != claimed:
        raise ModelRefusedError(
            f"expected the report's verdict to follow from its own scores, got {claimed!r} where its scores and "
            f"findings give {decision.verdict!r}: the report was edited; vet the file again"
        )
    return VerifiedReport(
        decision.verdict, decision.reasons, dict(record.get("checked") or {}), signed, record, read.sha256
    )
