"""Randomised filters: additive Gaussian/Laplace noise and a label-preserving variant.

Noise alone leaves continuous values, so these filters do not bound capacity by
themselves (follow them with Round, or use ClippedLaplace for a differential-privacy
bound). Randomness comes from the ``rng`` the caller passes; SafeModel and
FilterPipeline pass a generator freshly seeded from the OS CSPRNG unless a seed is given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from edgeguard.errors import FilterError
from edgeguard.filters.base import OutputDomain, OutputFilter

__all__ = ["GaussianNoise", "LaplaceNoise", "LabelPreservingNoise"]

_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise FilterError(f"expected {name} to be a positive finite number, got {value!r}")


def _check_renormalize(value: Any) -> None:
    if value not in ("auto", True, False) or isinstance(value, int) and not isinstance(value, bool):
        raise FilterError(f"expected renormalize to be 'auto', True or False, got {value!r}")


def renormalize_rows(values: np.ndarray) -> np.ndarray:
    """Project rows onto the simplex in place: clip negatives to 0, divide by the row sum.

    A row with nothing left (all values <= 0) becomes uniform: it carries no information.
    """
    np.maximum(values, 0.0, out=values)
    totals = values.sum(axis=1, keepdims=True)
    empty = totals[:, 0] <= 0
    if empty.any():
        values[empty] = 1.0
        totals[empty] = values.shape[1]
    values /= totals
    return values


def _is_probability_row(outputs: np.ndarray) -> np.ndarray:
    """ART's is_probability, row by row: sum close to 1 (rel 1e-3) and all entries in [0, 1]."""
    return (np.abs(outputs.sum(axis=1) - 1.0) <= 1e-3) & (outputs.min(axis=1) >= 0.0) & (outputs.max(axis=1) <= 1.0)


class _AdditiveNoise(OutputFilter):
    """Shared logic: add zero-mean noise, then project back according to ``renormalize``.

    ``renormalize``: True = clip at 0 and renormalise rows (probabilities only); False =
    release the noisy values as they are; "auto" = decided by the declared kind when the
    filter is bound to a model (multiclass probabilities: renormalise; multilabel
    probabilities: clip to [0, 1]; logits: nothing) and, when the filter is called
    unbound, row by row like IBM ART (rows that look like probabilities are
    renormalised; with one column, negatives are clipped to 0).
    """

    is_random: ClassVar[bool] = True
    produces: ClassVar[str] = "same"
    capacity_rule: ClassVar[str] = "unbounded: continuous noise (round afterwards to bound it)"
    _bound_mode: ClassVar[str | None] = None
    renormalize: Any

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if self.renormalize is True and domain.kind != "probabilities":
            raise FilterError(
                f"expected probabilities for {type(self).__name__}(renormalize=True), got {domain.kind}; "
                "use renormalize=False or 'auto' on logits"
            )

    def _mode_for(self, domain: OutputDomain | None) -> str:
        if self.renormalize is True:
            return "simplex"
        if self.renormalize is False:
            return "none"
        if domain is None:
            return self._bound_mode or "sniff"
        if domain.kind == "probabilities":
            return "simplex" if domain.task_type == "multiclass" else "clip01"
        return "none"

    def _set_mode(self) -> None:
        object.__setattr__(self, "_mode", self._mode_for(None))  # read on every call

    def bind(self, domain: OutputDomain) -> OutputFilter:
        bound = copy.copy(self)
        object.__setattr__(bound, "_bound_mode", self._mode_for(domain))
        bound._set_mode()
        return bound

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        mode = self._mode_for(domain)
        if mode == "simplex":
            return domain.simplex()
        if mode == "clip01":
            return replace(domain.continuous("probabilities"), low=0.0, high=1.0)
        return domain.continuous("logits" if domain.kind == "logits" else "scores")

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _noisy(self, outputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = self._noise(outputs.shape, outputs.dtype, rng)
        noisy += outputs
        if noisy.dtype != outputs.dtype:
            noisy = noisy.astype(outputs.dtype)
        mode = self._mode
        if mode == "none":
            return noisy
        if mode == "simplex":
            renormalize_rows(noisy)
        elif mode == "clip01":
            np.clip(noisy, 0.0, 1.0, out=noisy)
        elif mode == "sniff":
            if outputs.shape[1] == 1:
                np.maximum(noisy, 0.0, out=noisy)
            else:
                rows = _is_probability_row(outputs)
                if rows.any():
                    noisy[rows] = renormalize_rows(noisy[rows])
        return noisy

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        return self._noisy(outputs, rng)


def _gaussian(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, std: float) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=dtype if dtype in _NATIVE_FLOATS else np.float64)
    noise *= std
    return noise


def _laplace(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, scale: float) -> np.ndarray:
    return rng.laplace(0.0, scale, size=shape)


@dataclass(frozen=True, repr=False)
class GaussianNoise(_AdditiveNoise):
    """Add N(0, std^2) noise to every value (IBM ART's GaussianNoise; ART calls ``std`` "scale").

    On probabilities the noisy rows are clipped at 0 and renormalised (see ``renormalize``).
    """

    std: float
    renormalize: bool | str = "auto"

    name: ClassVar[str] = "gaussian_noise"

    def __post_init__(self) -> None:
        _check_positive("std", self.std)
        _check_renormalize(self.renormalize)
        object.__setattr__(self, "std", float(self.std))
        self._set_mode()

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        return _gaussian(shape, dtype, rng, self.std)

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        if self._mode == "none" and outputs.dtype in _NATIVE_FLOATS:  # the hot path, flat
            noisy = rng.standard_normal(outputs.shape, dtype=outputs.dtype)
            noisy *= self.std
            noisy += outputs
            return noisy
        return self._noisy(outputs, rng)


@dataclass(frozen=True, repr=False)
class LaplaceNoise(_AdditiveNoise):
    """Add Laplace(0, scale) noise to every value (std = scale * sqrt(2)); see ClippedLaplace for a DP bound."""

    scale: float
    renormalize: bool | str = "auto"

    name: ClassVar[str] = "laplace_noise"

    def __post_init__(self) -> None:
        _check_positive("scale", self.scale)
        _check_renormalize(self.renormalize)
        object.__setattr__(self, "scale", float(self.scale))
        self._set_mode()

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        return _laplace(shape, dtype, rng, self.scale)


@dataclass(frozen=True, repr=False)
class LabelPreservingNoise(_AdditiveNoise):
    """Noise that never changes the top-1 class: add noise, project back, then restore the original argmax.

    After the noise (and the projection ``renormalize`` asks for), the value at the
    noisy argmax and the value at the original argmax are swapped (a permutation, so a
    renormalised row stays on the simplex), and any other entry that ties with the new
    maximum is lowered by one ulp. Hence ``argmax(out) == argmax(outputs)`` for every
    row (numpy's first-index tie rule), while the other scores are noisy.
    """

    std: float
    distribution: str = "gaussian"
    renormalize: bool | str = "auto"

    name: ClassVar[str] = "label_preserving_noise"
    capacity_rule: ClassVar[str] = "unbounded: continuous noise (the top-1 label is kept exactly)"

    def __post_init__(self) -> None:
        _check_positive("std", self.std)
        _check_renormalize(self.renormalize)
        if self.distribution not in ("gaussian", "laplace"):
            raise FilterError(f"expected distribution 'gaussian' or 'laplace', got {self.distribution!r}")
        object.__setattr__(self, "std", float(self.std))
        self._set_mode()

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        if self.distribution == "gaussian":
            return _gaussian(shape, dtype, rng, self.std)
        return _laplace(shape, dtype, rng, self.std / math.sqrt(2.0))  # same standard deviation

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        noisy = self._noisy(outputs, rng)
        rows = np.arange(len(outputs))
        label = outputs.argmax(axis=1)
        moved = noisy.argmax(axis=1)
        at_label = noisy[rows, label]
        noisy[rows, label] = noisy[rows, moved]
        noisy[rows, moved] = at_label
        top = noisy[rows, label][:, None]
        ties = noisy >= top
        ties[rows, label] = False
        if ties.any():
            noisy[ties] = np.nextafter(np.broadcast_to(top, noisy.shape)[ties], -np.inf)
        return noisy
