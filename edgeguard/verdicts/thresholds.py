"""Decision thresholds of the vet, read from ``thresholds.json`` next to this file.

``benchmarks/detection.py`` fits them on its model zoo and rewrites the file; the
provenance (source file, date, zoo, settings, caveats) travels with the numbers and is
copied into every :class:`~edgeguard.vetting.VetReport`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from edgeguard.errors import DataError, DataNotFoundError

__all__ = ["load_thresholds", "thresholds_sha256", "likelihood", "margin", "THRESHOLDS_FILE"]

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


def load_thresholds(source: str | os.PathLike | dict[str, Any] | None = None) -> dict[str, Any]:
    """The thresholds dict: ``source`` (a dict or a JSON path) or the packaged file."""
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
    for name in ("leakage", "finetune"):
        entry = data.get("tests", {}).get(name)
        if entry is None or not {"threshold", "scale", "higher_is_vicious"} <= set(entry):
            raise DataError(
                f"expected tests.{name} with 'threshold', 'scale' and 'higher_is_vicious' in the vet thresholds "
                f"({origin}), got {entry!r}"
            )
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


def thresholds_sha256(table: dict[str, Any]) -> str:
    """SHA-256 of the thresholds' content (canonical JSON, without 'file' and 'sha256')."""
    content = {key: value for key, value in table.items() if key not in ("file", "sha256")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def likelihood(score: float, entry: dict[str, Any]) -> float:
    """Map a score to (0, 1): 0.5 at the threshold, logistic with the entry's scale."""
    margin = (score - float(entry["threshold"])) / float(entry["scale"])
    if not entry["higher_is_vicious"]:
        margin = -margin
    margin = max(-50.0, min(50.0, margin))
    return 1.0 / (1.0 + math.exp(-margin))


def margin(score: float, entry: dict[str, Any]) -> float:
    """Signed distance to the threshold in units of the entry's scale (> 0 = vicious side)."""
    value = (score - float(entry["threshold"])) / float(entry["scale"])
    return value if entry["higher_is_vicious"] else -value
