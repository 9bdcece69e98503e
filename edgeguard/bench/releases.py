"""What a filter configuration releases: to the victim on the evaluation images, and to the attacker on its own.

:func:`release_of` runs ``SafeModel.predict`` on the evaluation images (or, for consistent
noise when predict does not pass the inputs on, SafeModel's own pipeline with the inputs)
and gives the attacker a function that filters its own raw outputs through a freshly built
pipeline of the same spec (another device: for consistent noise, another secret each time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.bench.context import BenchContext
from edgeguard.errors import FilterError
from edgeguard.filters import OutputDomain
from edgeguard.filters.spec import FilterSpec

__all__ = ["SpecRelease", "release_of"]


@dataclass
class SpecRelease:
    """One filter configuration's release of the evaluation images and the attacker's own filter."""

    spec: FilterSpec
    seed: int
    safe: Any  # the SafeModel (None for the raw output)
    domain: OutputDomain
    release: np.ndarray  # the victim's release of the evaluation images
    filtered: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (raw, model images, seed) -> attacker's release
    random: bool

    @property
    def kind(self) -> str:
        """What is released: logits | probabilities | scores | labels (index) | labels (one-hot)."""
        if self.domain.terminal:
            return "labels (index)"
        return "labels (one-hot)" if self.domain.kind == "labels" else self.domain.kind


def release_of(context: BenchContext, spec: FilterSpec, seed: int) -> SpecRelease:
    """The release of ``spec`` on the evaluation images (seeded) and the attacker's filter."""
    safe = context.safe_models[spec.text]
    if safe is None:

        def raw(raw: np.ndarray, images: np.ndarray, epoch_seed: int) -> np.ndarray:
            return raw

        return SpecRelease(spec, seed, None, context.raw_domain, context.evaluation.raw, raw, False)

    def filtered(raw: np.ndarray, images: np.ndarray, epoch_seed: int) -> np.ndarray:
        return context.pipeline(spec)(raw, np.random.default_rng(epoch_seed), inputs=images)

    release = _release(safe, context.evaluation.model_x, context.evaluation.raw, seed, context.notes)
    domain = safe.pipeline.domains(context.num_classes)[-1]
    return SpecRelease(spec, seed, safe, domain, release, filtered, bool(safe.pipeline.is_random))


def _release(safe: Any, x: np.ndarray, raw: np.ndarray, seed: int, notes: list[str]) -> np.ndarray:
    """The release of the evaluation images: ``safe.predict``, or its pipeline with the inputs for consistent noise."""
    if not safe.pipeline.needs_inputs:
        return safe.predict(x, seed=seed)
    try:
        return safe.predict(x, seed=seed)
    except FilterError:
        note = (
            "Consistent-noise rows: SafeModel.predict does not pass the inputs to its pipeline in this build, so their "
            "releases (and latency) are the model's raw outputs put through SafeModel's own pipeline with inputs=batch."
        )
        if note not in notes:
            notes.append(note)
        return safe.pipeline(raw, np.random.default_rng(seed), inputs=x)
