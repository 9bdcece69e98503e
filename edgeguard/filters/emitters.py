"""The ONNX emitter of every built-in filter (registered in :mod:`edgeguard.filters.onnx_graph`).

How closely each matches the numpy filter is tabled in :mod:`edgeguard.filters.fusion`.
An emitter raises :class:`NotFusible` with the reason for a configuration it cannot
express; ``guard`` quotes that reason when it refuses a pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeguard.filters.art import ClassLabels, HighConfidence, ReverseSigmoid, Rounded
from edgeguard.filters.basic import Argmax, LabelConfidence, Round, Sigmoid, Softmax, TopK, Truncate
from edgeguard.filters.noise import GaussianNoise, LabelPreservingNoise, LaplaceNoise
from edgeguard.filters.onnx_graph import GraphBuilder, NotFusible, onnx_emitter
from edgeguard.filters.privacy import ClippedLaplace

__all__: list[str] = []


def _zeros_like(b: GraphBuilder, x: str, zero: str) -> str:
    """Zeros of ``x``'s shape in ``zero``'s dtype, without a run-time shape (edgeguard's loader refuses
    ConstantOfShape / Expand fed by Shape): Where(IsNaN(x), 0, 0)."""
    return b.op("Where", b.op("IsNaN", x), zero, zero)


@onnx_emitter(Softmax)
def _softmax(stage: Softmax, b: GraphBuilder, x: str, num_classes: int) -> str:
    return b.op("Softmax", x, axis=1)


@onnx_emitter(Sigmoid)
def _sigmoid(stage: Sigmoid, b: GraphBuilder, x: str, num_classes: int) -> str:
    return b.op("Sigmoid", x)


def _scale_snap(b: GraphBuilder, x: str, stage: Round, snap: Any) -> str:
    scale = b.f32(stage._scale)  # numpy multiplies the float32 array by the weak Python float: float32 math
    if stage.clip is not None:
        x = b.op("Clip", x, b.f32(-stage.clip), b.f32(stage.clip))
    return b.op("Div", snap(b, b.op("Mul", x, scale)), scale)


def _largest_remainder(b: GraphBuilder, x: str, stage: Round, num_classes: int) -> str:
    """Round(preserve_sum=True) in float64, as Round._largest_remainder computes it."""
    scale = b.f64(10**stage.decimals)
    p = b.op("Cast", x, to=b.TensorProto.DOUBLE)
    p = b.op("Div", p, b.reduce("ReduceSum", p, axis=1))
    p = b.op("Mul", p, scale)
    steps = b.op("Floor", p)
    missing = b.op("Sub", scale, b.reduce("ReduceSum", steps, axis=1))
    # numpy: argsort(steps - p, stable) = largest remainder first, ties to the lower index (TopK's rule)
    _, order = b.op(
        "TopK", b.op("Sub", p, steps), b.const([num_classes], np.int64), outputs=2, axis=1, largest=1, sorted=1
    )
    # the entry at sorted position j gets one more step when j < missing: scatter that back (add)
    extra = b.op("Cast", b.op("Less", b.const(np.arange(num_classes), np.float64), missing), to=b.TensorProto.DOUBLE)
    if b.opset >= 16:
        steps = b.op("ScatterElements", steps, order, extra, axis=1, reduction="add")
    else:
        steps = b.op("Add", steps, b.op("ScatterElements", _zeros_like(b, x, b.f64(0.0)), order, extra, axis=1))
    steps = b.op("Div", steps, scale)
    return b.op("Cast", steps, to=b.TensorProto.FLOAT)


@onnx_emitter(Round, Rounded)
def _round(stage: Round, b: GraphBuilder, x: str, num_classes: int) -> str:
    if stage.preserve_sum:
        return _largest_remainder(b, x, stage, num_classes)
    return _scale_snap(b, x, stage, lambda b, s: b.op("Round", s))


@onnx_emitter(Truncate)
def _truncate(stage: Truncate, b: GraphBuilder, x: str, num_classes: int) -> str:
    if stage.preserve_sum:
        raise NotFusible("truncate with preserve_sum has no ONNX form here")
    # trunc(s) = sign(s) * floor(|s|) (onnxruntime's Where would turn a selected -0.0 into +0.0)
    return _scale_snap(b, x, stage, lambda b, s: b.op("Mul", b.op("Sign", s), b.op("Floor", b.op("Abs", s))))


@onnx_emitter(TopK)
def _top_k(stage: TopK, b: GraphBuilder, x: str, num_classes: int) -> str:
    if stage.k > num_classes:
        raise NotFusible(f"k={stage.k} is more than the model's {num_classes} classes")  # numpy raises at run time
    values, index = b.op("TopK", x, b.const([stage.k], np.int64), outputs=2, axis=1, largest=1, sorted=1)
    if stage.renormalize:
        totals = b.reduce("ReduceSum", values, axis=1)
        empty = b.op("LessOrEqual", totals, b.f32(0.0))
        values = b.op("Where", empty, b.f32(1.0), values)
        totals = b.op("Where", empty, b.f32(stage.k), totals)
        values = b.op("Div", values, totals)
    return b.op("ScatterElements", _zeros_like(b, x, b.f32(0.0)), index, values, axis=1)


def _one_hot(b: GraphBuilder, x: str, num_classes: int) -> str:
    index = b.op("ArgMax", x, axis=1, keepdims=0, select_last_index=0)
    return b.op("OneHot", index, b.const(num_classes, np.int64), b.const([0.0, 1.0], np.float32), axis=-1)


@onnx_emitter(Argmax)
def _argmax(stage: Argmax, b: GraphBuilder, x: str, num_classes: int) -> str:
    if stage.output == "index":
        return b.op("ArgMax", x, axis=1, keepdims=0, select_last_index=0)
    return _one_hot(b, x, num_classes)


@onnx_emitter(ClassLabels)
def _class_labels(stage: ClassLabels, b: GraphBuilder, x: str, num_classes: int) -> str:
    if num_classes == 1 or stage._per_label:
        threshold = stage._bound_threshold if stage.threshold is None else stage.threshold
        return b.op("Cast", b.op("Greater", x, b.f32(threshold)), to=b.TensorProto.FLOAT)
    return _one_hot(b, x, num_classes)


@onnx_emitter(LabelConfidence)
def _label_confidence(stage: LabelConfidence, b: GraphBuilder, x: str, num_classes: int) -> str:
    """LabelConfidence in float64, as numpy computes it, cast back to float32 (bit for bit)."""
    label = b.op("ArgMax", x, axis=1, keepdims=1, select_last_index=0)  # (N, 1)
    top = b.op("Cast", b.op("GatherElements", x, label, axis=1), to=b.TensorProto.DOUBLE)
    low = 1.0 / num_classes
    width = (1.0 - low) / stage.levels
    index = b.op("Floor", b.op("Div", b.op("Sub", top, b.f64(low)), b.f64(width)))
    # a NaN top (NaN or inf in the input or the raw row) would Cast to an index far out of range and make
    # Gather raise: its bin becomes 0, and the confidence gets + 0 * top, which is +-0 (the value bit for bit)
    # for a finite top and NaN otherwise, so the release stays non-finite and the gate releases the sentinel
    index = b.op("Where", b.op("Equal", index, index), index, b.f64(0.0))
    index = b.op("Cast", b.op("Clip", index, b.f64(0.0), b.f64(stage.levels - 1)), to=b.TensorProto.INT64)
    confidence = b.op("Gather", b.const(stage.confidence_levels(num_classes), np.float64), index, axis=0)  # (N, 1)
    confidence = b.op("Add", confidence, b.op("Mul", top, b.f64(0.0)))
    rest = b.op("Div", b.op("Sub", b.f64(1.0), confidence), b.f64(max(num_classes - 1, 1)))
    released = b.op("Add", _zeros_like(b, x, b.f64(0.0)), rest)  # (N, K): rest everywhere
    released = b.op("ScatterElements", released, label, confidence, axis=1)
    return b.op("Cast", released, to=b.TensorProto.FLOAT)


@onnx_emitter(HighConfidence)
def _high_confidence(stage: HighConfidence, b: GraphBuilder, x: str, num_classes: int) -> str:
    return b.op("Where", b.op("Less", x, b.f32(stage.cutoff)), b.f32(0.0), x)


def _perturbed(b: GraphBuilder, p: str, stage: ReverseSigmoid) -> str:
    clipped = b.op("Clip", p, b.f64(1e-9), b.f64(1.0 - 1e-9))
    odds = b.op("Div", b.op("Sub", b.f64(1.0), clipped), clipped)
    # numpy: 1 / (1 + exp(gamma * log(odds))); odds ** gamma is the same up to float64 rounding
    s = b.op("Div", b.f64(1.0), b.op("Add", b.f64(1.0), b.op("Pow", odds, b.f64(stage.gamma))))
    r = b.op("Mul", b.f64(stage.beta), b.op("Sub", s, b.f64(0.5)))
    return b.op("Clip", b.op("Sub", p, r), b.f64(0.0), b.f64(1.0))


@onnx_emitter(ReverseSigmoid)
def _reverse_sigmoid(stage: ReverseSigmoid, b: GraphBuilder, x: str, num_classes: int) -> str:
    p = b.op("Cast", x, to=b.TensorProto.DOUBLE)
    if num_classes == 1 or stage._per_label:
        q1 = _perturbed(b, p, stage)
        q2 = _perturbed(b, b.op("Sub", b.f64(1.0), p), stage)
        totals = b.op("Add", q1, q2)
        fallback = b.f64(0.5)
    else:
        q1 = _perturbed(b, p, stage)
        totals = b.reduce("ReduceSum", q1, axis=1)
        fallback = b.f64(1.0 / num_classes)
    released = b.op("Where", b.op("Greater", totals, b.f64(0.0)), b.op("Div", q1, totals), fallback)
    return b.op("Cast", released, to=b.TensorProto.FLOAT)


def _renormalize_rows(b: GraphBuilder, x: str, num_classes: int) -> str:
    """edgeguard.filters.noise.renormalize_rows: clip at 0, divide by the row sum, empty rows uniform."""
    values = b.op("Max", x, b.f32(0.0))
    totals = b.reduce("ReduceSum", values, axis=1)
    empty = b.op("LessOrEqual", totals, b.f32(0.0))
    values = b.op("Where", empty, b.f32(1.0), values)
    totals = b.op("Where", empty, b.f32(num_classes), totals)
    return b.op("Div", values, totals)


_PROJECTIONS = ("none", "simplex", "clip01")


def _project(b: GraphBuilder, x: str, mode: str, num_classes: int) -> str:
    if mode == "none":
        return x
    if mode == "simplex":
        return _renormalize_rows(b, x, num_classes)
    if mode == "clip01":
        return b.op("Clip", x, b.f32(0.0), b.f32(1.0))
    raise NotFusible(f"projection mode {mode!r} (decided row by row) has no ONNX form; bind the pipeline first")


def _check_noise(stage: Any) -> None:
    if stage._mode not in _PROJECTIONS:
        raise NotFusible(
            f"projection mode {stage._mode!r} is decided row by row; bind the pipeline to the model's output kind"
        )
    if getattr(stage, "key", None) is not None:
        raise NotFusible(
            "consistent (keyed) noise hashes each input with a device secret, which a graph cannot hold "
            "without shipping the key; use fresh noise (no consistent=true)"
        )


@onnx_emitter(GaussianNoise)
def _gaussian(stage: GaussianNoise, b: GraphBuilder, x: str, num_classes: int) -> str:
    _check_noise(stage)
    noise = b.noise("normal", stage.std, num_classes, like=x)
    return _project(b, b.op("Add", noise, x), stage._mode, num_classes)


@onnx_emitter(LaplaceNoise)
def _laplace(stage: LaplaceNoise, b: GraphBuilder, x: str, num_classes: int) -> str:
    _check_noise(stage)
    noise = b.noise("laplace", stage.scale, num_classes, like=x)
    noisy = b.op("Add", noise, b.op("Cast", x, to=b.TensorProto.DOUBLE))
    return _project(b, b.op("Cast", noisy, to=b.TensorProto.FLOAT), stage._mode, num_classes)


@onnx_emitter(LabelPreservingNoise)
def _label_preserving(stage: LabelPreservingNoise, b: GraphBuilder, x: str, num_classes: int) -> str:
    raise NotFusible(
        "its label swap breaks ties by one float ulp (numpy.nextafter), which ONNX has no operator for; "
        "guard gaussian or laplace noise instead, or run it in SafeModel"
    )


@onnx_emitter(ClippedLaplace)
def _clipped_laplace(stage: ClippedLaplace, b: GraphBuilder, x: str, num_classes: int) -> str:
    raise NotFusible(
        "its privacy guarantee needs OpenDP's exact discrete sampler and a per-user budget that counts "
        "releases; a graph has neither (continuous float noise is not the same mechanism)"
    )
