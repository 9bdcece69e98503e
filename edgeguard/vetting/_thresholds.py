"""Decision thresholds of the vet, read from ``thresholds.json`` next to this file.

``benchmarks/detection.py`` fits them on its model zoo and rewrites the file; the
provenance (source file, date, zoo, settings, caveats) travels with the numbers and is
copied into every :class:`~edgeguard.vetting.VetReport`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from edgeguard.errors import DataError, DataNotFoundError

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
    if leakage.get("statistic") == "entropy_adjusted_gain_db" and "entropy_slope" not in leakage:
        raise DataError(f"expected tests.leakage.entropy_slope for the entropy-adjusted statistic in {origin}")
    data = dict(data)
    data.setdefault("file", origin)
    return data


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
