"""Static audit of an ONNX file: what can be learned before anything in it runs.

The file is read once by :func:`edgeguard.model.load_model`, which checks every
external-data reference before opening it and every declared size before allocating, so
a hostile file cannot make the vet open files outside the model's folder, block on a
FIFO or allocate huge tensors. It reports:

- ``onnx-invalid`` (critical): the bytes are not an ONNX model;
- ``external-data-escape`` (critical): external data outside the model's folder, or not a
  regular file (FIFO, device, hard link), or a malformed location;
- ``unbounded-op`` (critical): control flow or ops whose output size is computed at run
  time (SafeModel refuses them by default, so the vet does not run them);
- ``tensor-too-large`` (critical): a declared tensor (initializer, graph value, constant
  shape) larger than ``max_tensor_bytes``; ``initializers-too-large`` for their sum;
- ``checker-failed`` (high): ``onnx.checker`` rejects the model;
- ``custom-domain`` (high): operators from a domain onnxruntime does not ship (native code
  would have to be loaded to run them; the fine-tune interpreter cannot run them);
- ``control-flow`` (high): If / Loop / Scan, behaviour that can depend on the input in
  ways a few probe samples never trigger, and that the fine-tune test cannot follow;
- ``non-differentiable-op`` (high): Round, Floor, Cast to an integer, ArgMax ... on a path
  from the input or the weights to the output: the fine-tune test sees no gradient there;
- ``random-op`` (medium), ``comparison-op`` (low), ``multiple-outputs`` (medium),
  ``no-metadata`` (low), ``probabilities-without-softmax`` (medium), ``external-data``
  (info), ``model-size`` (info).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError, UnsafeModelError
from edgeguard.model.limits import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES, itemsize_bound
from edgeguard.vetting.output_path import output_path_findings
from edgeguard.vetting.report import Finding

__all__ = ["static_audit", "NON_DIFFERENTIABLE_OPS"]

_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"}
_ORT_DOMAINS = {"com.microsoft", "com.microsoft.nchwc", "com.microsoft.mlfeaturizers"}
_CONTROL_FLOW_OPS = {"If", "Loop", "Scan", "SequenceMap"}
#: Ops whose output carries no gradient back to their (first) input.
NON_DIFFERENTIABLE_OPS = frozenset(
    {
        "Round",
        "Floor",
        "Ceil",
        "Sign",
        "ArgMax",
        "ArgMin",
        "Hardmax",
        "Mod",
        "BitShift",
        "BitwiseAnd",
        "BitwiseOr",
        "BitwiseXor",
        "BitwiseNot",
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "NonZero",
        "Unique",
        "OneHot",
        "IsNaN",
        "IsInf",
        "StringNormalizer",
        "TfIdfVectorizer",
    }
)
_COMPARISON_OPS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Not"}
_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
_SHAPE_OPS = {"Shape", "Size"}  # their outputs depend on shapes only, never on values
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_SHAPE_INPUT_OPS = {"ConstantOfShape": 0, "Expand": 1, "Tile": 1, "Reshape": 1}


def static_audit(
    path: str | os.PathLike,
    *,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[Finding]:
    """Audit an ONNX file without running it; the findings, most severe first.

    Raises :class:`ModelLoadError` only when there is no file at ``path``; every other
    problem (garbage bytes, path traversal, ...) is a finding.
    """
    findings, _ = _audit(Path(path), max_tensor_bytes, max_total_bytes)
    return sorted(findings, key=lambda f: -f.rank)


def _audit(path: Path, max_tensor_bytes: int, max_total_bytes: int) -> tuple[list[Finding], Any]:
    """Findings plus the :class:`~edgeguard.model.LoadedModel` (None when the file cannot be loaded).

    The file is read once by :func:`edgeguard.model.load_model`, which checks every
    external-data reference (inside the folder, regular file, offsets) before reading it;
    the checker then runs on the in-memory proto, so the result does not depend on the
    working directory.
    """
    from edgeguard.model import load_model, unbounded_ops

    if not path.is_file():
        raise ModelLoadError(f"expected an ONNX file at {path}, but there is none; check the path")
    findings: list[Finding] = []
    try:
        loaded = load_model(
            path,
            allow_dynamic_ops=True,
            require_info=False,
            max_tensor_bytes=max_tensor_bytes,
            max_total_bytes=max_total_bytes,
        )
    except UnsafeModelError as error:
        findings.append(
            Finding(
                "external-data-escape",
                "critical",
                str(error),
                "do not run this file; ask the provider for a model whose external data are regular files next to it",
                str(path),
            )
        )
        return findings, None
    except ModelTooLargeError as error:
        findings.append(
            Finding(
                "initializers-too-large" if getattr(error, "total", False) else "tensor-too-large",
                "critical",
                str(error),
                "do not run this file on this device; if it is legitimately that large, raise --max-tensor-bytes",
                str(path),
            )
        )
        return findings, None
    except ModelLoadError as error:
        findings.append(
            Finding(
                "onnx-invalid",
                "critical",
                str(error),
                "the file is not an ONNX model (truncated download or wrong file?); fetch it again",
                str(path),
            )
        )
        return findings, None
    model = loaded.proto
    if not model.HasField("graph") or not model.graph.output:
        findings.append(
            Finding(
                "onnx-invalid",
                "critical",
                f"expected an ONNX model with a graph and outputs, got none in {path}",
                "the file is not an ONNX model (truncated download or wrong file?); fetch it again",
                str(path),
            )
        )
        return findings, None
    findings += _size_findings(model, path, max_tensor_bytes, max_total_bytes, len(loaded.external_files))
    if any(f.severity == "critical" for f in findings):
        return findings, loaded
    findings += _checker_findings(model, path)
    findings += _node_findings(model)
    findings += _interface_findings(model)
    findings += shape_flow_findings(model)
    findings += output_path_findings(model)
    for problem in unbounded_ops(model, max_tensor_bytes):
        findings.append(
            Finding(
                "unbounded-op",
                "critical",
                f"expected a graph whose run time and sizes are fixed before it runs, got {problem}",
                "the vet does not run it and SafeModel refuses it by default (allow_dynamic_ops=True runs it "
                "under a deadline); ask for a plain feed-forward export",
                str(path),
            )
        )
    return findings, loaded


# -- sizes -------------------------------------------------------------------------------


def _tensor_bytes(tensor: Any) -> int:
    """Declared bytes of a TensorProto (its dims), or the external 'length' when larger."""
    count = math.prod(int(d) for d in tensor.dims) if len(tensor.dims) else 1
    declared = count * itemsize_bound(tensor.data_type)
    external = 0
    for entry in tensor.external_data:
        if entry.key == "length" and entry.value.isdigit():
            external = int(entry.value)
    return max(declared, external, len(tensor.raw_data))


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} PiB"  # unreachable


def _size_findings(
    model: Any, path: Path, max_tensor_bytes: int, max_total_bytes: int, external_files: int = 0
) -> list[Finding]:
    from edgeguard.model import iter_tensors

    findings: list[Finding] = []
    tensors = list(iter_tensors(model))
    total = 0
    fix = "do not run this file on this device; if it is legitimately that large, raise --max-tensor-bytes"
    for tensor in tensors:
        size = _tensor_bytes(tensor)
        total += size
        if size > max_tensor_bytes:
            findings.append(
                Finding(
                    "tensor-too-large",
                    "critical",
                    f"expected tensors of at most {_human(max_tensor_bytes)}, got {_human(size)} "
                    f"declared for {tensor.name!r} (dims {list(tensor.dims)})",
                    fix,
                    tensor.name,
                )
            )
    if total > max_total_bytes:
        findings.append(
            Finding(
                "initializers-too-large",
                "critical",
                f"expected at most {_human(max_total_bytes)} of weights, got {_human(total)} declared",
                fix,
                str(path),
            )
        )
    # shapes declared on graph values, and constant shapes fed to ConstantOfShape/Expand/Tile/Reshape
    constants = _constant_values(model)
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value")]
        if len(dims) != len(tensor_type.shape.dim) or not dims:
            continue
        size = math.prod(dims) * itemsize_bound(tensor_type.elem_type)
        if size > max_tensor_bytes:
            findings.append(
                Finding(
                    "tensor-too-large",
                    "critical",
                    f"expected graph values of at most {_human(max_tensor_bytes)}, got shape {dims} "
                    f"({_human(size)}) declared for {value.name!r}",
                    fix,
                    value.name,
                )
            )
    for node in _walk_nodes(model.graph):
        position = _SHAPE_INPUT_OPS.get(node.op_type)
        if position is None or len(node.input) <= position or node.input[position] not in constants:
            continue
        shape = constants[node.input[position]]
        if shape is None or not shape or any(d < 0 for d in shape):
            continue
        size = math.prod(max(d, 1) for d in shape) * 4
        if node.op_type == "Tile":
            size = math.prod(max(d, 1) for d in shape) * 4  # a lower bound: repeats times at least one float
        if size > max_tensor_bytes:
            findings.append(
                Finding(
                    "tensor-too-large",
                    "critical",
                    f"expected constant shapes of at most {_human(max_tensor_bytes)}, got {node.op_type} "
                    f"{node.name!r} asking for shape {shape} (>= {_human(size)})",
                    fix,
                    node.name or node.output[0],
                )
            )
    if external_files:
        findings.append(
            Finding(
                "external-data",
                "info",
                f"tensors are stored in {external_files} external file(s) next to the model (all inside its folder, "
                "hashed with it)",
                "keep the data files next to the model and hash them too when you pin a vetted version",
                str(path),
            )
        )
    findings.append(
        Finding("model-size", "info", f"{len(tensors)} stored tensor(s), {_human(total)} declared", "", str(path))
    )
    return findings


def _constant_values(model: Any) -> dict[str, list[int] | None]:
    """Small integer constants (initializers and Constant nodes), for shape checks."""
    from onnx import numpy_helper

    values: dict[str, list[int] | None] = {}

    def read(tensor: Any) -> list[int] | None:
        if tensor.data_type not in (6, 7) or math.prod(tensor.dims) > 16 or tensor.external_data:
            return None
        try:
            return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
        except Exception:
            return None

    for init in model.graph.initializer:
        values[init.name] = read(init)
    for node in _walk_nodes(model.graph):
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = read(attribute.t)
    return values


# -- checker -----------------------------------------------------------------------------


def _checker_findings(model: Any, path: Path) -> list[Finding]:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as error:  # ValidationError and friends
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [
            Finding(
                "checker-failed",
                "high",
                f"expected a model that passes onnx.checker, got: {first_line}",
                "re-export the model with a current exporter; run `python -m onnx.checker` on it for details",
                str(path),
            )
        ]
    return []


# -- nodes ---------------------------------------------------------------------------------


def _walk_nodes(graph: Any) -> Iterable[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        yield from _walk_nodes_below(node)


def _cast_target(node: Any) -> int | None:
    for attribute in node.attribute:
        if attribute.name == "to":
            return int(attribute.i)
    return None


def _node_findings(model: Any) -> list[Finding]:
    graph = model.graph
    local_functions = {(f.domain, f.name) for f in model.functions}
    findings: list[Finding] = []
    # value dependence: tensors computed from the image input or from float weights
    initializers = {init.name: init for init in graph.initializer}
    dependent = {v.name for v in graph.input if v.name not in initializers}
    dependent |= {name for name, init in initializers.items() if init.data_type in _FLOAT_TYPES}
    for node in graph.node:  # graph nodes are topologically sorted (the checker enforces it)
        if node.op_type in _SHAPE_OPS:
            continue
        if any(name in dependent for name in node.input) or node.op_type in _CONTROL_FLOW_OPS:
            dependent.update(node.output)
    ancestors = _ancestors(graph)
    seen_domains: set[str] = set()
    visits = []  # (node, on the output path at top level, inside a subgraph)
    for index, top in enumerate(graph.node):
        visits.append((top, index in ancestors, False))
        visits += [(inner, False, True) for inner in _walk_nodes_below(top)]
    for node, top_level, inside_subgraph in visits:
        label = node.name or (node.output[0] if node.output else node.op_type)
        if node.domain not in _STANDARD_DOMAINS and (node.domain, node.op_type) not in local_functions:
            if node.domain not in seen_domains:
                seen_domains.add(node.domain)
                severity = "medium" if node.domain in _ORT_DOMAINS else "high"
                findings.append(
                    Finding(
                        "custom-domain",
                        severity,
                        f"expected operators from the standard ONNX domains, got {node.op_type!r} from "
                        f"domain {node.domain!r}"
                        + (" (onnxruntime contrib op)" if severity == "medium" else " (needs a custom op library)"),
                        "ask the provider for a model built from standard ONNX operators; never load an "
                        "operator library you were sent with a model",
                        label,
                    )
                )
        if node.op_type in _CONTROL_FLOW_OPS:
            findings.append(
                Finding(
                    "control-flow",
                    "high",
                    f"found control flow ({node.op_type} {label!r}): the output can switch behaviour on inputs "
                    "the probe set never shows, and the fine-tune test cannot follow it",
                    "ask for a plain feed-forward export (no If/Loop/Scan); classifiers do not need control flow",
                    label,
                )
            )
        on_path = top_level and any(name in dependent for name in node.input)
        if node.op_type in NON_DIFFERENTIABLE_OPS or (
            node.op_type == "Cast" and _cast_target(node) not in _FLOAT_TYPES | {None}
        ):
            if on_path or inside_subgraph:
                what = (
                    node.op_type if node.op_type != "Cast" else f"Cast to an integer/bool type ({_cast_target(node)})"
                )
                findings.append(
                    Finding(
                        "non-differentiable-op",
                        "high",
                        f"found {what} ({label!r}) between the input or weights and the output: it passes no "
                        "gradient, so the fine-tune test is blind to everything computed before it",
                        "ask the provider why a classifier rounds or discretises values; treat the fine-tune "
                        "score of this model as unreliable and rely on the leakage audit",
                        label,
                    )
                )
        elif node.op_type in _RANDOM_OPS and (top_level or inside_subgraph):
            findings.append(
                Finding(
                    "random-op",
                    "medium",
                    f"found {node.op_type} ({label!r}) on the path to the output: the model's outputs are random",
                    "an inference model should be deterministic; ask the provider why it draws random numbers",
                    label,
                )
            )
        elif node.op_type in _COMPARISON_OPS and on_path:
            findings.append(
                Finding(
                    "comparison-op",
                    "low",
                    f"found {node.op_type} ({label!r}) on values computed from the input: a data-dependent switch",
                    "usually harmless (masks, clamps); check that it is part of a standard layer",
                    label,
                )
            )
    return findings


def _walk_nodes_below(node: Any) -> Iterable[Any]:
    """Every node inside the subgraphs of ``node`` (none for ordinary ops)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield from _walk_nodes(attribute.g)
        for subgraph in attribute.graphs:
            yield from _walk_nodes(subgraph)


def _ancestors(graph: Any) -> set[int]:
    """Indices of the top-level nodes that the graph outputs depend on."""
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            producer[name] = index
    seen: set[int] = set()
    queue = deque(producer[v.name] for v in graph.output if v.name in producer)
    while queue:
        index = queue.popleft()
        if index in seen:
            continue
        seen.add(index)
        node = nodes[index]
        inputs = list(node.input)
        for attribute in node.attribute:  # subgraphs read outer tensors by name
            subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
            for subgraph in subgraphs:
                inputs += [name for inner in _walk_nodes(subgraph) for name in inner.input]
        for name in inputs:
            if name in producer:
                queue.append(producer[name])
    return seen


# -- interface -----------------------------------------------------------------------------


def _interface_findings(model: Any) -> list[Finding]:
    from edgeguard.model import METADATA_KEYS

    findings: list[Finding] = []
    graph = model.graph
    props = {entry.key: entry.value for entry in model.metadata_props}
    missing = [key for key in METADATA_KEYS if key not in props]
    if missing:
        findings.append(
            Finding(
                "no-metadata",
                "low",
                f"the model does not declare {missing} in its metadata_props; the vet falls back to defaults "
                "(classes from the output size, pixels in [0, 1], logits)",
                "pass --class-names / --pixel-range / --output-kind, or ask the provider to declare the task",
                "metadata_props",
            )
        )
    if len(graph.output) > 1:
        findings.append(
            Finding(
                "multiple-outputs",
                "medium",
                f"expected one output (the class scores), got {len(graph.output)}: {[v.name for v in graph.output]}",
                "only the chosen output is vetted and released (SafeModel output= / vet --model-output; default: "
                "the first (N, K) scores, else a ZipMap, else a label); the others are cut from the graph that runs",
                graph.output[1].name,
            )
        )
    if props.get("output_kind") == "probabilities":
        producer = {name: node for node in graph.node for name in node.output}
        last = producer.get(graph.output[0].name)
        if last is None or last.op_type not in ("Softmax", "Sigmoid"):
            findings.append(
                Finding(
                    "probabilities-without-softmax",
                    "medium",
                    "the model declares output_kind=probabilities but its graph does not end with Softmax/"
                    f"Sigmoid (last op: {last.op_type if last is not None else 'none'})",
                    "check that the outputs really are normalised probabilities before sharing them",
                    graph.output[0].name,
                )
            )
    return findings


# -- value flow from the input's shape into the outputs (issue 10, added by the vet v2 work) -------------

#: Inputs of these ops (by position) are shape arguments: values flowing into them shape the
#: result but never become its values (Reshape/Flatten-like ops, slicing, padding, broadcasting).
_SHAPE_ARGUMENTS = {
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "ConstantOfShape": {0},
    "Slice": {1, 2, 3, 4},
    "Pad": {1, 3},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Resize": {1, 2, 3},
    "ReduceSum": {1},
    "ReduceMean": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "Split": {1},
}


def _shape_tainted(nodes: Any, tainted: set[str], functions: dict[tuple[str, str], Any]) -> set[str]:
    """Names whose *values* depend on a Shape/Size output, through ``nodes`` (topologically sorted)."""
    tainted = set(tainted)
    for node in nodes:
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx"):
            tainted.update(node.output)
            continue
        arguments = _SHAPE_ARGUMENTS.get(node.op_type, set()) if node.domain in ("", "ai.onnx") else set()
        feeding = [i for i, name in enumerate(node.input) if name and name in tainted and i not in arguments]
        function = functions.get((node.domain, node.op_type))
        if function is not None:  # a model-local function: follow its body
            inner_tainted = {function.input[i] for i in feeding if i < len(function.input)}
            inner = _shape_tainted(function.node, inner_tainted, functions)
            for outer, inner_name in zip(node.output, function.output):
                if inner_name in inner:
                    tainted.add(outer)
        elif feeding:
            tainted.update(name for name in node.output if name)
    return tainted


def shape_flow_findings(model: Any) -> list[Finding]:
    """A high finding when a graph output's values depend on the input's Shape/Size.

    Exported classifiers use shapes only as arguments of Reshape/Flatten-like ops; a value
    computed from the batch size (``Where(Equal(Shape(x)[0], 1), a, b)``) lets a model
    behave one way in the vet's batches and another in an app's single-image calls.
    Model-local functions are followed. Reductions over the batch axis without any Shape
    op are left to the vet's dynamic consistency test.
    """
    functions = {(f.domain, f.name): f for f in model.functions}
    tainted = _shape_tainted(model.graph.node, set(), functions)
    hit = [output.name for output in model.graph.output if output.name in tainted]
    if not hit:
        return []
    return [
        Finding(
            "shape-value-flow",
            "high",
            f"the values of output(s) {hit} depend on the input's shape (Shape/Size), not only on its pixels: "
            "the model can behave differently for different batch sizes",
            "do not use this model; a classifier's per-image outputs never depend on the batch size",
            ", ".join(hit),
        )
    ]
