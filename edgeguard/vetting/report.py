"""The vet's result objects: findings, per-test results and the :class:`VetReport`.

A report is plain data: ``to_dict()``/``from_dict()`` and ``to_json()``/``load()`` round-trip
it, so a verdict can be stored next to the model and checked later against the file's
SHA-256 (``model_sha256``) by the SafeModel vet policy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.errors import ConfigError, DataError
from edgeguard.verdicts import EXIT_CODES, VERDICTS

__all__ = [
    "SEVERITIES",
    "VERDICTS",
    "EXIT_CODES",
    "Finding",
    "TestResult",
    "VetReport",
]

#: Finding severities, least to most severe.
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Finding:
    """One observation of the static audit (or of the vet itself), with a fix hint."""

    code: str  # stable identifier, e.g. "external-data-escape"
    severity: str  # one of SEVERITIES
    message: str
    fix: str = ""
    location: str = ""  # node, tensor or file the finding is about

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigError(f"expected a severity in {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        return cls(**{key: data[key] for key in ("code", "severity", "message", "fix", "location") if key in data})


@dataclass
class TestResult:
    """The outcome of one behavioural test (fine-tune cosine test or leakage audit).

    ``score`` is the test's statistic, ``threshold`` the value it is compared with
    (``higher_is_vicious`` says which side flags), ``likelihood`` maps the score to [0, 1]
    (0.5 at the threshold). ``status`` is "ran", "skipped" (not run, see ``reason``) or
    "failed" (an error while running, see ``reason``).
    """

    name: str
    status: str
    score: float | None = None
    threshold: float | None = None
    higher_is_vicious: bool = True
    flagged: bool | None = None
    likelihood: float | None = None
    reason: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TestResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class VetReport:
    """Everything the vet found about one model file.

    ``verdict`` is "honest", "vicious" or "inconclusive"; ``likelihood`` the combined
    likelihood of being vicious (None when no behavioural test ran). ``model_sha256``
    binds the verdict to the exact file that was vetted.
    """

    model_path: str
    model_sha256: str
    verdict: str
    likelihood: float | None = None
    reasons: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tests: dict[str, TestResult] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    capacity_bits: float | str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    edgeguard_version: str = ""
    #: SHA-256 of the thresholds that made the verdict (SafeModel checks it against its own)
    thresholds_sha256: str = ""
    #: how the model was checked: runtime, providers, batch sizes (SafeModel runs it no other way)
    checked: dict[str, Any] = field(default_factory=dict)
    #: leakage of the release audited with ``release=SPEC`` (what SafeModel will release)
    release: dict[str, Any] | None = None
    #: HMAC of the report under a reviewer's key (``vet(..., sign_key=...)``, ``edgeguard vet --sign-key``)
    signature: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ConfigError(f"expected a verdict in {VERDICTS}, got {self.verdict!r}")

    # -- derived -------------------------------------------------------------------------
    @property
    def critical(self) -> bool:
        """True when a critical finding stopped the vet (the file was refused)."""
        return any(f.severity == "critical" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 honest, 1 vicious, 2 a critical finding (file refused), 3 inconclusive."""
        if self.critical:
            return EXIT_CODES["error"]
        return EXIT_CODES[self.verdict]

    def findings_by_severity(self) -> dict[str, list[Finding]]:
        grouped: dict[str, list[Finding]] = {s: [] for s in reversed(SEVERITIES)}
        for finding in self.findings:
            grouped[finding.severity].append(finding)
        return grouped

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "likelihood": _clean(self.likelihood),
            "reasons": list(self.reasons),
            "findings": [f.to_dict() for f in self.findings],
            "tests": {name: test.to_dict() for name, test in self.tests.items()},
            "thresholds": _clean(self.thresholds),
            "capacity_bits": _clean(self.capacity_bits),
            "model": _clean(self.model),
            "probe": _clean(self.probe),
            "settings": _clean(self.settings),
            "seconds": self.seconds,
            "edgeguard_version": self.edgeguard_version,
            "thresholds_sha256": self.thresholds_sha256,
            "checked": _clean(self.checked),
            "release": _clean(self.release),
            **({"signature": dict(self.signature)} if self.signature else {}),
        }

    def sign(self, key: bytes | str | os.PathLike) -> "VetReport":
        """Sign the report (HMAC-SHA256 of its canonical JSON) with ``key`` (bytes or a key file); returns self."""
        from edgeguard.verdicts.signing import read_key, sign_record

        self.signature = None
        self.signature = sign_record(self.to_dict(), read_key(key))
        return self

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON to ``path`` (the SafeModel vet policy can read it back)."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VetReport":
        try:
            return cls(
                model_path=str(data.get("model_path", "")),
                model_sha256=str(data["model_sha256"]),
                verdict=str(data["verdict"]),
                likelihood=data.get("likelihood"),
                reasons=list(data.get("reasons", [])),
                findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                tests={name: TestResult.from_dict(t) for name, t in data.get("tests", {}).items()},
                thresholds=dict(data.get("thresholds", {})),
                capacity_bits=data.get("capacity_bits"),
                model=dict(data.get("model", {})),
                probe=dict(data.get("probe", {})),
                settings=dict(data.get("settings", {})),
                seconds=float(data.get("seconds", 0.0)),
                edgeguard_version=str(data.get("edgeguard_version", "")),
                thresholds_sha256=str(data.get("thresholds_sha256", "")),
                checked=dict(data.get("checked", {})),
                release=data.get("release"),
                signature=data.get("signature"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(
                f"expected a vet report with at least 'model_sha256' and 'verdict', got an error: {error}"
            ) from None

    @classmethod
    def from_json(cls, text: str) -> "VetReport":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"expected a JSON vet report, got invalid JSON: {error}") from None
        if not isinstance(data, dict):
            raise DataError(f"expected a JSON object as vet report, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VetReport":
        """Read a report written by :meth:`save` or ``edgeguard vet --format json``."""
        path = Path(path)
        if not path.is_file():
            from edgeguard.errors import DataNotFoundError

            raise DataNotFoundError(f"expected a vet report (JSON) at {path}, but there is none")
        return cls.from_json(path.read_text(encoding="utf-8"))

    def to_text(self) -> str:
        from edgeguard.vetting._text import render_text

        return render_text(self)


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings ("inf", "-inf", "nan")."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value
