"""What a classifier graph takes and returns, and the one graph SafeModel and the vet run.

Any ONNX classifier with one numeric input is read here, whatever exported it:

Inputs (the graph's only non-initializer input):

- float32 ``(N, F)`` vectors (tabular features), ``(N, T, F)`` sequences, ``(N, C, H, W)``
  or ``(N, H, W, C)`` images (the layout comes from the graph: the axis of 1, 3 or 4
  channels; ``input_layout="NCHW"|"NHWC"`` settles an ambiguous one), and uint8 images
  (values 0..255, no scaling);
- a fixed batch dimension is reported (:attr:`InputSpec.fixed_batch`): SafeModel splits
  and pads batches to it, the vet does the same;
- int64 inputs (token ids, category codes), strings and the rest are refused: a decoder
  that rebuilds them has no meaningful error to score, and SafeModel cannot check them.

Outputs (one is chosen, by ``output=`` name or by default the first that fits):

- a float ``(N, K)`` tensor of scores (logits or probabilities);
- a ZipMap (skl2onnx's default ``probabilities``, a sequence of maps): the ZipMap node is
  cut off and its ``(N, K)`` float input, in the ZipMap's class order, becomes the output;
- an int64 label ``(N,)``: turned in the graph into a one-hot ``(N, K)`` over the
  classifier's labels, released as labels only (capacity log2 K).

:func:`prepare_graph` returns the graph with exactly ONE output, the chosen one: whatever
else the file computes (a second, richer output) can never leave a session built on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ModelLoadError

__all__ = [
    "InputSpec",
    "OutputSpec",
    "Signature",
    "read_signature",
    "prepare_graph",
    "zipmap_to_array",
    "looks_like_probabilities",
    "fixed_batches",
    "stitch",
    "INPUT_LAYOUTS",
    "INPUT_KINDS",
    "LABEL_OUTPUT",
    "OUTPUT_TYPES",
]

INPUT_LAYOUTS = ("NCHW", "NHWC")
INPUT_KINDS = ("vector", "sequence", "image")
#: "scores": a float (N, K) tensor; "zipmap": a sequence of maps cut back to its (N, K) input;
#: "label": an int64 (N,) label turned into a one-hot (N, K).
OUTPUT_TYPES = ("scores", "zipmap", "label")
_CHANNELS = (1, 3, 4)
_FLOAT, _UINT8, _INT64, _STRING, _DOUBLE = 1, 2, 7, 8, 11
_DTYPE_NAMES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}
#: ai.onnx.ml classifiers: their first output is the label, their attributes the class labels.
_ML_CLASSIFIERS = (
    "LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier", "TreeEnsemble", "NaiveBayesClassifier",
)
#: Ops (or name fragments) whose output is a probability vector.
_PROBABILITY_OPS = ("Softmax", "Sigmoid", "ZipMap")
_SUPPORTED = (
    "float32 inputs of shape (N, F) (vectors), (N, T, F) (sequences), (N, C, H, W) or (N, H, W, C) (images), "
    "or uint8 images"
)
#: The opset of the few nodes prepare_graph adds (one-hot of a label output).
_ADDED_OPSET = 13
#: The output of a prepared graph whose int64 label output became a one-hot.
LABEL_OUTPUT = "edgeguard_label_one_hot"


@dataclass(frozen=True)
class InputSpec:
    """The graph's input: name, dtype, kind, layout, sample shape and batch dimension."""

    name: str
    dtype: str  # "float32" | "uint8"
    kind: str  # "vector" | "sequence" | "image"
    sample_shape: tuple[int, ...]  # without the batch dimension, in the graph's own layout
    layout: str | None = None  # "NCHW" | "NHWC" for images
    fixed_batch: int | None = None  # the graph's fixed batch size (None: any)

    @property
    def channels_first_shape(self) -> tuple[int, ...]:
        """The sample shape as (C, H, W) for images, unchanged otherwise."""
        if self.kind == "image" and self.layout == "NHWC":
            h, w, c = self.sample_shape
            return (c, h, w)
        return self.sample_shape

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OutputSpec:
    """The chosen output: its name in the file, its type, and what the graph says about its classes."""

    name: str
    type: str  # one of OUTPUT_TYPES
    num_classes: int | None  # None when the graph does not fix K
    class_labels: tuple[str, ...] = ()  # from the ZipMap keys or the classifier's labels (may be empty)
    output_kind: str | None = None  # "probabilities" | "logits" when the graph tells, else None
    tensor_name: str = ""  # the tensor the prepared graph returns
    others: tuple[str, ...] = field(default=())  # the file's other outputs (never returned)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Signature:
    input: InputSpec
    output: OutputSpec

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input.to_dict(), "output": self.output.to_dict()}


# -- inputs -------------------------------------------------------------------------------------


def static_dims(value: Any) -> list[int | None]:
    """The declared dims of a graph value: the ``dim_value`` where one is set, else None (a symbolic dim)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _dims(value: Any) -> list[int | None]:
    """:func:`static_dims` with non-positive dims also unknown (None)."""
    return [d if d is not None and d > 0 else None for d in static_dims(value)]


def _graph_inputs(graph: Any) -> list[Any]:
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def _refuse_input(name: str, dtype: int) -> ModelLoadError:
    what = _DTYPE_NAMES.get(dtype, f"ONNX type {dtype}")
    if dtype in (_INT64, 6, 5, 3, 12, 13):
        why = (
            f"an {what} input (token ids or category codes): a reconstruction of ids has no meaningful error "
            "to score and SafeModel cannot check their range"
        )
        fix = "export the model with a float32 input (e.g. one-hot or embedded features computed on the device)"
    elif dtype == _STRING:
        why = "a string input: text cannot be checked or audited as numbers"
        fix = "export the model with a float32 input (e.g. the text's features computed on the device)"
    elif dtype in (_DOUBLE, 10, 16):
        why = f"a {what} input"
        fix = "export the model with a float32 input (skl2onnx: initial_types=[('x', FloatTensorType([None, F]))])"
    else:
        why = f"a {what} input"
        fix = "export the model with a float32 input"
    return ModelLoadError(f"expected {_SUPPORTED}, got {why} ({name!r}); {fix}")


#: Ops that read (N, C, H, W): an image input they consume (maybe after elementwise ops) is NCHW.
_NCHW_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization", "InstanceNormalization",
             "GlobalAveragePool", "GlobalMaxPool", "LpPool", "QLinearConv", "ConvInteger")
_ELEMENTWISE = ("Sub", "Div", "Mul", "Add", "Cast", "Identity", "Clip", "Relu")


def _layout_from_graph(graph: Any, name: str) -> str | None:
    """NCHW when the input reaches a Conv/Pool through elementwise ops only; NHWC when it reaches a
    Transpose with perm (0, 3, 1, 2) first; None when the graph does not say."""
    frontier, seen = [name], set()
    for _ in range(4):
        found: list[str] = []
        for node in graph.node:
            if not any(i in frontier for i in node.input):
                continue
            if node.op_type in _NCHW_OPS and node.input and node.input[0] in frontier:
                return "NCHW"
            if node.op_type == "Transpose" and list(_attribute(node, "perm") or ()) == [0, 3, 1, 2]:
                return "NHWC"
            if node.op_type in _ELEMENTWISE:
                found += [o for o in node.output if o not in seen]
        seen.update(frontier)
        frontier = found
        if not frontier:
            return None
    return None


def _layout(dims: list[int | None], layout: str | None, graph: Any = None, name: str = "") -> str:
    if layout is not None:
        if layout not in INPUT_LAYOUTS:
            raise ModelLoadError(f"expected input_layout in {INPUT_LAYOUTS}, got {layout!r}")
        return layout
    if graph is not None:
        told = _layout_from_graph(graph, name)
        if told is not None:
            return told
    first, last = dims[1], dims[3]
    first_ok, last_ok = first in _CHANNELS, last in _CHANNELS
    if first_ok and not last_ok:
        return "NCHW"
    if last_ok and not first_ok:
        return "NHWC"
    if first_ok and last_ok:  # both could be channels: a square picture settles it
        if dims[2] == dims[3] != first:
            return "NCHW"
        if dims[1] == dims[2] != last:
            return "NHWC"
    elif first is not None and last is not None and first != last:
        return "NCHW" if first < last else "NHWC"
    raise ModelLoadError(
        f"expected an image input whose channel axis the graph makes clear, got dims {dims}; "
        "pass input_layout='NCHW' or 'NHWC' (CLI: --input-layout)"
    )


def read_input(
    model: Any, *, input_shape: tuple[int, ...] | None = None, input_layout: str | None = None
) -> InputSpec:
    """The graph's one input as an :class:`InputSpec` (refuses what edgeguard cannot check)."""
    inputs = _graph_inputs(model.graph)
    if len(inputs) != 1:
        raise ModelLoadError(
            f"expected a classifier with one input, got inputs {[v.name for v in inputs][:8]}; "
            "export the model with a single input tensor"
        )
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise ModelLoadError(f"expected {_SUPPORTED}, got a non-tensor input {value.name!r}; export a tensor input")
    dtype = value.type.tensor_type.elem_type
    if dtype not in (_FLOAT, _UINT8):
        raise _refuse_input(value.name, dtype)
    dims = _dims(value)
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if dims and len(dims) != len(input_shape) + 1 and len(dims) > 0:
            raise ModelLoadError(
                f"expected input_shape with {len(dims) - 1} dims (the graph input has rank {len(dims)}: {dims}), got "
                f"{list(input_shape)}; give the shape of one sample, without the batch dimension"
            )
        if not dims:
            dims = [None, *input_shape]
        clash = [(g, d) for g, d in zip(dims[1:], input_shape) if g is not None and g != d]
        if clash:
            raise ModelLoadError(
                f"expected input_shape to agree with the graph input dims {dims}, got {list(input_shape)}; "
                "the declared shape and the graph disagree"
            )
        dims = [dims[0], *input_shape]
    rank = len(dims)
    if not 2 <= rank <= 4:
        raise ModelLoadError(
            f"expected {_SUPPORTED}, got an input of rank {rank} (dims {dims}); "
            "export the model with a batch dimension first"
        )
    if any(d is None for d in dims[1:]):
        example = ",".join("28" if d is None else str(d) for d in dims[1:])
        raise ModelLoadError(
            f"expected a fixed sample shape in the graph or the 'input_shape' metadata, got graph input dims "
            f"{dims}; pass the shape of one sample explicitly (input_shape=..., CLI --input-shape {example})"
        )
    sample = tuple(int(d) for d in dims[1:])
    if math.prod(sample) > 1 << 26 or max(sample) > 1 << 24:
        raise ModelLoadError(f"expected at most {1 << 26} input values per sample, got shape {list(sample)}")
    if rank == 2:
        kind, layout = "vector", None
    elif rank == 3:
        kind, layout = "sequence", None
    else:
        kind, layout = "image", _layout(dims, input_layout, model.graph, value.name)
    if dtype == _UINT8 and kind != "image":
        raise ModelLoadError(
            f"expected uint8 inputs only for images (N, C, H, W) or (N, H, W, C), got a uint8 {kind} input of dims "
            f"{dims}; export the model with a float32 input"
        )
    if input_layout is not None and kind != "image":
        raise ModelLoadError(f"expected input_layout only for image inputs, got it for a {kind} input of dims {dims}")
    batch = dims[0]
    return InputSpec(
        name=value.name,
        dtype="uint8" if dtype == _UINT8 else "float32",
        kind=kind,
        sample_shape=sample,
        layout=layout,
        fixed_batch=batch if batch is not None and batch > 0 else None,
    )


# -- outputs ------------------------------------------------------------------------------------


def _producers(graph: Any) -> dict[str, Any]:
    return {name: node for node in graph.node for name in node.output if name}


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _labels_of(node: Any) -> tuple[str, ...]:
    for key in ("classlabels_int64s", "classlabels_ints", "classlabels_strings"):
        value = _attribute(node, key)
        if value is not None and len(value):
            return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(int(v)) for v in value)
    return ()


def _graph_class_labels(graph: Any) -> tuple[str, ...]:
    """Class labels the graph names: a ZipMap's keys, else an ai.onnx.ml classifier's labels."""
    for ops in (("ZipMap",), _ML_CLASSIFIERS):
        for node in graph.node:
            if node.op_type in ops and node.domain == "ai.onnx.ml":
                labels = _labels_of(node)
                if labels:
                    return labels
    return ()


def _value_type(value: Any) -> str:
    kind = value.type.WhichOneof("value")
    if kind == "tensor_type":
        dtype, rank = value.type.tensor_type.elem_type, len(value.type.tensor_type.shape.dim)
        if dtype in (_FLOAT, 10, _DOUBLE) and rank == 2:
            return "scores"
        if dtype in (_INT64, 6) and rank == 1:
            return "label"
        if dtype == _STRING and rank == 1:
            return "string-label"
        return f"{_DTYPE_NAMES.get(dtype, dtype)} tensor of rank {rank}"
    if kind == "sequence_type" and value.type.sequence_type.elem_type.WhichOneof("value") == "map_type":
        return "zipmap"
    return kind or "unknown"


def _kind_hint(name: str, producer: Any, producers: dict[str, Any]) -> str | None:
    """'probabilities' when the graph says so (a Softmax/Sigmoid, a classifier's post_transform), else None."""
    lowered = name.lower()
    if "prob" in lowered:
        return "probabilities"
    if "logit" in lowered:
        return "logits"
    seen = 0
    while producer is not None and seen < 4:  # look through a few shape-only ops
        if producer.op_type in _PROBABILITY_OPS:
            return "probabilities"
        if producer.op_type == "Normalizer" and _attribute(producer, "norm") in (b"L1", "L1"):
            return "probabilities"
        if producer.op_type in _ML_CLASSIFIERS:
            transform = _attribute(producer, "post_transform")
            if transform in (b"SOFTMAX", b"LOGISTIC", b"SOFTMAX_ZERO", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"):
                return "probabilities"
            if producer.op_type == "TreeEnsembleClassifier":  # votes averaged over trees: probabilities
                return "probabilities"
            return None
        if producer.op_type not in ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"):
            return None
        producer = producers.get(producer.input[0]) if producer.input else None
        seen += 1
    return None


def read_output(model: Any, *, output: str | None = None, num_classes: int | None = None) -> OutputSpec:
    """The chosen output as an :class:`OutputSpec` (``output``: a graph output name; None: the first that fits)."""
    graph = model.graph
    names = [v.name for v in graph.output]
    if not names:
        raise ModelLoadError("expected a classifier with at least one output, got none; the file is malformed")
    if len(set(names)) != len(names):
        raise ModelLoadError(f"expected distinct graph output names, got {names[:8]}; the file is malformed")
    types = {v.name: _value_type(v) for v in graph.output}
    if output is not None:
        if output not in types:
            raise ModelLoadError(f"expected output among the graph's outputs {names[:16]}, got {output!r}; pick one of them")
        chosen = output
    else:
        for wanted in ("scores", "zipmap", "label"):
            chosen = next((n for n in names if types[n] == wanted), None)
            if chosen is not None:
                break
        if chosen is None:
            raise ModelLoadError(
                f"expected a float (N, K) output, a ZipMap or an int64 label output, got outputs "
                f"{[(n, types[n]) for n in names][:8]}; export the classifier's scores as a float (N, K) tensor"
            )
    kind = types[chosen]
    producers = _producers(graph)
    value = next(v for v in graph.output if v.name == chosen)
    others = tuple(n for n in names if n != chosen)
    labels = _graph_class_labels(graph)
    if kind == "scores":
        dims = _dims(value)
        k = dims[1] if dims[1] is not None else (len(labels) or num_classes)
        return OutputSpec(chosen, "scores", k, labels, _kind_hint(chosen, producers.get(chosen), producers), chosen, others)
    if kind == "zipmap":
        node = producers.get(chosen)
        if node is None or node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" or not node.input:
            raise ModelLoadError(
                f"expected a sequence-of-maps output made by a ZipMap node, got {chosen!r} made by "
                f"{node.op_type if node is not None else 'no node'}; re-export the classifier with zipmap=False "
                "(skl2onnx: options={'zipmap': False}) so that it returns a float (N, K) tensor"
            )
        zip_labels = _labels_of(node)
        source = node.input[0]
        return OutputSpec(chosen, "zipmap", len(zip_labels) or None, zip_labels, "probabilities", source, others)
    if kind == "label":
        node = producers.get(chosen)
        own = _labels_of(node) if node is not None and node.op_type in _ML_CLASSIFIERS else ()
        labels = own or labels
        k = len(labels) or num_classes or _scores_width(graph, types)
        if not k:
            raise ModelLoadError(
                f"expected the classes of the label output {chosen!r} from the graph or the metadata, got none; "
                "declare class_names (the labels the output takes, in order)"
            )
        if labels and not all(_is_int(v) for v in labels):
            raise ModelLoadError(f"expected integer class labels for the int64 output {chosen!r}, got {list(labels)[:6]}")
        return OutputSpec(chosen, "label", k, labels, "probabilities", LABEL_OUTPUT, others)
    if kind == "string-label":
        raise ModelLoadError(
            f"expected a float (N, K) output, a ZipMap or an int64 label output, got the string label output {chosen!r}; "
            "choose the probabilities output instead (output=..., CLI --output), or train on integer class ids"
        )
    raise ModelLoadError(
        f"expected a float (N, K) output, a ZipMap or an int64 label output, got {chosen!r} ({kind}); "
        "pick another output with output=... (CLI --output) or export the classifier's scores as (N, K)"
    )


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _scores_width(graph: Any, types: dict[str, str]) -> int | None:
    for value in graph.output:
        if types[value.name] == "scores":
            width = _dims(value)[1]
            if width:
                return width
    return None


def read_signature(
    model: Any,
    *,
    output: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    input_layout: str | None = None,
    num_classes: int | None = None,
) -> Signature:
    """Input and chosen output of an ``onnx.ModelProto`` (ModelLoadError for what edgeguard refuses)."""
    return Signature(
        read_input(model, input_shape=input_shape, input_layout=input_layout),
        read_output(model, output=output, num_classes=num_classes),
    )


# -- the prepared graph ------------------------------------------------------------------------


def _ensure_opset(model: Any, version: int) -> int:
    """The default-domain opset, added (and the IR version raised) when the file imports none."""
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if current:
        return current
    entry = model.opset_import.add()
    entry.domain, entry.version = "", version
    model.ir_version = max(model.ir_version, 7)
    return version


def _fresh(graph: Any, hint: str) -> str:
    used = {name for node in graph.node for name in (*node.input, *node.output)}
    used |= {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    name, i = f"edgeguard_{hint}", 0
    while name in used:
        i += 1
        name = f"edgeguard_{hint}_{i}"
    return name


def prepare_graph(model: Any, signature: Signature, class_labels: tuple[str, ...] = ()) -> Any:
    """A copy of ``model`` whose only output is the chosen one, as a float (N, K) tensor.

    A ZipMap is cut off (its input is returned); an int64 label becomes a one-hot over
    ``class_labels`` (or the graph's labels, or 0..K-1), so every downstream stage sees
    (N, K) scores. The output is named ``signature.output.tensor_name`` (:data:`LABEL_OUTPUT`
    for a label output).
    """
    import onnx
    from onnx import TensorProto, helper

    spec = signature.output
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    graph = prepared.graph
    value = next(v for v in graph.output if v.name == spec.name)
    k = spec.num_classes
    if spec.type == "scores":
        keep = onnx.ValueInfoProto()
        keep.CopyFrom(value)
        del graph.output[:]
        graph.output.append(keep)
        return prepared
    if spec.type == "zipmap":
        node = next(n for n in graph.node if spec.name in n.output)
        graph.node.remove(node)
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(spec.tensor_name, TensorProto.FLOAT, ["N", k]))
        return prepared
    # label -> one-hot over the class labels (a label outside them gives a zero row: the simplex check refuses it)
    labels = class_labels or spec.class_labels or tuple(str(i) for i in range(k))
    if len(labels) != k:
        raise ModelLoadError(f"expected {k} class labels for the label output {spec.name!r}, got {len(labels)}")
    try:
        values = np.array([int(v) for v in labels], dtype=np.int64).reshape(1, k)
    except ValueError:
        raise ModelLoadError(
            f"expected integer class labels for the int64 output {spec.name!r}, got {list(labels)[:6]}; "
            "declare class_names as the integer labels the output takes"
        ) from None
    _ensure_opset(prepared, _ADDED_OPSET)
    opset = max(o.version for o in prepared.opset_import if o.domain in ("", "ai.onnx"))
    classes, column, equal = (_fresh(graph, h) for h in ("classes", "label_column", "label_equal"))
    one_hot = LABEL_OUTPUT
    if _fresh(graph, "label_one_hot") != one_hot:
        raise ModelLoadError(f"expected no tensor named {one_hot!r} in the graph (edgeguard's name), got one; rename it")
    graph.initializer.append(onnx.numpy_helper.from_array(values, classes))
    if opset >= 13:
        axes = _fresh(graph, "axes")
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
        graph.node.append(helper.make_node("Unsqueeze", [spec.name, axes], [column]))
    else:
        graph.node.append(helper.make_node("Unsqueeze", [spec.name], [column], axes=[1]))
    cast_label = spec.name
    if value.type.tensor_type.elem_type != _INT64:  # int32 labels
        cast_label = _fresh(graph, "label_int64")
        graph.node.append(helper.make_node("Cast", [column], [cast_label], to=TensorProto.INT64))
        column = cast_label
    graph.node.append(helper.make_node("Equal", [column, classes], [equal]))
    graph.node.append(helper.make_node("Cast", [equal], [one_hot], to=TensorProto.FLOAT))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(one_hot, TensorProto.FLOAT, ["N", k]))
    return prepared


# -- values -------------------------------------------------------------------------------------


def zipmap_to_array(rows: Any, class_labels: tuple[Any, ...] | None = None) -> np.ndarray:
    """onnxruntime's ZipMap result (a list of {label: probability}) as a float32 (N, K) array in class order.

    ``class_labels`` fixes the column order (the ZipMap's keys, in the classifier's order);
    by default the first row's key order. A row with other keys is refused.
    """
    rows = list(rows)
    if not rows:
        return np.zeros((0, len(class_labels or ())), dtype=np.float32)
    keys = list(class_labels) if class_labels is not None else list(rows[0].keys())
    lookup = {str(key): key for key in rows[0].keys()}
    try:
        ordered = [lookup[str(key)] for key in keys]
    except KeyError:
        raise ModelLoadError(f"expected ZipMap keys {keys[:6]}, got {list(rows[0].keys())[:6]}") from None
    out = np.empty((len(rows), len(keys)), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row) != len(keys):
            raise ModelLoadError(f"expected {len(keys)} ZipMap entries per row, got {len(row)} in row {i}")
        out[i] = [row[key] for key in ordered]
    return out


def looks_like_probabilities(values: np.ndarray, task_type: str = "multiclass", tolerance: float = 1e-3) -> bool:
    """True when every row is a probability vector: entries in [0, 1], rows summing to 1 (multiclass).

    Needs at least two rows that are not all one-hot-identical: a constant output proves nothing.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) < 2 or not np.all(np.isfinite(values)):
        return False
    if values.min() < -tolerance or values.max() > 1 + tolerance:
        return False
    if task_type == "multilabel":
        return True
    return bool(np.abs(values.sum(axis=1) - 1.0).max() <= tolerance)


# -- fixed batch sizes ----------------------------------------------------------------------------


def fixed_batches(batch: np.ndarray, size: int) -> list[tuple[np.ndarray, int]]:
    """``batch`` cut into chunks of exactly ``size`` rows: (chunk, rows that are real).

    The last chunk is padded with copies of its last real row (valid inputs, so the model
    runs as on real data); callers keep the first ``rows`` of each chunk's release.
    """
    chunks: list[tuple[np.ndarray, int]] = []
    for start in range(0, len(batch), size):
        chunk = batch[start : start + size]
        rows = len(chunk)
        if rows < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - rows, axis=0)])
        chunks.append((np.ascontiguousarray(chunk), rows))
    return chunks


def stitch(parts: list[tuple[Any, int]]) -> np.ndarray:
    """The releases of :func:`fixed_batches` chunks, padding dropped, in order."""
    return np.concatenate([np.asarray(part)[:rows] for part, rows in parts])
