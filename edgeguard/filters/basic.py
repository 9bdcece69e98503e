"""Deterministic filters: Softmax, Sigmoid, Round, Truncate, TopK, Argmax, LabelConfidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from edgeguard.errors import FilterError
from edgeguard.filters._capacity import grid_bits, grid_values_per_entry, log2_int
from edgeguard.filters.base import OutputDomain, OutputFilter

__all__ = ["Softmax", "Sigmoid", "Round", "Truncate", "TopK", "Argmax", "LabelConfidence"]

_MAX_DECIMALS = 12


@dataclass(frozen=True, repr=False)
class Softmax(OutputFilter):
    """Row-wise softmax of multiclass logits (max-subtracted, in the input's dtype)."""

    name: ClassVar[str] = "softmax"
    accepts: ClassVar[str] = "logits"
    produces: ClassVar[str] = "probabilities"
    capacity_rule: ClassVar[str] = "unbounded on its own: softmax is one-to-one up to a shift of the logits"

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if domain.task_type == "multilabel":
            raise FilterError(
                "expected a multiclass model for Softmax, got a multilabel one; use Sigmoid() for independent labels"
            )

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)
        return shifted

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        return domain.simplex()


@dataclass(frozen=True, repr=False)
class Sigmoid(OutputFilter):
    """Element-wise logistic function (multilabel logits -> per-label probabilities)."""

    name: ClassVar[str] = "sigmoid"
    accepts: ClassVar[str] = "logits"
    produces: ClassVar[str] = "probabilities"
    capacity_rule: ClassVar[str] = "unbounded on its own: the sigmoid is one-to-one"

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        return expit(outputs)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        return replace(domain.continuous("probabilities"), low=0.0, high=1.0)


def _check_decimals(decimals: Any, clip: Any) -> None:
    if isinstance(decimals, bool) or not isinstance(decimals, int | np.integer) or not 0 <= decimals <= _MAX_DECIMALS:
        raise FilterError(f"expected decimals to be an integer in [0, {_MAX_DECIMALS}], got {decimals!r}")
    if clip is not None and not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise FilterError(f"expected clip to be a positive finite number or None, got {clip!r}")


@dataclass(frozen=True, repr=False)
class Round(OutputFilter):
    """Round every value to ``decimals`` decimals (half to even, like numpy), optionally after clipping.

    On logits rounding alone is unbounded (logits are unbounded); with ``clip=c`` each
    logit is first clipped to [-c, c], leaving (2c * 10^d + 1)^K values. On
    probabilities, rounding each entry gives rows that sum to 1 only within K/2 steps
    of 10^-d, so the released rows number somewhat *more* than the paper's stars-and-bars
    count C(10^d + K - 1, K - 1) (e.g. 166 distinct rows for K = 3, d = 1 against 66);
    the bound used here counts every non-negative grid vector whose sum is reachable.
    ``preserve_sum=True`` (multiclass probabilities only) rounds by largest remainder
    instead (floor every entry, then give the missing steps to the largest remainders),
    so rows sum to exactly 1 and the count is exactly C(10^d + K - 1, K - 1).
    """

    decimals: int
    clip: float | None = None
    preserve_sum: bool = False

    name: ClassVar[str] = "round"
    capacity_rule: ClassVar[str] = (
        "probabilities: log2 C(10^d + K - 1, K - 1) with preserve_sum (stars and bars), a little more "
        "without (row sums off by up to K/2 steps); "
        "logits clipped to [-c, c]: K log2(2c 10^d + 1); unclipped logits: unbounded"
    )
    _mode: ClassVar[str] = "round"

    def __post_init__(self) -> None:
        _check_decimals(self.decimals, self.clip)
        if not isinstance(self.preserve_sum, bool) or (self.preserve_sum and self.clip is not None):
            raise FilterError(f"expected preserve_sum True/False (and no clip with it), got {self.preserve_sum!r}")
        # Plain Python numbers keep the input's dtype under numpy's promotion rules.
        object.__setattr__(self, "decimals", int(self.decimals))
        object.__setattr__(self, "_scale", 10.0**self.decimals)
        if self.clip is not None:
            object.__setattr__(self, "clip", float(self.clip))

    _snap: ClassVar[Any] = staticmethod(np.rint)

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if self.preserve_sum and (domain.kind != "probabilities" or domain.task_type != "multiclass"):
            raise FilterError(
                f"expected multiclass probabilities for {type(self).__name__}(preserve_sum=True), got "
                f"{domain.task_type} {domain.kind}; put Softmax() before it or use preserve_sum=False"
            )

    def _largest_remainder(self, outputs: np.ndarray) -> np.ndarray:
        scale = 10**self.decimals
        p = outputs.astype(np.float64)
        p /= p.sum(axis=1, keepdims=True)
        p *= scale
        steps = np.floor(p)
        missing = scale - steps.sum(axis=1, keepdims=True)  # an integer in [0, K]
        order = np.argsort(steps - p, axis=1, kind="stable")  # largest remainder first, ties: lower index
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(p.shape[1]), p.shape), axis=1)
        steps += ranks < missing
        steps /= scale
        return steps.astype(outputs.dtype, copy=False)

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        if self.preserve_sum:
            return self._largest_remainder(outputs)
        scale = self._scale
        if self.clip is not None:
            scaled = np.clip(outputs, -self.clip, self.clip)
            scaled *= scale
        else:
            scaled = outputs * scale
        self._snap(scaled, out=scaled)
        scaled /= scale
        return scaled

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        low, high = domain.low, domain.high
        if self.clip is not None:
            low, high = max(low, -self.clip), min(high, self.clip)
        row_sum = None
        if self.preserve_sum:
            row_sum = (1.0 - 1e-6, 1.0 + 1e-6)  # exact in steps; float rounding only
        elif domain.row_sum is not None and num_classes is not None:
            slack = num_classes * (0.5 if self._mode == "round" else 1.0) / 10.0**self.decimals
            row_sum = (max(domain.row_sum[0] - slack, 0.0), domain.row_sum[1] + slack)
        if self.clip is not None and (low > domain.low or high < domain.high):
            row_sum = None  # clipping a probability row would change its sum; be conservative
        return replace(domain, row_sum=row_sum, low=low, high=high, decimals=self.decimals)

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        domain = domain or OutputDomain()
        if self.preserve_sum:  # exactly the stars-and-bars count: K non-negative steps summing to 10^d
            return math.log2(math.comb(10**self.decimals + num_classes - 1, num_classes - 1))
        if self.clip is not None:
            domain = replace(domain, low=max(domain.low, -self.clip), high=min(domain.high, self.clip))
        return grid_bits(domain, 10**self.decimals, num_classes, self._mode)


@dataclass(frozen=True, repr=False)
class Truncate(Round):
    """Cut every value to ``decimals`` decimals toward zero (``floor`` for probabilities)."""

    name: ClassVar[str] = "truncate"
    capacity_rule: ClassVar[str] = (
        "probabilities: about log2 C(10^d + K - 1, K - 1) (row sums lose < K steps); "
        "logits clipped to [-c, c]: K log2(2c 10^d + 1); unclipped logits: unbounded"
    )
    _mode: ClassVar[str] = "trunc"
    _snap: ClassVar[Any] = staticmethod(np.trunc)


@dataclass(frozen=True, repr=False)
class TopK(OutputFilter):
    """Keep the ``k`` largest values of each row (ties: lower index first) and zero the rest.

    With ``renormalize=True`` (probabilities only) the kept values are rescaled to sum
    to 1 (a row whose kept values are all zero gets 1/k on the kept entries).
    """

    k: int
    renormalize: bool = False

    name: ClassVar[str] = "top_k"
    capacity_rule: ClassVar[str] = (
        "after rounding to d decimals: log2 C(K, k) + log2 C(10^d + k, k) for probabilities "
        "(k log2(values per entry) for bounded logits); otherwise unbounded"
    )

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise FilterError(f"expected k to be a positive integer, got {self.k!r}")
        object.__setattr__(self, "k", int(self.k))
        if not isinstance(self.renormalize, bool):
            raise FilterError(f"expected renormalize to be True or False, got {self.renormalize!r}")

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if self.renormalize and domain.kind != "probabilities":
            raise FilterError(
                f"expected probabilities for TopK(renormalize=True), got {domain.kind}; "
                "put Softmax() before it or use renormalize=False"
            )

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        num_classes = outputs.shape[1]
        if self.k > num_classes:
            raise FilterError(f"expected k <= number of classes {num_classes}, got k={self.k}")
        keep = np.argsort(-outputs, axis=1, kind="stable")[:, : self.k]
        kept = np.take_along_axis(outputs, keep, axis=1)
        if self.renormalize:
            totals = kept.sum(axis=1, keepdims=True)
            empty = totals[:, 0] <= 0
            if empty.any():
                kept[empty] = 1.0
                totals[empty] = self.k
            kept /= totals
        result = np.zeros_like(outputs)
        np.put_along_axis(result, keep, kept, axis=1)
        return result

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        if self.renormalize:
            return domain.simplex()
        low, high = min(domain.low, 0.0), max(domain.high, 0.0)
        row_sum = (0.0, domain.row_sum[1]) if domain.row_sum is not None and domain.low >= 0 else None
        return replace(domain, row_sum=row_sum, low=low, high=high)

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        domain = domain or OutputDomain()
        if domain.decimals is None:
            return math.inf
        k = min(self.k, num_classes)
        scale = 10**domain.decimals
        positions = math.log2(math.comb(num_classes, k))
        candidates = [math.inf]
        if domain.row_sum is not None and domain.low >= 0:
            # k non-negative grid values whose sum is at most the row's (grid-valued) sum.
            top = math.floor(domain.row_sum[1] * scale + 1e-6)
            candidates.append(positions + log2_int(math.comb(top + k, k)))
        per_entry = grid_values_per_entry(domain.low, domain.high, scale, "trunc")
        if per_entry is not None:
            candidates.append(positions + k * math.log2(max(per_entry, 1)))
        return min(candidates)


@dataclass(frozen=True, repr=False)
class Argmax(OutputFilter):
    """Release only the top-1 class: an int64 index per row (``output="index"``, must be last) or a one-hot row.

    Ties go to the lowest index (numpy's argmax).
    """

    output: str = "index"

    name: ClassVar[str] = "argmax"
    produces: ClassVar[str] = "labels"
    capacity_rule: ClassVar[str] = "log2 K bits (one of K labels)"

    def __post_init__(self) -> None:
        if self.output not in ("index", "one_hot"):
            raise FilterError(f"expected output 'index' or 'one_hot', got {self.output!r}")

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if domain.task_type == "multilabel":
            raise FilterError(
                "expected a multiclass model for Argmax, got a multilabel one; use ClassLabels() to release "
                "one 0/1 decision per label"
            )

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        index = outputs.argmax(axis=1)
        if self.output == "index":
            return index
        one_hot = np.zeros_like(outputs)
        one_hot[np.arange(len(outputs)), index] = 1.0
        return one_hot

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        terminal = self.output == "index"
        return replace(domain, kind="labels", row_sum=(1.0, 1.0), low=0.0, high=1.0, decimals=0, terminal=terminal)

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        return math.log2(num_classes)


@dataclass(frozen=True, repr=False)
class LabelConfidence(OutputFilter):
    """Release the top-1 class and its probability quantised to ``levels`` levels, as a probability row.

    The top-1 probability p (in [1/K, 1] for K classes) falls in one of ``levels`` equal
    bins of [1/K, 1]; the released row gives the top-1 class the centre q of that bin
    and every other class (1 - q) / (K - 1). So a row is one of K x levels values:
    capacity log2 K + log2 levels bits, whatever the model did. Ties: lowest index.
    """

    levels: int

    name: ClassVar[str] = "label_confidence"
    accepts: ClassVar[str] = "probabilities"
    produces: ClassVar[str] = "probabilities"
    capacity_rule: ClassVar[str] = "log2 K + log2 levels bits (one of K labels times one of `levels` confidences)"

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int | np.integer) or self.levels < 1:
            raise FilterError(f"expected levels to be a positive integer, got {self.levels!r}")
        object.__setattr__(self, "levels", int(self.levels))

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if domain.task_type != "multiclass":
            raise FilterError(
                f"expected multiclass probabilities for LabelConfidence, got {domain.task_type} ones; use ClassLabels()"
            )

    def confidence_levels(self, num_classes: int) -> np.ndarray:
        """The ``levels`` confidence values a release can show (bin centres of [1/K, 1])."""
        low = 1.0 / num_classes
        return low + (np.arange(self.levels) + 0.5) * (1.0 - low) / self.levels

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        rows, num_classes = outputs.shape
        label = outputs.argmax(axis=1)
        top = outputs[np.arange(rows), label].astype(np.float64)
        low = 1.0 / num_classes
        width = (1.0 - low) / self.levels
        index = np.floor((top - low) / width)
        index[np.isnan(index)] = 0  # a non-finite top: any bin, made NaN below (never an index out of range)
        index = np.clip(index, 0, self.levels - 1).astype(np.int64)
        confidence = self.confidence_levels(num_classes)[index] + top * 0.0  # + 0 * top: NaN unless top is finite
        rest = (1.0 - confidence) / max(num_classes - 1, 1)
        released = np.repeat(rest[:, None], num_classes, axis=1)
        released[np.arange(rows), label] = confidence
        return released.astype(outputs.dtype, copy=False)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        return domain.simplex()

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        return math.log2(num_classes) + math.log2(self.levels)
