"""Run a pipeline's leading filters inside the onnxruntime graph.

:func:`fuse_pipeline` appends ONNX nodes that compute the leading stages of a bound
:class:`FilterPipeline` after the model's output, so one ``InferenceSession.run``
returns the release and the raw outputs never reach Python memory. Stages are matched
by their exact class (a subclass or an unknown filter is *not fusible*; so are
consistent noise, ``key=``, and stages that draw with OpenDP); the first
stage that is not fusible, and every stage after it, run in numpy as before.

What maps, and how closely the fused release matches the numpy one (float32 models):

==========================  ==============================================  ==================
stage                       ONNX nodes                                      agreement
==========================  ==============================================  ==================
Softmax                     Softmax(axis=1)                                 rtol 2e-6 (exp)
Sigmoid                     Sigmoid                                         rtol 2e-6 (exp)
Round / Rounded (clip)      [Clip] Mul Round Div (float32, half to even)    bit for bit
Round(preserve_sum)         float64 largest remainder (TopK, Scatter add)   bit for bit [1]
Truncate                    Mul, Sign * Floor(Abs), Div                     bit for bit [2]
TopK(k, renormalize)        TopK, ScatterElements [ReduceSum, Div]          bit for bit [1]
Argmax (index / one-hot)    ArgMax [OneHot]                                 bit for bit
ClassLabels                 ArgMax OneHot, or Greater Cast (per label)      bit for bit
HighConfidence              Less Where                                      bit for bit
ReverseSigmoid              float64 Clip Div Pow ... ReduceSum Div Cast     rtol 2e-6 (pow)
GaussianNoise               noise input (float32) Add [projection]          bit for bit [1]
LaplaceNoise                noise input (float64) Add Cast [projection]     bit for bit [1]
==========================  ==============================================  ==================

[1] A row sum (renormalisation, largest remainder) is added up in another order by
onnxruntime than by numpy, so values can differ in the last bit (float32 rtol 2e-6);
largest-remainder steps can then differ only when a scaled probability lies within
one float64 ulp of a grid point. Without a row sum the match is exact.
[2] Except that a raw value of exactly -0.0 is released as +0.0 (equal as numbers).

Random stages take their noise as an extra graph input (one per stage, float32
normal / float64 Laplace, drawn and scaled in Python exactly as the numpy filter draws
and scales it), so for a given ``seed`` the fused release equals the numpy release;
without a seed the noise is sliced from blocks drawn 256 values per fresh OS seed.
SafeModel's checks are in the graph too (:func:`_gate`): the input's pixel range (NaN
refused), a finite release, and for a model declaring probabilities SafeModel's test
that the raw rows are probabilities; when one fails the whole release is NaN (-1 for
label indices), so SafeModel only looks at the release's shape and first entry (and
then re-checks the input in Python to write the error). Raw outputs whose second axis
is not K make onnxruntime fail at a Reshape node before a label stage. Stricter than
numpy in one corner: a release whose float32 sum overflows (entries near 1e37) is
refused. For raw outputs holding NaN, a label computed in the graph may differ from
numpy's (onnxruntime orders NaN differently); both are labels.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.filters.art import ClassLabels, HighConfidence, ReverseSigmoid, Rounded
from edgeguard.filters.base import SUM_TOLERANCE, FilterPipeline, OutputFilter, secure_rng
from edgeguard.filters.basic import Argmax, Round, Sigmoid, Softmax, TopK, Truncate
from edgeguard.filters.noise import GaussianNoise, LaplaceNoise

__all__ = ["FusedPipeline", "NoiseInput", "fuse_pipeline", "fusible_prefix", "SHAPE_CHECK_NODE", "MIN_OPSET"]

#: Name of the node that fails (at run time) when the raw output's second axis is not K.
SHAPE_CHECK_NODE = "edgeguard_fusion/raw_shape_check"
#: The fused nodes use opset-13 semantics (Softmax over one axis, ReduceSum axes as input).
MIN_OPSET = 13
_PREFIX = "edgeguard_fusion/"
_NOISE_BLOCK = 4096  # values drawn per refill of a thread's noise buffer
_SEED_DRAWS = 256  # values per fresh OS seed (edgeguard.filters.base.RESEED_AFTER_DRAWS)


# --- noise inputs ------------------------------------------------------------------------------
_BUFFERS = threading.local()
_EMPTY = (np.empty((0, 1), np.float32), 0)


def _draw(kind: str, scale: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """Noise exactly as the numpy filters draw and scale it (GaussianNoise: float32, LaplaceNoise: float64)."""
    if kind == "normal":
        noise = rng.standard_normal(size, dtype=np.float32)
        noise *= scale  # float32 times the weak Python float, as GaussianNoise does
        return noise
    return rng.laplace(0.0, scale, size)


@dataclass(frozen=True)
class NoiseInput:
    """An extra graph input that carries one random stage's scaled noise, shape (N, K)."""

    name: str
    kind: str  # "normal" (float32 N(0, scale^2)) | "laplace" (float64 Laplace(0, scale))
    scale: float
    num_classes: int

    def draw(self, rng: np.random.Generator | None, rows: int) -> np.ndarray:
        """Noise for ``rows`` rows: from ``rng`` (a seed was given) or this thread's secure buffer.

        With a generator the draws are exactly those the numpy filter makes. Without one
        they are sliced from blocks drawn 256 values per fresh OS seed (the rule of
        :func:`edgeguard.filters.secure_rng`); every value is used once.
        """
        if rng is not None:
            return _draw(self.kind, self.scale, rng, rows * self.num_classes).reshape(rows, self.num_classes)
        try:
            buffers = _BUFFERS.by_key
        except AttributeError:
            buffers = _BUFFERS.by_key = {}
        key = (self.kind, self.scale, self.num_classes)
        block, used = buffers.get(key, _EMPTY)
        if used + rows > len(block):
            need = rows * self.num_classes
            size = max(_NOISE_BLOCK, need) + _SEED_DRAWS  # whole rows, whole 256-value seeds
            size -= size % _SEED_DRAWS
            chunks = [
                _draw(self.kind, self.scale, secure_rng(_SEED_DRAWS), _SEED_DRAWS) for _ in range(size // _SEED_DRAWS)
            ]
            flat = np.concatenate(chunks)
            block, used = flat[: len(flat) - len(flat) % self.num_classes].reshape(-1, self.num_classes), 0
        buffers[key] = (block, used + rows)  # every value is used once
        return block[used : used + rows]


@dataclass
class FusedPipeline:
    """The model with a pipeline's leading stages appended (see the module docstring).

    ``proto`` has one graph output, ``release_name`` (plus ``raw_name`` when built with
    ``keep_raw``); ``noise`` lists the extra inputs, in stage order; ``rest`` is the
    pipeline of the stages that still run in numpy (None when all were fused).
    """

    proto: Any
    fused: tuple[OutputFilter, ...]
    rest: FilterPipeline | None
    release_name: str
    raw_name: str | None
    noise: tuple[NoiseInput, ...]
    terminal: bool  # the release is one int64 label index per row
    labels: bool  # the release holds 0/1 values only (one-hot or per-label decisions): finite by construction
    gated: bool  # the raw rows were checked to be probabilities (a NaN / -1 release: they were not)
    checks_input: bool = False  # the graph checked the input's pixel range (NaN refused)
    checks_release: bool = False  # a NaN / -1 first entry is the only sign of a failed check left to Python
    op_types: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fused_stages": [stage.name for stage in self.fused],
            "numpy_stages": [stage.name for stage in self.rest] if self.rest is not None else [],
            "noise_inputs": [noise.kind for noise in self.noise],
        }


# --- graph building ----------------------------------------------------------------------------
class _Builder:
    def __init__(self, graph: Any, opset: int) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.graph = graph
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.taken = {v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
        for node in graph.node:
            self.taken.update(node.output)
            self.taken.update(node.input)
            self.taken.add(node.name)
        self.counter = 0

    def name(self, hint: str) -> str:
        while True:
            self.counter += 1
            candidate = f"{_PREFIX}{hint}_{self.counter}"
            if candidate not in self.taken:
                self.taken.add(candidate)
                return candidate

    def const(self, value: Any, dtype: Any) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.name("c")
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def f32(self, value: float) -> str:
        return self.const(value, np.float32)

    def f64(self, value: float) -> str:
        return self.const(value, np.float64)

    def axes1(self) -> str:
        return self.const([1], np.int64)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: Any) -> Any:
        out = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), out, name=name or self.name(f"node_{op_type}"), **attrs)
        )
        return out[0] if outputs == 1 else out

    def reduce(self, op_type: str, x: str, *, axis: int | None, keepdims: int = 1) -> str:
        """ReduceSum/Max/Min over axis 1 (or all axes) for the model's opset."""
        if axis is None:
            return self.op(op_type, x, keepdims=0)
        if op_type == "ReduceSum" or self.opset >= 18:  # (only ReduceSum takes axes as an input at opset 13-17)
            return self.op(op_type, x, self.axes1(), keepdims=keepdims)
        return self.op(op_type, x, axes=[axis], keepdims=keepdims)

    def noise_input(self, kind: str, scale: float, num_classes: int) -> tuple[str, NoiseInput]:
        name = self.name(f"noise_{kind}")
        elem = self.TensorProto.FLOAT if kind == "normal" else self.TensorProto.DOUBLE
        self.inputs.append(self.helper.make_tensor_value_info(name, elem, ["batch", num_classes]))
        return name, NoiseInput(name, kind, scale, num_classes)


_Emit = Callable[[OutputFilter, _Builder, str, int, list], "str | None"]


def _scale_snap(b: _Builder, x: str, stage: Round, snap: Callable[[_Builder, str], str]) -> str:
    scale = b.f32(stage._scale)  # numpy multiplies the float32 array by the weak Python float: float32 math
    if stage.clip is not None:
        x = b.op("Clip", x, b.f32(-stage.clip), b.f32(stage.clip))
    return b.op("Div", snap(b, b.op("Mul", x, scale)), scale)


def _largest_remainder(b: _Builder, x: str, stage: Round, num_classes: int) -> str:
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
        zeros = b.op("ConstantOfShape", b.op("Shape", x), value=b.numpy_helper.from_array(np.zeros(1, np.float64)))
        steps = b.op("Add", steps, b.op("ScatterElements", zeros, order, extra, axis=1))
    steps = b.op("Div", steps, scale)
    return b.op("Cast", steps, to=b.TensorProto.FLOAT)


def _renormalize_rows(b: _Builder, x: str, num_classes: int) -> str:
    """edgeguard.filters.noise.renormalize_rows: clip at 0, divide by the row sum, empty rows uniform."""
    values = b.op("Max", x, b.f32(0.0))
    totals = b.reduce("ReduceSum", values, axis=1)
    empty = b.op("LessOrEqual", totals, b.f32(0.0))
    values = b.op("Where", empty, b.f32(1.0), values)
    totals = b.op("Where", empty, b.f32(num_classes), totals)
    return b.op("Div", values, totals)


def _project(b: _Builder, x: str, mode: str, num_classes: int) -> str | None:
    if mode == "none":
        return x
    if mode == "simplex":
        return _renormalize_rows(b, x, num_classes)
    if mode == "clip01":
        return b.op("Clip", x, b.f32(0.0), b.f32(1.0))
    return None  # "sniff" (unbound, row-by-row ART rule): not fused


def _one_hot(b: _Builder, x: str, num_classes: int) -> str:
    index = b.op("ArgMax", x, axis=1, keepdims=0, select_last_index=0)
    return b.op("OneHot", index, b.const(num_classes, np.int64), b.const([0.0, 1.0], np.float32), axis=-1)


def _perturbed(b: _Builder, p: str, stage: ReverseSigmoid) -> str:
    clipped = b.op("Clip", p, b.f64(1e-9), b.f64(1.0 - 1e-9))
    odds = b.op("Div", b.op("Sub", b.f64(1.0), clipped), clipped)
    # numpy: 1 / (1 + exp(gamma * log(odds))); odds ** gamma is the same up to float64 rounding
    s = b.op("Div", b.f64(1.0), b.op("Add", b.f64(1.0), b.op("Pow", odds, b.f64(stage.gamma))))
    r = b.op("Mul", b.f64(stage.beta), b.op("Sub", s, b.f64(0.5)))
    return b.op("Clip", b.op("Sub", p, r), b.f64(0.0), b.f64(1.0))


def _emit(stage: OutputFilter, b: _Builder, x: str, num_classes: int, noise: list) -> str | None:
    """The tensor after ``stage`` (float32 (N, K), or int64 (N,) for a label index), or None: not fusible."""
    kind = type(stage)
    if kind is Softmax:
        return b.op("Softmax", x, axis=1)
    if kind is Sigmoid:
        return b.op("Sigmoid", x)
    if kind in (Round, Rounded):
        if stage.preserve_sum:
            return _largest_remainder(b, x, stage, num_classes)
        return _scale_snap(b, x, stage, lambda b, s: b.op("Round", s))
    if kind is Truncate:
        if stage.preserve_sum:
            return None
        # trunc(s) = sign(s) * floor(|s|) (onnxruntime's Where would turn a selected -0.0 into +0.0)
        return _scale_snap(b, x, stage, lambda b, s: b.op("Mul", b.op("Sign", s), b.op("Floor", b.op("Abs", s))))
    if kind is TopK:
        if stage.k > num_classes:
            return None  # numpy raises its FilterError at run time
        values, index = b.op("TopK", x, b.const([stage.k], np.int64), outputs=2, axis=1, largest=1, sorted=1)
        if stage.renormalize:
            totals = b.reduce("ReduceSum", values, axis=1)
            empty = b.op("LessOrEqual", totals, b.f32(0.0))
            values = b.op("Where", empty, b.f32(1.0), values)
            totals = b.op("Where", empty, b.f32(stage.k), totals)
            values = b.op("Div", values, totals)
        zeros = b.op("ConstantOfShape", b.op("Shape", x), value=b.numpy_helper.from_array(np.zeros(1, np.float32)))
        return b.op("ScatterElements", zeros, index, values, axis=1)
    if kind is Argmax:
        if stage.output == "index":
            return b.op("ArgMax", x, axis=1, keepdims=0, select_last_index=0)
        return _one_hot(b, x, num_classes)
    if kind is ClassLabels:
        if num_classes == 1 or stage._per_label:
            threshold = stage._bound_threshold if stage.threshold is None else stage.threshold
            return b.op("Cast", b.op("Greater", x, b.f32(threshold)), to=b.TensorProto.FLOAT)
        return _one_hot(b, x, num_classes)
    if kind is HighConfidence:
        return b.op("Where", b.op("Less", x, b.f32(stage.cutoff)), b.f32(0.0), x)
    if kind is ReverseSigmoid:
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
    if kind is GaussianNoise:
        if stage._mode not in ("none", "simplex", "clip01") or getattr(stage, "key", None) is not None:
            return None
        name, spec = b.noise_input("normal", stage.std, num_classes)
        noise.append(spec)
        return _project(b, b.op("Add", name, x), stage._mode, num_classes)
    if kind is LaplaceNoise:
        if stage._mode not in ("none", "simplex", "clip01") or getattr(stage, "key", None) is not None:
            return None
        name, spec = b.noise_input("laplace", stage.scale, num_classes)
        noise.append(spec)
        noisy = b.op("Add", name, b.op("Cast", x, to=b.TensorProto.DOUBLE))
        return _project(b, b.op("Cast", noisy, to=b.TensorProto.FLOAT), stage._mode, num_classes)
    return None


def _is_fusible(stage: OutputFilter, num_classes: int) -> bool:
    """Whether ``stage`` (bound) maps onto ONNX nodes (dry run on a scratch graph)."""
    import onnx

    scratch = _Builder(onnx.GraphProto(), 21)
    return _emit(stage, scratch, "x", num_classes, []) is not None


def fusible_prefix(pipeline: FilterPipeline, num_classes: int) -> int:
    """How many leading stages of a bound ``pipeline`` :func:`fuse_pipeline` would put in the graph."""
    count = 0
    for stage in pipeline.filters:
        if not _is_fusible(stage, num_classes):
            break
        count += 1
    return count


def _default_opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _gate(
    b: _Builder,
    raw: str,
    release: str,
    *,
    kind: str,
    task_type: str,
    probabilities: bool,
    input_name: str | None,
    pixel_range: tuple[float, float] | None,
) -> str:
    """The release, or NaN everywhere (label indices: -1) unless every check SafeModel makes passes.

    - the input (with ``input_name``): every pixel in ``pixel_range``, no NaN:
      sum(|x - clip(x, low, high)|) == 0 (NaN and inf make it NaN or inf, an out-of-range
      value makes it positive; onnxruntime's ReduceMax skips NaN, a sum does not);
    - a float release (``kind == "values"``): finite (folded in as 0 * sum(release));
    - for a model declaring probabilities, SafeModel's numpy test on the raw rows: every
      entry in [0, 1] and, multiclass, every row sum within SUM_TOLERANCE of 1.
    """
    ok = None
    if input_name is not None and pixel_range is not None:
        low, high = pixel_range
        outside = b.op("Sub", input_name, b.op("Clip", input_name, b.f32(low), b.f32(high)))
        total = b.reduce("ReduceL1", outside, axis=None)
        if kind == "values":
            total = b.op("Add", total, b.op("Mul", b.reduce("ReduceSum", release, axis=None), b.f32(0.0)))
        ok = b.op("Equal", total, b.f32(0.0))
    elif kind == "values":
        total = b.reduce("ReduceSum", release, axis=None)
        ok = b.op("Equal", b.op("Sub", total, total), b.f32(0.0))  # x - x is 0 exactly when x is finite
    if probabilities:
        checks = b.op("GreaterOrEqual", b.reduce("ReduceMin", raw, axis=None), b.f32(0.0))
        checks = b.op("And", checks, b.op("LessOrEqual", b.reduce("ReduceMax", raw, axis=None), b.f32(1.0)))
        if task_type == "multiclass":
            deviation = b.op("Abs", b.op("Sub", b.reduce("ReduceSum", raw, axis=1), b.f32(1.0)))
            checks = b.op(
                "And", checks, b.op("LessOrEqual", b.reduce("ReduceMax", deviation, axis=None), b.f32(SUM_TOLERANCE))
            )
        # ReduceMin/Max skip NaN: a NaN raw entry fails the row-sum test (multiclass) or is caught by the sum
        nan_free = b.op("Equal", b.op("Mul", b.reduce("ReduceSum", raw, axis=None), b.f32(0.0)), b.f32(0.0))
        checks = b.op("And", checks, nan_free)
        ok = checks if ok is None else b.op("And", ok, checks)
    if ok is None:
        return release
    bad = b.const(-1, np.int64) if kind == "index" else b.f32(math.nan)
    return b.op("Where", ok, release, bad)


_LABEL_STAGES = (Argmax, ClassLabels)  # their output shape does not follow the raw output's


def fuse_pipeline(
    proto: Any,
    pipeline: FilterPipeline,
    *,
    output_name: str,
    num_classes: int,
    output_kind: str,
    task_type: str = "multiclass",
    keep_raw: bool = False,
    input_name: str | None = None,
    pixel_range: tuple[float, float] | None = None,
) -> FusedPipeline | None:
    """``proto`` (not modified) with the leading fusible stages of the bound ``pipeline`` appended.

    Returns None when nothing can be fused: no leading stage maps onto ONNX nodes, the
    raw output is not float32, or the model's default-domain opset is below
    :data:`MIN_OPSET`. The result's graph outputs only the release (and the raw output
    with ``keep_raw``, for ``predict_unfiltered_unsafe``). With ``input_name`` and
    ``pixel_range`` the graph also checks the input's range (NaN refused): a release that
    is NaN (label indices: -1) means some check failed, see :func:`_gate`.
    """
    import onnx
    from onnx import TensorProto, helper

    opset = _default_opset(proto)
    output = next((v for v in proto.graph.output if v.name == output_name), None)
    if opset < MIN_OPSET or output is None or output.type.tensor_type.elem_type != TensorProto.FLOAT:
        return None
    count = fusible_prefix(pipeline, num_classes)
    if count == 0:
        return None
    fused_proto = onnx.ModelProto()
    fused_proto.CopyFrom(proto)
    graph = fused_proto.graph
    b = _Builder(graph, opset)
    fused = tuple(pipeline.filters[:count])
    x = output_name
    if any(type(stage) in _LABEL_STAGES for stage in fused):
        # Other stages keep the raw shape (SafeModel checks the release's); a label does not, so
        # reshape to (N_raw, K) first: onnxruntime fails here unless there are K values per row.
        x = b.op("Reshape", x, b.const([0, num_classes], np.int64), name=SHAPE_CHECK_NODE)
    raw = x
    noise: list[NoiseInput] = []
    for stage in fused:
        x = _emit(stage, b, x, num_classes, noise)
    terminal = type(fused[-1]) is Argmax and fused[-1].output == "index"
    probabilities = output_kind == "probabilities"
    labels = not terminal and type(fused[-1]) in _LABEL_STAGES
    kind = "index" if terminal else "labels" if labels else "values"
    release_name = _gate(
        b,
        raw,
        x,
        kind=kind,
        task_type=task_type,
        probabilities=probabilities,
        input_name=input_name,
        pixel_range=pixel_range,
    )
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    graph.input.extend(b.inputs)
    elem = TensorProto.INT64 if terminal else TensorProto.FLOAT
    shape = ["batch"] if terminal else ["batch", num_classes]
    outputs = [helper.make_tensor_value_info(release_name, elem, shape)]
    if keep_raw:
        outputs.append(output)
    del graph.output[:]
    graph.output.extend(outputs)
    rest = tuple(pipeline.filters[count:])
    op_types = frozenset(node.op_type for node in graph.node)
    return FusedPipeline(
        proto=fused_proto,
        fused=fused,
        rest=FilterPipeline(rest, task_type=task_type) if rest else None,
        release_name=release_name,
        raw_name=output_name if keep_raw else None,
        noise=tuple(noise),
        terminal=terminal,
        labels=labels,
        checks_input=input_name is not None and pixel_range is not None,
        checks_release=True,
        gated=probabilities,
        op_types=op_types,
    )
