"""Repeated queries: leakage against the number of times the same input is released.

Apps release outputs for the same input many times (video frames, retries). With fresh
noise the receiver averages R releases of one input, and the noise's spread falls as
1/sqrt(R); consistent noise (a keyed hash of the input, :mod:`edgeguard.filters.noise`)
returns the identical release every time, so the average is the single release.

For every noise filter configuration of the bench, fresh and consistent, and every R:

- the victim's R releases of each evaluation image are averaged (for consistent noise
  the bench checks that the R releases are identical);
- the attacker is rung 1 and rung 2 of the ladder: the server's decoder as trained on
  the mapped average, and the adaptive attacker of :mod:`edgeguard.bench.attack`
  (fine-tuned on R-averaged releases of its own images, drawn fresh for each epoch; for
  consistent noise, releases under other device secrets, which it can collect from
  devices it owns, one per image since repeats give it nothing more); the better of the
  two on held-out attacker data is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.filters.spec import FilterSpec, parse_filter_spec

__all__ = ["REPEAT_COUNTS", "RepeatRow", "noise_specs", "consistent_variant"]

#: How many releases of the same input the repeats experiment averages.
REPEAT_COUNTS = (1, 10, 100)
_NOISE_STAGES = ("gaussian", "laplace", "label_preserving", "clipped_laplace")
_KEYABLE = ("gaussian", "laplace", "label_preserving")


@dataclass
class RepeatRow:
    """Leakage of one (filter, noise kind, repeats) cell."""

    filter: str
    noise: str  # "fresh" | "consistent"
    repeats: int
    identical: bool  # every one of the R releases of an input was the same
    accuracy: float
    psnr: float
    ssim: float
    psnr_gain_db: float
    attacker: str  # "server" (rung 1) | "adaptive: <winner>" (rung 2)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def noise_specs(specs: list[FilterSpec]) -> list[FilterSpec]:
    """The specs with a noise stage (Gaussian, Laplace, label-preserving, clipped Laplace)."""
    return [spec for spec in specs if any(name in _NOISE_STAGES for name, _ in spec.stages)]


def consistent_variant(spec: FilterSpec) -> FilterSpec | None:
    """The same spec with ``consistent=true`` on every keyable noise stage (None: none can be keyed)."""
    if not any(name in _KEYABLE for name, _ in spec.stages):
        return None
    parts = []
    for (name, params), text in zip(spec.stages, spec.text.split(">")):
        if name in _KEYABLE and not dict(params).get("consistent"):
            text = f"{text}{',' if ':' in text else ':'}consistent=true"
        parts.append(text)
    return parse_filter_spec(">".join(parts))


def is_consistent(spec: FilterSpec) -> bool:
    return bool(re.search(r"consistent=true", spec.text))


def averaged(release: Callable[[int], np.ndarray], repeats: int) -> tuple[np.ndarray, bool]:
    """Mean of ``release(r)`` for r < repeats (float64) and whether all of them were identical."""
    first = np.asarray(release(0))
    total = first.astype(np.float64)
    identical = True
    for r in range(1, repeats):
        current = np.asarray(release(r))
        identical = identical and np.array_equal(current, first)
        total += current
    return total / repeats, identical
