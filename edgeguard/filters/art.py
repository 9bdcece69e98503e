"""IBM ART's output postprocessors with ART's semantics, but batch-correct and type-checked.

ART (adversarial-robustness-toolbox, ``art.defences.postprocessor``) ships Rounded,
GaussianNoise, ClassLabels, HighConfidence and ReverseSigmoid. GaussianNoise is
:class:`edgeguard.filters.GaussianNoise` (ART's ``scale`` is our ``std``). Every filter
here gives row ``i`` of a batch exactly what it gives row ``i`` alone (ART's
ClassLabels once set column ``argmax`` to 1 in *every* row of a batch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from edgeguard.errors import FilterError
from edgeguard.filters.base import OutputDomain, OutputFilter
from edgeguard.filters.basic import Round

__all__ = ["Rounded", "ClassLabels", "HighConfidence", "ReverseSigmoid"]

_CLIP = 1e-9  # ART clips probabilities to [1e-9, 1 - 1e-9] before taking log-odds


@dataclass(frozen=True, repr=False)
class Rounded(Round):
    """ART's Rounded: ``np.around(preds, decimals)`` with ART's default of 3 decimals."""

    decimals: int = 3

    name: ClassVar[str] = "rounded"


@dataclass(frozen=True, repr=False)
class HighConfidence(OutputFilter):
    """ART's HighConfidence: values below ``cutoff`` become 0 (the rest are kept as they are)."""

    cutoff: float = 0.25

    name: ClassVar[str] = "high_confidence"
    capacity_rule: ClassVar[str] = "unbounded on its own (keeps the values above the cutoff exactly)"

    def __post_init__(self) -> None:
        if isinstance(self.cutoff, bool) or not isinstance(self.cutoff, int | float) or not self.cutoff > 0:
            raise FilterError(f"expected cutoff to be a positive number (ART requires > 0), got {self.cutoff!r}")
        object.__setattr__(self, "cutoff", float(self.cutoff))

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        return np.where(outputs < self.cutoff, 0.0, outputs).astype(outputs.dtype, copy=False)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        row_sum = (0.0, domain.row_sum[1]) if domain.row_sum is not None and domain.low >= 0 else None
        return replace(domain, row_sum=row_sum, low=min(domain.low, 0.0), high=max(domain.high, 0.0))


@dataclass(frozen=True, repr=False)
class ReverseSigmoid(OutputFilter):
    """ART's ReverseSigmoid perturbation (Lee et al. 2019, arXiv:1806.00054) on probabilities.

    With ``p`` clipped to [1e-9, 1 - 1e-9] for the log-odds, ``sigma`` the logistic function::

        r = beta * (sigma(-gamma * log((1 - p) / p)) - 0.5)
        q = clip(p - r, 0, 1);  released = q / sum(q)          (multiclass, K > 1)

    With one column (binary) or for a multilabel model, each column is treated as a
    binary problem {p, 1 - p}: ``q1 / (q1 + q2)`` with q1, q2 perturbed the same way.
    Computed in float64, returned in the input's dtype.
    """

    beta: float = 1.0
    gamma: float = 0.1

    name: ClassVar[str] = "reverse_sigmoid"
    accepts: ClassVar[str] = "probabilities"
    produces: ClassVar[str] = "probabilities"
    capacity_rule: ClassVar[str] = "unbounded on its own (a deterministic perturbation)"
    _per_label: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for key in ("beta", "gamma"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise FilterError(f"expected {key} to be a positive finite number, got {value!r}")
            object.__setattr__(self, key, float(value))

    def bind(self, domain: OutputDomain) -> OutputFilter:
        bound = copy.copy(self)
        object.__setattr__(bound, "_per_label", domain.task_type == "multilabel")
        return bound

    def _perturbed(self, p: np.ndarray) -> np.ndarray:
        clipped = np.clip(p, _CLIP, 1.0 - _CLIP)
        r = self.beta * (1.0 / (1.0 + np.exp(self.gamma * np.log((1.0 - clipped) / clipped))) - 0.5)
        return np.clip(p - r, 0.0, 1.0)

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        p = outputs.astype(np.float64)
        if outputs.shape[1] == 1 or self._per_label:
            q1, q2 = self._perturbed(p), self._perturbed(1.0 - p)
            totals = q1 + q2
            released = np.divide(q1, totals, out=np.full_like(q1, 0.5), where=totals > 0)
        else:
            q = self._perturbed(p)
            totals = q.sum(axis=1, keepdims=True)
            released = np.divide(q, totals, out=np.full_like(q, 1.0 / q.shape[1]), where=totals > 0)
        return released.astype(outputs.dtype, copy=False)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        if domain.task_type == "multilabel" or num_classes in (None, 1):
            return replace(domain.continuous("probabilities"), low=0.0, high=1.0)
        return domain.simplex()


@dataclass(frozen=True, repr=False)
class ClassLabels(OutputFilter):
    """ART's ClassLabels: one-hot top-1 rows (multiclass), or 0/1 per column (one column, or multilabel).

    For one column / multilabel a value becomes 1 when it exceeds ``threshold``; the
    default (None) is 0.5 on probabilities and 0 on logits when bound to a model, and
    ART's 0.5 when called unbound. Returns the input's dtype.
    """

    threshold: float | None = None

    name: ClassVar[str] = "class_labels"
    produces: ClassVar[str] = "labels"
    capacity_rule: ClassVar[str] = "log2 K bits (multiclass one-hot); 1 bit per label (one column or multilabel)"
    _per_label: ClassVar[bool] = False
    _bound_threshold: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        if self.threshold is not None and (
            isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float)
        ):
            raise FilterError(f"expected threshold to be a number or None, got {self.threshold!r}")

    def bind(self, domain: OutputDomain) -> OutputFilter:
        bound = copy.copy(self)
        object.__setattr__(bound, "_per_label", domain.task_type == "multilabel")
        object.__setattr__(bound, "_bound_threshold", 0.0 if domain.kind == "logits" else 0.5)
        return bound

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        if outputs.shape[1] == 1 or self._per_label:
            threshold = self._bound_threshold if self.threshold is None else self.threshold
            return (outputs > threshold).astype(outputs.dtype)
        labels = np.zeros_like(outputs)
        labels[np.arange(len(outputs)), outputs.argmax(axis=1)] = 1.0
        return labels

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        one_hot = domain.task_type == "multiclass" and num_classes not in (None, 1)
        row_sum = (1.0, 1.0) if one_hot else None
        return replace(domain, kind="labels", row_sum=row_sum, low=0.0, high=1.0, decimals=0)

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        if num_classes == 1 or (domain is not None and domain.task_type == "multilabel"):
            return float(num_classes)
        return math.log2(num_classes)
