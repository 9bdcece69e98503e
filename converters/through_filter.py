"""Straight-through torch versions of edgeguard's output filters, to train an attacker *through* a release filter.

An attacker who knows which filter the user will apply (``SafeModel(filters=...)``)
trains the classifier with that filter in the loop and lets the decoder read the
filtered values. :func:`build_through_filter` turns a filter spec of the
``edgeguard.filters`` grammar (``"softmax>round:2"``, ``"gaussian:1"``...) into a torch
module whose forward pass releases the values the real (numpy) filter releases:

- differentiable stages as they are: Softmax, Sigmoid, the clip of Round/ClippedLaplace,
  HighConfidence, ReverseSigmoid, the renormalisation after noise;
- Round, Truncate, TopK, Argmax, LabelConfidence, ClassLabels, LabelPreservingNoise's label swap through
  a straight-through estimator: forward = the filtered value exactly, backward = identity;
- noise (GaussianNoise, LaplaceNoise, LabelPreservingNoise, ClippedLaplace) drawn fresh
  at every call from a torch generator (or from a numpy Generator with the filter's own
  draws, :class:`NumpyNoise`, which is how the tests compare against the real filters).

Equality with edgeguard.filters (tested in tests/test_attackers.py): elementwise stages
(Round, Truncate, TopK without renormalisation, Argmax, LabelConfidence, ClassLabels, HighConfidence,
noise without renormalisation) give identical float32 numbers on identical inputs (and
identical noise draws); ClippedLaplace matches in distribution only (edgeguard samples it
with OpenDP, which cannot be seeded: same clip, scale and output grid); stages with a row reduction or a transcendental function (Softmax, Sigmoid,
ReverseSigmoid, renormalised noise/top-k, largest-remainder rounding) agree within
:data:`FLOAT32_TOLERANCE` (torch and numpy sum and exponentiate in different orders).

Argmax with ``output="index"`` releases one index per row; the torch module gives the
one-hot row instead (what a decoder reads): :func:`decoder_rows` does the same to a real
release, so decoders are always fed (N, K) rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeguard.errors import FilterError
from edgeguard.filters import (
    Argmax,
    ClassLabels,
    ClippedLaplace,
    FilterPipeline,
    FilterSpec,
    GaussianNoise,
    HighConfidence,
    LabelConfidence,
    LabelPreservingNoise,
    LaplaceNoise,
    OutputFilter,
    ReverseSigmoid,
    Round,
    Sigmoid,
    Softmax,
    TopK,
    Truncate,
    parse_filter_spec,
)

__all__ = [
    "FLOAT32_TOLERANCE",
    "GRAMMAR_HELP",
    "NoiseSource",
    "TorchNoise",
    "NumpyNoise",
    "ThroughFilter",
    "build_through_filter",
    "released_kind",
    "decoder_rows",
    "apply_release_filter",
    "SUPPORTED_STAGES",
    "THROUGH_TWINS",
    "through_twin",
]

#: Max abs difference allowed between a torch stage and edgeguard's numpy filter for stages with
#: row sums or exp/log (values in [0, 1] or logits of order 10; a few float32 ulps).
FLOAT32_TOLERANCE = 1e-6

#: Filter class -> its straight-through torch twin, registered with :func:`through_twin`.
#: A filter's subclass gets the twin of its nearest registered base class.
THROUGH_TWINS: dict[type, type] = {}

GRAMMAR_HELP = (
    "the filter grammar of `edgeguard bench --filters`: stages joined by '>', each 'name[:arg,key=value]', "
    "e.g. 'softmax>round:2', 'softmax>top_k:3', 'gaussian:1', 'clipped_laplace:c=5,eps=10' or 'none'"
)

_ART_CLIP = 1e-9  # ReverseSigmoid's clip before the log-odds (edgeguard.filters.art)


class NoiseSource:
    """Where a noise stage's draws come from (fresh at every call)."""

    def gaussian(self, shape: tuple[int, ...], std: float, like: torch.Tensor) -> torch.Tensor:
        """N(0, std^2) noise in ``like``'s dtype (float32), as edgeguard scales standard normals."""
        raise FilterError(f"expected a NoiseSource subclass that implements gaussian(), got {type(self).__name__}")

    def laplace(self, shape: tuple[int, ...], scale: float, like: torch.Tensor) -> torch.Tensor:
        """Laplace(0, scale) noise in float64 (edgeguard draws Laplace noise in float64)."""
        raise FilterError(f"expected a NoiseSource subclass that implements laplace(), got {type(self).__name__}")


class TorchNoise(NoiseSource):
    """Draws from a torch generator on ``like``'s device (training)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def gaussian(self, shape: tuple[int, ...], std: float, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(shape, generator=self.generator, dtype=like.dtype, device=self._device(like))
        return (noise * std).to(like.device)

    def laplace(self, shape: tuple[int, ...], scale: float, like: torch.Tensor) -> torch.Tensor:
        uniform = torch.rand(shape, generator=self.generator, dtype=torch.float64, device=self._device(like))
        uniform = uniform.clamp(1e-300, 1.0 - 1e-16) - 0.5  # inverse CDF of Laplace(0, scale)
        noise = -scale * torch.sign(uniform) * torch.log1p(-2.0 * uniform.abs())
        return noise.to(like.device)

    def _device(self, like: torch.Tensor) -> torch.device:
        return self.generator.device if self.generator is not None else like.device


class NumpyNoise(NoiseSource):
    """The very draws edgeguard's filters take from a numpy Generator (for equality tests)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def gaussian(self, shape: tuple[int, ...], std: float, like: torch.Tensor) -> torch.Tensor:
        noise = self.rng.standard_normal(shape, dtype=np.float32)
        noise *= std
        return torch.from_numpy(noise).to(like.device)

    def laplace(self, shape: tuple[int, ...], scale: float, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.rng.laplace(0.0, scale, size=shape)).to(like.device)


def _straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass (exactly: ``x - x`` is 0), the identity's gradient in the backward pass."""
    return value.detach() + (x - x.detach())


def _renormalize_rows(values: torch.Tensor) -> torch.Tensor:
    """edgeguard's renormalize_rows: clip at 0, divide by the row sum; an empty row becomes uniform."""
    values = values.clamp(min=0.0)
    totals = values.sum(dim=1, keepdim=True)
    empty = totals <= 0
    values = torch.where(empty, torch.ones_like(values), values)
    totals = torch.where(empty, torch.full_like(totals, values.shape[1]), totals)
    return values / totals


def _is_probability_row(x: torch.Tensor) -> torch.Tensor:
    return ((x.sum(dim=1) - 1.0).abs() <= 1e-3) & (x.min(dim=1).values >= 0.0) & (x.max(dim=1).values <= 1.0)


def _one_hot_argmax(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x).scatter_(1, x.argmax(dim=1, keepdim=True), 1.0)


def through_twin(*classes: type):
    """Register the decorated ``_Stage`` subclass as the straight-through twin of ``classes``."""

    def register(module: type) -> type:
        for cls in classes:
            THROUGH_TWINS[cls] = module
        return module

    return register


class _Stage(nn.Module):
    """One filter stage in torch: ``forward(x, noise)``."""

    def __init__(self, stage: OutputFilter) -> None:
        super().__init__()
        self.stage = stage

    def extra_repr(self) -> str:
        return repr(self.stage)

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:  # pragma: no cover - abstract
        raise FilterError(f"expected a straight-through stage that implements forward(), got {type(self).__name__}")


@through_twin(Softmax)
class _Softmax(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        shifted = torch.exp(x - x.max(dim=1, keepdim=True).values)
        return shifted / shifted.sum(dim=1, keepdim=True)


@through_twin(Sigmoid)
class _Sigmoid(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        return torch.sigmoid(x)


@through_twin(Round, Truncate)
class _Round(_Stage):
    """Round / Truncate / Rounded: clip (differentiable), then snap to the grid (straight through)."""

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: Round = self.stage  # type: ignore[assignment]
        if stage.preserve_sum:
            return _straight_through(x, self._largest_remainder(x))
        scale = 10.0**stage.decimals
        if stage.clip is not None:
            x = x.clamp(-stage.clip, stage.clip)
        scaled = x.detach() * scale
        snapped = torch.trunc(scaled) if isinstance(stage, Truncate) else torch.round(scaled)
        return _straight_through(x, snapped / scale)

    def _largest_remainder(self, x: torch.Tensor) -> torch.Tensor:
        scale = 10**self.stage.decimals
        p = x.detach().double()
        p = p / p.sum(dim=1, keepdim=True) * scale
        steps = torch.floor(p)
        missing = scale - steps.sum(dim=1, keepdim=True)
        order = torch.argsort(steps - p, dim=1, stable=True)
        ranks = torch.empty_like(order).scatter_(
            1, order, torch.arange(p.shape[1], device=p.device).expand_as(order).contiguous()
        )
        steps = steps + (ranks < missing).double()
        return (steps / scale).to(x.dtype)


@through_twin(TopK)
class _TopK(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: TopK = self.stage  # type: ignore[assignment]
        if stage.k > x.shape[1]:
            raise FilterError(f"expected k <= number of classes {x.shape[1]}, got k={stage.k}")
        values = x.detach()
        keep = torch.argsort(-values, dim=1, stable=True)[:, : stage.k]
        kept = values.gather(1, keep)
        if stage.renormalize:
            totals = kept.sum(dim=1, keepdim=True)
            empty = totals <= 0
            kept = torch.where(empty, torch.ones_like(kept), kept)
            kept = kept / torch.where(empty, torch.full_like(totals, stage.k), totals)
        return _straight_through(x, torch.zeros_like(values).scatter_(1, keep, kept))


@through_twin(Argmax)
class _Argmax(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        return _straight_through(x, _one_hot_argmax(x.detach()))


@through_twin(LabelConfidence)
class _LabelConfidence(_Stage):
    """Top-1 label + its probability snapped to the bin centre, the rest shared evenly (straight through).

    Same float64 arithmetic as edgeguard's LabelConfidence, cast back to the input's dtype:
    identical numbers on identical inputs.
    """

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: LabelConfidence = self.stage  # type: ignore[assignment]
        rows, num_classes = x.shape
        values = x.detach()
        label = values.argmax(dim=1, keepdim=True)
        top = values.gather(1, label).double()
        low = 1.0 / num_classes
        width = (1.0 - low) / stage.levels
        index = torch.floor((top - low) / width).clamp(0, stage.levels - 1).long()
        centres = torch.from_numpy(stage.confidence_levels(num_classes)).to(device=x.device)
        confidence = centres[index]
        rest = (1.0 - confidence) / max(num_classes - 1, 1)
        released = rest.expand(rows, num_classes).clone().scatter_(1, label, confidence)
        return _straight_through(x, released.to(x.dtype))


@through_twin(ClassLabels)
class _ClassLabels(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: ClassLabels = self.stage  # type: ignore[assignment]
        values = x.detach()
        if values.shape[1] == 1 or stage._per_label:
            threshold = stage._bound_threshold if stage.threshold is None else stage.threshold
            return _straight_through(x, (values > threshold).to(x.dtype))
        return _straight_through(x, _one_hot_argmax(values))


@through_twin(HighConfidence)
class _HighConfidence(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        return torch.where(x < self.stage.cutoff, torch.zeros_like(x), x)


@through_twin(ReverseSigmoid)
class _ReverseSigmoid(_Stage):
    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: ReverseSigmoid = self.stage  # type: ignore[assignment]
        p = x.double()

        def perturbed(q: torch.Tensor) -> torch.Tensor:
            clipped = q.clamp(_ART_CLIP, 1.0 - _ART_CLIP)
            r = stage.beta * (1.0 / (1.0 + torch.exp(stage.gamma * torch.log((1.0 - clipped) / clipped))) - 0.5)
            return (q - r).clamp(0.0, 1.0)

        if p.shape[1] == 1 or stage._per_label:
            q1, q2 = perturbed(p), perturbed(1.0 - p)
            totals = q1 + q2
            released = torch.where(totals > 0, q1 / totals.clamp(min=1e-300), torch.full_like(q1, 0.5))
        else:
            q = perturbed(p)
            totals = q.sum(dim=1, keepdim=True)
            released = torch.where(totals > 0, q / totals.clamp(min=1e-300), torch.full_like(q, 1.0 / q.shape[1]))
        return released.to(x.dtype)


@through_twin(GaussianNoise, LaplaceNoise)
class _AdditiveNoise(_Stage):
    """GaussianNoise / LaplaceNoise (bound: the projection mode is resolved from the declared kind)."""

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage = self.stage
        if isinstance(stage, GaussianNoise):
            noisy = noise.gaussian(tuple(x.shape), stage.std, x) + x
        elif isinstance(stage, LabelPreservingNoise) and stage.distribution == "gaussian":
            noisy = noise.gaussian(tuple(x.shape), stage.std, x) + x
        else:
            scale = stage.scale if isinstance(stage, LaplaceNoise) else stage.std / math.sqrt(2.0)
            noisy = (noise.laplace(tuple(x.shape), scale, x) + x.double()).to(x.dtype)
        return self._project(noisy, x)

    def _project(self, noisy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mode = self.stage._mode
        if mode == "simplex":
            return _renormalize_rows(noisy)
        if mode == "clip01":
            return noisy.clamp(0.0, 1.0)
        if mode == "sniff":
            if x.shape[1] == 1:
                return noisy.clamp(min=0.0)
            rows = _is_probability_row(x.detach())[:, None]
            return torch.where(rows, _renormalize_rows(noisy), noisy)
        return noisy


@through_twin(LabelPreservingNoise)
class _LabelPreserving(_AdditiveNoise):
    """Noise, projection, then the original argmax restored (a swap and one-ulp ties; straight through)."""

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        noisy = super().forward(x, noise)
        values = noisy.detach().clone()
        rows = torch.arange(len(values), device=values.device)
        label = x.detach().argmax(dim=1)
        moved = values.argmax(dim=1)
        at_label = values[rows, label].clone()
        values[rows, label] = values[rows, moved]
        values[rows, moved] = at_label
        top = values[rows, label][:, None]
        ties = values >= top
        ties[rows, label] = False
        lowered = torch.nextafter(top.expand_as(values), torch.full_like(values, -math.inf))
        values = torch.where(ties, lowered, values)
        return _straight_through(noisy, values)


@through_twin(ClippedLaplace)
class _ClippedLaplace(_Stage):
    """Clip (differentiable), add Laplace noise of the filter's scale, snap to its output grid (straight through).

    edgeguard draws this noise with OpenDP (discrete Laplace on the grid ``2^k``, from the
    OS's randomness, never seeded), so the torch version matches it in distribution only:
    continuous Laplace noise of the same scale, rounded to the same grid.
    """

    def forward(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        stage: ClippedLaplace = self.stage  # type: ignore[assignment]
        num_classes = x.shape[1]
        clipped = x.clamp(-stage.clip, stage.clip)
        noisy = noise.laplace(tuple(x.shape), stage.noise_scale(num_classes), x) + clipped.double()
        granularity = stage.granularity(num_classes) if hasattr(stage, "granularity") else None
        if granularity:
            noisy = _straight_through(noisy, torch.round(noisy.detach() / granularity) * granularity)
        return noisy.to(x.dtype)


#: The filter classes this module has a torch version of (every filter in edgeguard.filters).
SUPPORTED_STAGES: tuple[type, ...] = tuple(THROUGH_TWINS)


def _torch_stage(stage: OutputFilter) -> _Stage:
    for cls in type(stage).__mro__:  # the nearest registered class (Rounded is a Round)
        module = THROUGH_TWINS.get(cls)
        if module is not None:
            return module(stage)
    raise FilterError(
        f"expected a filter with a straight-through torch version ({', '.join(c.__name__ for c in THROUGH_TWINS)}), "
        f"got {type(stage).__name__}; use {GRAMMAR_HELP}"
    )


def _as_spec(spec: str | FilterSpec | None) -> FilterSpec:
    if spec is None:
        return parse_filter_spec("none")
    if isinstance(spec, FilterSpec):
        return spec
    try:
        return parse_filter_spec(spec)
    except FilterError as error:
        raise FilterError(f"{error}. --train-through uses {GRAMMAR_HELP}") from None


def _bound_pipeline(spec: FilterSpec, input_kind: str, task_type: str) -> FilterPipeline:
    try:
        return FilterPipeline(spec.build(), input_kind=input_kind, task_type=task_type)
    except FilterError as error:
        raise FilterError(
            f"expected a filter spec that fits a model releasing {task_type} {input_kind}, got {spec.text!r}: {error}"
        ) from None


class ThroughFilter(nn.Module):
    """The straight-through torch version of a release filter pipeline (``forward(outputs, noise=None)``).

    ``spec``: a filter spec (text or FilterSpec; "none" is the identity); ``input_kind``:
    what the exported classifier releases ("logits" or "probabilities"); ``task_type``:
    "multiclass" or "multilabel". The pipeline is type-checked by the real
    :class:`edgeguard.filters.FilterPipeline` (the same check SafeModel makes).
    """

    def __init__(
        self, spec: str | FilterSpec | None, input_kind: str = "logits", task_type: str = "multiclass"
    ) -> None:
        super().__init__()
        self.spec = _as_spec(spec)
        self.input_kind, self.task_type = input_kind, task_type
        self.pipeline = _bound_pipeline(self.spec, input_kind, task_type)
        self.stages = nn.ModuleList([_torch_stage(stage) for stage in self.pipeline.filters])
        self.is_random = self.pipeline.is_random
        self.output_kind = self.pipeline.domains()[-1].kind

    def forward(self, outputs: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        noise = noise or TorchNoise()
        for stage in self.stages:
            outputs = stage(outputs, noise)
        return outputs

    def capacity_bits(self, num_classes: int) -> float:
        """The release's capacity bound (bits per row), from edgeguard."""
        return self.pipeline.capacity_bits(num_classes)


def build_through_filter(
    spec: str | FilterSpec | None, input_kind: str = "logits", task_type: str = "multiclass"
) -> ThroughFilter:
    """:class:`ThroughFilter` for ``spec``; FilterError naming the grammar for an unknown or ill-typed spec."""
    return ThroughFilter(spec, input_kind, task_type)


def released_kind(spec: str | FilterSpec | None, input_kind: str = "logits", task_type: str = "multiclass") -> str:
    """What the filtered rows are: "logits", "probabilities", "scores" or "labels"."""
    return _bound_pipeline(_as_spec(spec), input_kind, task_type).domains()[-1].kind


def decoder_rows(released: np.ndarray, num_classes: int) -> np.ndarray:
    """A release as (N, K) float32 rows for a decoder: an index per row (Argmax "index") becomes one-hot."""
    released = np.asarray(released)
    if released.ndim == 1:
        rows = np.zeros((len(released), num_classes), dtype=np.float32)
        rows[np.arange(len(released)), released.astype(np.int64)] = 1.0
        return rows
    return released.astype(np.float32, copy=False)


def apply_release_filter(
    outputs: np.ndarray,
    spec: str | FilterSpec | None,
    input_kind: str = "logits",
    task_type: str = "multiclass",
    seed: Any = 0,
) -> np.ndarray:
    """What ``SafeModel(filters=spec)`` releases for raw model ``outputs``: the REAL numpy filters, seeded.

    Returns the release as decoder rows (see :func:`decoder_rows`).
    """
    pipeline = _bound_pipeline(_as_spec(spec), input_kind, task_type)
    released = pipeline(np.ascontiguousarray(outputs, dtype=np.float32), np.random.default_rng(seed))
    return decoder_rows(released, outputs.shape[1])
