"""The installed decision thresholds of the vet (``thresholds.json`` next to this file).

``benchmarks/detection.py`` fits them on its calibration zoo and rewrites the file; the
provenance (source, date, zoo, settings, caveats) travels with the numbers and is copied
into every vet report. SafeModel re-runs the decision rule with these thresholds, so they
live here, below both the vet and SafeModel.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from edgeguard.errors import ConfigError, DataError, DataNotFoundError

__all__ = ["load_thresholds", "thresholds_sha256", "likelihood", "margin", "THRESHOLDS_FILE"]

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


def load_thresholds(source: str | os.PathLike | dict[str, Any] | None = None) -> dict[str, Any]:
    """The thresholds dict: ``source`` (a dict or a JSON path) or the installed file."""
    if isinstance(source, dict):
        data = source
        origin = "<dict>"
    else:
        path = Path(source) if source is not None else THRESHOLDS_FILE
        if not path.is_file():
            raise DataNotFoundError(f"expected a vet thresholds file at {path}, but there is none")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataError(f"expected JSON thresholds in {path}, got an error: {error}") from None
        origin = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise DataError(f"expected a JSON object with a 'tests' table in the vet thresholds ({origin}), got {type(data).__name__}")
    for name in ("leakage", "finetune"):
        entry = data["tests"].get(name)
        if entry is None or not {"threshold", "scale", "higher_is_vicious"} <= set(entry):
            raise DataError(
                f"expected tests.{name} with 'threshold', 'scale' and 'higher_is_vicious' in the vet thresholds "
                f"({origin}), got {entry!r}"
            )
    _check_numbers(data, origin)
    leakage = data["tests"]["leakage"]
    if leakage.get("statistic") not in (None, "gain_db"):
        raise DataError(
            f"expected tests.leakage.statistic 'gain_db' (the invariant PSNR gain) in {origin}, got "
            f"{leakage.get('statistic')!r}; thresholds from edgeguard < 0.2 must be refitted (benchmarks/detection.py)"
        )
    data = dict(data)
    data.setdefault("file", origin)
    data["sha256"] = thresholds_sha256(data)
    return data


def _check_numbers(data: dict[str, Any], origin: str) -> None:
    """Every test entry's threshold and scale are finite numbers (scale > 0), higher_is_vicious a bool;
    the combined rule's weights, bias and cut-off are numbers (a typo fails here, not mid-vet)."""

    def number(value: Any, where: str, positive: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"expected a finite number for {where} in the vet thresholds ({origin}), got {value!r}")
        if positive and not value > 0:
            raise ConfigError(f"expected a positive number for {where} in the vet thresholds ({origin}), got {value!r}")

    tests = data.get("tests")
    if not isinstance(tests, dict):
        raise ConfigError(f"expected a 'tests' object in the vet thresholds ({origin}), got {type(tests).__name__}")
    for name, entry in tests.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"expected tests.{name} to be an object in the vet thresholds ({origin}), got {entry!r}")
        if "threshold" in entry or "scale" in entry:
            number(entry.get("threshold"), f"tests.{name}.threshold")
            number(entry.get("scale"), f"tests.{name}.scale", positive=True)
        if "higher_is_vicious" in entry and not isinstance(entry["higher_is_vicious"], bool):
            raise ConfigError(
                f"expected true or false for tests.{name}.higher_is_vicious in the vet thresholds ({origin}), "
                f"got {entry['higher_is_vicious']!r}"
            )
    combined = data.get("combined", {})
    if not isinstance(combined, dict):
        raise ConfigError(f"expected a 'combined' object in the vet thresholds ({origin}), got {combined!r}")
    for name, weight in (combined.get("weights") or {}).items():
        number(weight, f"combined.weights.{name}")
    for key in ("bias", "likelihood_threshold"):
        if key in combined:
            number(combined[key], f"combined.{key}")


def thresholds_sha256(table: dict[str, Any]) -> str:
    """SHA-256 of the thresholds' content (canonical JSON, without 'file' and 'sha256')."""
    content = {key: value for key, value in table.items() if key not in ("file", "sha256")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def margin(score: float, entry: dict[str, Any]) -> float:
    """Signed distance to the threshold in units of the entry's scale (> 0 = vicious side)."""
    value = (float(score) - float(entry["threshold"])) / float(entry["scale"])
    return value if entry["higher_is_vicious"] else -value


def likelihood(score: float, entry: dict[str, Any]) -> float:
    """Map a score to (0, 1): 0.5 at the threshold, logistic with the entry's scale."""
    value = max(-50.0, min(50.0, margin(score, entry)))
    return 1.0 / (1.0 + math.exp(-value))
