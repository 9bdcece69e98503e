"""The one builder of guarded graphs, shared by ``edgeguard guard`` files and :class:`edgeguard.SafeModel`.

:func:`build_guarded_graph` takes a model and a bound filter pipeline and returns the
graph that releases only the pipeline's output:

1. optionally an **input dither** in front of the model: uniform noise within plus or
   minus half a grey level of the declared pixel range (``0.5 * (high - low) / 255``,
   so +-0.5/255 for [0, 1] inputs), drawn by ``RandomUniformLike`` without a seed and
   clipped back into the range, so that a model never sees the exact pixels it was sent;
2. the model, unchanged (its nodes read the dithered input instead of the graph input);
3. the pipeline's stages, from each filter's registered emitter
   (:mod:`edgeguard.filters.onnx_graph`), and the input checks (range, NaN, inf) of
   :func:`edgeguard.filters.fusion.gate`: when a check fails, the whole release is NaN
   (label indices: -1), never the raw values.

Files use ``noise="uniform"``: the graph takes one float64 input ``edgeguard_uniform``
(batch, M) of U(0, 1) values that the app draws from its CSPRNG at every run (the
dither and every random stage read their own columns). SafeModel uses
``noise="input"``: Python feeds each stage's scaled noise (and the dither's), so
``predict(seed=...)`` is reproducible; :meth:`GuardedGraph.feeds` draws them. Everything
else is the same code. (onnxruntime's own ``RandomNormalLike`` is not used: it repeats
its noise in every new session of a process; see :mod:`edgeguard.filters.onnx_graph`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import GuardError
from edgeguard.filters import FilterPipeline
from edgeguard.filters.fusion import MIN_OPSET, FusedPipeline, fuse_pipeline, fusion_refusal
from edgeguard.filters.onnx_graph import UNIFORM_INPUT, GraphBuilder, NoiseInput, uniform_noise

__all__ = [
    "GUARD_PREFIX",
    "RELEASE_NAME",
    "RESERVED_PREFIXES",
    "DITHER_LEVELS",
    "GuardedGraph",
    "build_guarded_graph",
    "dither_half_width",
    "guarded_feeds",
    "input_check_range",
]

#: Prefix of the dither's nodes and tensors.
GUARD_PREFIX = "edgeguard_guard/"
#: Names a source model may not use (they mark what the builder appended).
RESERVED_PREFIXES = (GUARD_PREFIX, "edgeguard_fusion/", UNIFORM_INPUT)
#: The release's name in a guarded graph (unless the model already uses it).
RELEASE_NAME = "release"
#: Grey levels assumed across the declared pixel range (8-bit images).
DITHER_LEVELS = 255


def input_check_range(info: Any) -> tuple[float, float] | None:
    """The range the graph checks the input against: the declared one; any finite value when none is
    declared (features); nothing for uint8 inputs (every value is in range)."""
    if getattr(info, "input_dtype", "float32") != "float32":
        return None
    if info.pixel_range is None:
        return (-math.inf, math.inf)  # x - clip(x) is NaN for NaN and inf: finiteness only
    low, high = info.pixel_range
    return (float(low), float(high))


def dither_half_width(pixel_range: tuple[float, float]) -> float:
    """Half a grey level of ``pixel_range``: ``0.5 * (high - low) / 255``."""
    low, high = pixel_range
    return 0.5 * (float(high) - float(low)) / DITHER_LEVELS


@dataclass
class GuardedGraph:
    """The built graph: ``proto`` (release as its output), the fusion it holds, and the dither's tensor name."""

    proto: Any
    fusion: FusedPipeline | None  # None: no stage runs in the graph (SafeModel runs them all in numpy)
    dithered_input: str | None  # the tensor the model reads instead of the graph input (None: no dither)
    release_name: str
    raw_name: str | None
    noise_inputs: tuple[NoiseInput, ...] = ()  # noise="input": the dither's first, then each random stage's
    uniform_per_row: int = 0  # noise="uniform": columns of the edgeguard_uniform input

    def feeds(self, rows: int, rng: Any = None) -> dict[str, Any]:
        """The noise inputs for a batch of ``rows``: scaled noise (``rng`` or secure draws), or CSPRNG uniforms."""
        feed = {noise.name: noise.draw(rng, rows) for noise in self.noise_inputs}
        if self.uniform_per_row:
            feed[UNIFORM_INPUT] = uniform_noise(rows, self.uniform_per_row)
        return feed


def _default_opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _all_names(graph: Any) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for attribute in node.attribute:
            for sub in (attribute.g, *attribute.graphs):
                names |= _all_names(sub)
    return names


def _declares(graph: Any, name: str) -> bool:
    """Whether a subgraph defines ``name`` itself (then its uses refer to its own value)."""
    return any(v.name == name for v in (*graph.input, *graph.initializer)) or any(
        name in node.output for node in graph.node
    )


def _rewire(graph: Any, old: str, new: str) -> None:
    """Every use of ``old`` in ``graph``'s nodes (and in subgraphs that do not redefine it) reads ``new``."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                if not _declares(sub, old):
                    _rewire(sub, old, new)


def _check_source(proto: Any, info: Any) -> None:
    opset = _default_opset(proto)
    if opset < MIN_OPSET:
        raise GuardError(
            f"expected a model with default-domain opset >= {MIN_OPSET}, got opset {opset}; convert it first "
            f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))"
        )
    output = next((v for v in proto.graph.output if v.name == info.output_name), None)
    elem = output.type.tensor_type.elem_type if output is not None else None
    if elem != 1:  # TensorProto.FLOAT
        from onnx import TensorProto

        got = TensorProto.DataType.Name(elem) if elem else "no such output"
        raise GuardError(
            f"expected the model's output {info.output_name!r} to be a float32 tensor, got {got}; export the "
            "classifier with float32 logits or probabilities"
        )
    reserved = sorted(n for n in _all_names(proto.graph) if n.startswith(RESERVED_PREFIXES))
    if reserved:
        raise GuardError(
            f"expected a model without names starting with {' or '.join(RESERVED_PREFIXES)}, got {reserved[0]!r}; "
            "the file looks guarded already: guard the provider's original model instead"
        )
    if any(v.name == info.input_name for v in proto.graph.output):
        raise GuardError(
            f"expected the model's input {info.input_name!r} not to be a graph output, got it listed as one; "
            "the file is not a classifier"
        )


def _add_dither(proto: Any, info: Any, noise: str) -> tuple[str, NoiseInput | None, int]:
    """Put the dither in front of the model in ``proto`` (modified).

    Returns the dithered tensor's name, the dither's noise input (``noise="input"``) and
    the uniform columns it used (``noise="uniform"``).
    """
    from onnx import TensorProto, helper

    graph = proto.graph
    value = next(v for v in graph.input if v.name == info.input_name)
    if info.pixel_range is None:
        raise GuardError(
            f"expected a declared input range for the input dither (half a grey level of it), got none for "
            f"{info.input_name!r}; declare pixel_range in the model's metadata or drop input_dither"
        )
    if value.type.tensor_type.elem_type != TensorProto.FLOAT:
        got = TensorProto.DataType.Name(value.type.tensor_type.elem_type)
        raise GuardError(
            f"expected a float32 input for the input dither, got {got} for {info.input_name!r}; guard without "
            "input_dither or export the model with float32 inputs"
        )
    low, high = (float(v) for v in info.pixel_range)
    half = dither_half_width((low, high))
    shape = tuple(int(d) for d in info.input_shape)
    per_row = int(np.prod(shape))
    b = GraphBuilder(graph, _default_opset(proto), prefix=GUARD_PREFIX, noise=noise)
    spec = None
    if noise == "input":
        name = b.name("dither_noise")
        b.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]))
        spec, offset = NoiseInput(name, "uniform", half, per_row, shape), 0
    elif noise == "uniform":  # U(0, 1) -> U(-half, half): float32 u * 2 half - half (a dither needs no 53 bits)
        u = b.op("Cast", b.uniform(per_row, shape, floor=False), to=TensorProto.FLOAT)
        name = b.op("Sub", b.op("Mul", u, b.f32(2.0 * half)), b.f32(half))
        offset = b.uniform_offset
    else:
        name = b.op("RandomUniformLike", info.input_name, dtype=TensorProto.FLOAT, low=-half, high=half)
        offset = 0
    dithered = b.op("Clip", b.op("Add", info.input_name, name), b.f32(low), b.f32(high))
    _rewire(graph, info.input_name, dithered)  # the model's nodes (not yet the dither's) read the dithered tensor
    nodes = list(b.nodes) + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)  # topological order: the dither first
    graph.initializer.extend(b.initializers)
    graph.input.extend(b.inputs)
    return dithered, spec, offset


def refusal(pipeline: FilterPipeline, num_classes: int) -> str | None:
    """Why ``pipeline`` cannot run entirely inside a graph (the first such stage), or None."""
    if not pipeline.filters:
        return "the pipeline is empty; a guarded file must release through at least one filter (e.g. 'argmax')"
    for position, stage in enumerate(pipeline.filters):
        reason = fusion_refusal(stage, num_classes)
        if reason is not None:
            return f"stage {stage.name!r} (position {position}) cannot run inside the graph: {reason}"
    return None


def build_guarded_graph(
    proto: Any,
    info: Any,
    pipeline: FilterPipeline,
    *,
    input_dither: bool = False,
    noise: str = "uniform",
    require_all: bool = True,
    keep_raw: bool = False,
    pixel_range: Any = "declared",
) -> GuardedGraph:
    """The guarded graph of ``proto`` (not modified) for the bound ``pipeline``; see the module docstring.

    ``info`` is the model's :class:`edgeguard.model.ModelInfo`. With ``require_all``
    (files) every stage must run in the graph, else :class:`GuardError` names the first
    stage that cannot and why; without it (SafeModel) the leading stages that can are
    fused and ``fusion.rest`` lists the others. ``pixel_range``: the range the graph checks the
    input against (default :func:`input_check_range`; None: no input check).
    """
    import onnx

    if pipeline.input_kind is None:
        pipeline = pipeline.bind(info.output_kind, info.task_type)
    if require_all:  # (SafeModel runs what cannot be fused in numpy instead)
        _check_source(proto, info)
        problem = refusal(pipeline, info.num_classes)
        if problem is not None:
            raise GuardError(
                f"expected a pipeline whose every stage runs inside the ONNX graph, got {problem}. "
                "Guard a pipeline of fusible stages (softmax, round, top_k, argmax, label_confidence, gaussian, ...)"
            )
    source = proto
    dithered, dither_noise, offset = None, None, 0
    if input_dither:
        source = onnx.ModelProto()
        source.CopyFrom(proto)
        dithered, dither_noise, offset = _add_dither(source, info, noise)
    dither_inputs = (dither_noise,) if dither_noise is not None else ()
    fusion = fuse_pipeline(
        source,
        pipeline,
        output_name=info.output_name,
        num_classes=info.num_classes,
        output_kind=info.output_kind,
        task_type=info.task_type,
        keep_raw=keep_raw,
        input_name=info.input_name,
        pixel_range=input_check_range(info) if pixel_range == "declared" else pixel_range,
        noise=noise,
        uniform_offset=offset,
    )
    if fusion is None:
        if require_all:  # (refusal() said every stage is fusible)
            raise GuardError("expected the pipeline to fuse, got nothing fused; report this as a bug")
        if offset:  # the dither alone read uniform columns
            source.graph.input.append(_uniform_value(offset))
        return GuardedGraph(source, None, dithered, info.output_name, info.output_name, dither_inputs, offset)
    release = _rename_release(fusion.proto.graph, fusion.release_name)
    return GuardedGraph(
        fusion.proto,
        fusion,
        dithered,
        release,
        fusion.raw_name,
        dither_inputs + tuple(fusion.noise),
        fusion.uniform_per_row,
    )


def _uniform_value(columns: int) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(UNIFORM_INPUT, TensorProto.DOUBLE, ["batch", columns])


def _rename_release(graph: Any, name: str) -> str:
    """Give the release the stable name :data:`RELEASE_NAME` (apps fetch it by name), when free."""
    if RELEASE_NAME in _all_names(graph):
        return name
    for node in graph.node:
        for index, output in enumerate(node.output):
            if output == name:
                node.output[index] = RELEASE_NAME
    for value in graph.output:
        if value.name == name:
            value.name = RELEASE_NAME
    return RELEASE_NAME


def guarded_feeds(session: Any, x: Any) -> dict[str, Any]:
    """The feeds for one run of a guarded file in a Python ``onnxruntime.InferenceSession``.

    ``x`` goes to the image input; when the file has random stages (or the dither), the
    ``edgeguard_uniform`` input gets fresh CSPRNG uniforms (:func:`uniform_noise`).
    """
    feeds: dict[str, Any] = {}
    for value in session.get_inputs():
        if value.name == UNIFORM_INPUT:
            feeds[value.name] = uniform_noise(len(x), int(value.shape[1]))
        else:
            feeds[value.name] = x
    return feeds
