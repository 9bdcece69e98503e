"""Run a pipeline's leading filters inside the onnxruntime graph.

:func:`fuse_pipeline` appends ONNX nodes that compute the leading stages of a bound
:class:`FilterPipeline` after the model's output, so one ``InferenceSession.run``
returns the release and the raw outputs never reach Python memory. Stages are matched
by their exact class (a subclass or an unknown filter is *not fusible*; so are
consistent noise, ``key=``, and stages that draw with OpenDP); the first
stage that is not fusible, and every stage after it, run in numpy as before.

Each filter's nodes come from its emitter, registered per class in
:mod:`edgeguard.filters.emitters` (see :mod:`edgeguard.filters.onnx_graph`); this module
only assembles them, with the checks. What maps, and how closely the fused release matches the numpy one (float32 models):

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
LabelConfidence             float64 ArgMax Gather ... ScatterElements Cast  bit for bit
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
SafeModel's checks are in the graph too (:func:`gate`): the input's pixel range (NaN
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.filters.art import ClassLabels
from edgeguard.filters.base import SUM_TOLERANCE, FilterPipeline, OutputFilter
from edgeguard.filters.basic import Argmax
from edgeguard.filters.onnx_graph import GraphBuilder, NoiseInput, NotFusible, emit_stage

__all__ = [
    "FusedPipeline",
    "NoiseInput",
    "fuse_pipeline",
    "fusible_prefix",
    "fusion_refusal",
    "gate",
    "SHAPE_CHECK_NODE",
    "MIN_OPSET",
]

#: Name of the node that fails (at run time) when the raw output's second axis is not K.
SHAPE_CHECK_NODE = "edgeguard_fusion/raw_shape_check"
#: The fused nodes use opset-13 semantics (Softmax over one axis, ReduceSum axes as input).
MIN_OPSET = 13
_PREFIX = "edgeguard_fusion/"


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
    uniform_per_row: int = 0  # columns of the U(0, 1) input (noise="uniform"), the dither's included

    def to_dict(self) -> dict[str, Any]:
        return {
            "fused_stages": [stage.name for stage in self.fused],
            "numpy_stages": [stage.name for stage in self.rest] if self.rest is not None else [],
            "noise_inputs": [noise.kind for noise in self.noise],
        }


def fusion_refusal(stage: OutputFilter, num_classes: int) -> str | None:
    """Why ``stage`` (bound) cannot be put in a graph, or None when it can (dry run on a scratch graph)."""
    import onnx

    scratch = GraphBuilder(onnx.GraphProto(), 21, prefix=_PREFIX)
    try:
        emit_stage(stage, scratch, "x", num_classes)
    except NotFusible as reason:
        return str(reason)
    return None


def _is_fusible(stage: OutputFilter, num_classes: int) -> bool:
    return fusion_refusal(stage, num_classes) is None


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


def gate(
    b: GraphBuilder,
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
      with no range (features), finiteness only: sum(|x - x|) == 0;
    - a float release (``kind == "values"``): finite (folded in as 0 * sum(release));
    - for a model declaring probabilities, SafeModel's numpy test on the raw rows: every
      entry in [0, 1] and, multiclass, every row sum within SUM_TOLERANCE of 1.

    A float release without the probability test takes no Equal/Where: it gets
    ``release + sqrt(-0.0 * sum|release| - total)``, which is the release bit for bit
    (``sqrt(-0.0)`` is -0.0, and ``v + -0.0`` is ``v`` for every v, -0.0 included) when the
    input's total is 0 and the release finite, and NaN everywhere otherwise (nodes on a
    scalar instead of a Where that broadcasts: measured cheaper).
    """
    total = None  # a float32 scalar: +0.0 when the input checks pass, positive, inf or NaN otherwise
    if input_name is not None and pixel_range is not None:
        low, high = pixel_range
        if math.isinf(low) and math.isinf(high) and low < 0 < high:  # finiteness only: x - x is NaN for NaN and inf
            outside = b.op("Sub", input_name, input_name)
        else:
            outside = b.op("Sub", input_name, b.op("Clip", input_name, b.f32(low), b.f32(high)))
        total = b.reduce("ReduceL1", outside, axis=None)
    if not probabilities and kind != "index":
        # float release: + sqrt(penalty), penalty -0.0 when every check passes (sqrt(-0.0) is -0.0 and
        # v + -0.0 is v, bit for bit, -0.0 included), negative, -inf or NaN otherwise (sqrt: NaN everywhere)
        if kind == "values":  # |release| summed times -0.0: -0.0 when finite, NaN for a NaN or inf entry
            penalty = b.op("Mul", b.reduce("ReduceL1", release, axis=None), b.f32(-0.0))
            if total is not None:
                penalty = b.op("Sub", penalty, total)
        elif total is not None:
            penalty = b.op("Neg", total)
        else:
            return release
        return b.op("Add", release, b.op("Sqrt", penalty))
    if kind == "values":
        released = b.reduce("ReduceSum", release, axis=None)
        if total is None:
            total = b.op("Sub", released, released)  # x - x is 0 exactly when x is finite
        else:
            total = b.op("Add", total, b.op("Mul", released, b.f32(0.0)))
    if total is None and not probabilities:
        return release  # a label index, and nothing to check
    ok = None if total is None else b.op("Equal", total, b.f32(0.0))
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
    noise: str = "input",
    uniform_offset: int = 0,
) -> FusedPipeline | None:
    """``proto`` (not modified) with the leading fusible stages of the bound ``pipeline`` appended.

    Returns None when nothing can be fused: no leading stage maps onto ONNX nodes, the
    raw output is not float32, or the model's default-domain opset is below
    :data:`MIN_OPSET`. The result's graph outputs only the release (and the raw output
    with ``keep_raw``, for ``predict_unfiltered_unsafe``). With ``input_name`` and
    ``pixel_range`` the graph also checks the input's range (NaN refused): a release that
    is NaN (label indices: -1) means some check failed, see :func:`gate`.
    ``noise`` picks where random stages get their noise (see
    :mod:`edgeguard.filters.onnx_graph`); with ``noise="uniform"`` the stages read the
    columns of the U(0, 1) input from ``uniform_offset`` on.
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
    b = GraphBuilder(graph, opset, prefix=_PREFIX, noise=noise, uniform_offset=uniform_offset)
    fused = tuple(pipeline.filters[:count])
    x = output_name
    if any(type(stage) in _LABEL_STAGES for stage in fused):
        # Other stages keep the raw shape (SafeModel checks the release's); a label does not, so
        # reshape to (N_raw, K) first: onnxruntime fails here unless there are K values per row.
        x = b.op("Reshape", x, b.const([0, num_classes], np.int64), name=SHAPE_CHECK_NODE)
    raw = x
    for stage in fused:
        x = emit_stage(stage, b, x, num_classes)
    terminal = type(fused[-1]) is Argmax and fused[-1].output == "index"
    probabilities = output_kind == "probabilities"
    labels = not terminal and type(fused[-1]) in _LABEL_STAGES
    kind = "index" if terminal else "labels" if labels else "values"
    release_name = gate(
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
    uniform = b.uniform_input()
    if uniform is not None:
        graph.input.append(uniform)
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
        noise=tuple(b.noise_inputs),
        terminal=terminal,
        labels=labels,
        checks_input=input_name is not None and pixel_range is not None,
        checks_release=True,
        gated=probabilities,
        op_types=op_types,
        uniform_per_row=b.uniform_offset,
    )
