"""The JSON Schema of the vet report (``report.schema.json``, shipped with the package).

    from edgeguard.vetting.schema import validate_report
    validate_report(json.load(open("report.json")))   # raises DataError when it does not match

Validation uses the ``jsonschema`` package (in the ``test`` extra; ``pip install jsonschema``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgeguard.errors import DataError, MissingDependencyError

__all__ = ["REPORT_SCHEMA_FILE", "report_schema", "validate_report"]

#: The JSON Schema (draft 2020-12) of ``VetReport.to_dict()`` / ``edgeguard vet --format json``.
REPORT_SCHEMA_FILE = Path(__file__).with_name("report.schema.json")


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return REPORT_SCHEMA_FILE.read_text(encoding="utf-8")


def report_schema() -> dict[str, Any]:
    """The report schema as a dict (a fresh copy)."""
    return json.loads(_schema_text())


def validate_report(data: dict[str, Any]) -> None:
    """Raise DataError naming the first mismatch when ``data`` is not a valid vet report."""
    try:
        import jsonschema
    except ImportError:
        raise MissingDependencyError(
            "expected the jsonschema package to validate vet reports, got none; pip install jsonschema"
        ) from None
    validator = jsonschema.Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise DataError(
            f"expected a vet report matching {REPORT_SCHEMA_FILE.name}, got {len(errors)} error(s), "
            f"first at {where}: {first.message}"
        )
