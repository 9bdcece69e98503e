"""``VetSettings``: every knob of ``edgeguard.vet`` in one frozen dataclass.

The CLI options carry these names (``--leakage-max-fit`` is ``leakage_max_fit``, the
``max_fit`` field of :class:`~edgeguard.vetting.audit.AuditSettings`), and their choices
come from the constants here. Nested settings left at None are taken from the installed
thresholds (the settings they were calibrated with), then the caller's overrides.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeguard.errors import ConfigError
from edgeguard.model.limits import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES
from edgeguard.vectors import DEFAULT_LABEL_COLUMN
from edgeguard.vetting.audit import AuditSettings
from edgeguard.vetting.finetune import STATISTICS, FinetuneSettings
from edgeguard.vetting.reference import ReferenceSettings

__all__ = [
    "VetSettings",
    "TESTS",
    "DEFAULT_TESTS",
    "DEFAULT_MIN_PER_CLASS",
    "OPTIMISERS",
    "FINETUNE_STATISTICS",
    "NESTED",
]

#: Every check the vet can run, in the order they run.
TESTS = ("consistency", "precision", "continuity", "leakage", "finetune")
#: What ``vet`` runs by default (the fine-tune test runs on request: see thresholds.json).
DEFAULT_TESTS = ("consistency", "precision", "continuity", "leakage")
#: Fewest probe samples per class (per attribute value) for a conclusive verdict.
DEFAULT_MIN_PER_CLASS = 10
OPTIMISERS = ("sgd", "adam")
FINETUNE_STATISTICS = tuple(STATISTICS)
#: Flattened knob prefix -> (VetSettings field, settings class).
NESTED = {"leakage": ("leakage", AuditSettings), "finetune": ("finetune", FinetuneSettings),
          "reference": ("reference", ReferenceSettings)}


@dataclass(frozen=True)
class VetSettings:
    """How one model is vetted (see :func:`edgeguard.vetting.vet`).

    ``twin``: train an architecture-matched honest twin (the vetted graph re-initialised and
    trained on ``reference_data``, or on augmented probe images) and decide on the excess
    leakage over it; without a twin (``twin=False`` and no ``reference_models``) the
    verdict can be vicious or inconclusive, never honest.
    """

    seed: int = 0
    augment_seed: int | None = None
    tests: tuple[str, ...] = DEFAULT_TESTS
    probe_limit: int | None = None
    min_per_class: int = DEFAULT_MIN_PER_CLASS
    class_names: tuple[str, ...] | None = None
    input_shape: tuple[int, ...] | None = None
    pixel_range: tuple[float, float] | None = None
    output_kind: str | None = None
    task_type: str | None = None
    output: str | None = None
    input_layout: str | None = None
    label_column: str = DEFAULT_LABEL_COLUMN
    release: str | None = None
    reference_models: tuple[str, ...] = ()
    reference_data: Any = None
    twin: bool = True
    precision_rows: int = 48
    continuity_rows: int = 256
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    leakage: AuditSettings | None = None
    finetune: FinetuneSettings | None = None
    reference: ReferenceSettings | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.tests if t not in TESTS]
        if unknown:
            raise ConfigError(f"expected tests among {TESTS}, got {unknown}; pick from that list")
        if self.min_per_class < 1 or self.precision_rows < 1 or self.continuity_rows < 2:
            raise ConfigError(
                f"expected min_per_class >= 1, precision_rows >= 1 and continuity_rows >= 2, got "
                f"{self.min_per_class}, {self.precision_rows}, {self.continuity_rows}"
            )

    @classmethod
    def from_knobs(cls, table: Mapping[str, Any], base: "VetSettings | None" = None, **knobs: Any) -> "VetSettings":
        """``base`` (or the defaults) with ``knobs`` applied: field names, or ``<leakage|finetune|reference>_<field>``.

        Nested settings start from the thresholds' calibrated ones. None values are ignored.
        """
        base = base or cls()
        own = {f.name for f in dataclasses.fields(cls)}
        direct: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {prefix: {} for prefix in NESTED}
        unknown = []
        for key, value in knobs.items():
            if value is None:
                continue
            prefix = key.split("_", 1)[0]
            if key in own:
                direct[key] = _as_tuple(key, value)
            elif prefix in NESTED and key.split("_", 1)[1] in {f.name for f in dataclasses.fields(NESTED[prefix][1])}:
                nested[prefix][key.split("_", 1)[1]] = tuple(value) if isinstance(value, list) else value
            else:
                unknown.append(key)
        if unknown:
            names = sorted(own) + sorted(
                f"{p}_{f.name}" for p, (_, klass) in NESTED.items() for f in dataclasses.fields(klass)
            )
            raise ConfigError(f"expected vet settings among {names}, got unknown {sorted(unknown)}")
        calibrated = {
            "leakage": dict((table.get("audit") or {}).get("settings", {})),
            "finetune": dict(table["tests"]["finetune"].get("settings", {})),
            "reference": dict((table.get("reference") or {}).get("settings", {})),
        }
        for prefix, (name, klass) in NESTED.items():
            current = direct.get(name, getattr(base, name))
            values = dataclasses.asdict(current) if current is not None else calibrated[prefix]
            values = {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(klass)}}
            values.update(nested[prefix])
            if "decoders" in values:
                values["decoders"] = tuple(values["decoders"])
            try:
                direct[name] = klass(**values)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"expected valid {prefix} settings, got an error: {error}") from None
        return dataclasses.replace(base, **direct)

    def record(self) -> dict[str, Any]:
        """The settings as plain data (for the report)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}
            elif isinstance(value, tuple):
                value = list(value)
            elif value is not None and not isinstance(value, (int, float, str, bool)):
                value = str(value) if isinstance(value, (str, os.PathLike)) else "<Dataset>"
            out[f.name] = value
        return out


def _as_tuple(key: str, value: Any) -> Any:
    if key in ("tests", "class_names", "input_shape", "pixel_range", "reference_models") and isinstance(
        value, (list, Sequence)
    ) and not isinstance(value, str):
        return tuple(str(v) if key == "reference_models" else v for v in value)
    return value
