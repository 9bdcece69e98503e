"""Dynamic-op analysis: which nodes' run time or output size is not fixed by the file."""

from __future__ import annotations

import math
from typing import Any

from edgeguard.model.limits import BYTES_PER_ELEMENT, DEFAULT_MAX_TENSOR_BYTES, MAX_RANGE, MAX_REPEATS, elements

__all__ = ["unbounded_ops", "CONTROL_FLOW_OPS", "DYNAMIC_SIZE_OPS"]

#: Control flow: run time is data dependent (a Loop's trip count is an input).
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
#: Ops whose output size comes from a tensor input: position(s) of those inputs.
DYNAMIC_SIZE_OPS: dict[str, tuple[int, ...]] = {
    "ConstantOfShape": (0,),
    "Expand": (1,),
    "Tile": (1,),
    "Range": (0, 1, 2),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Pad": (1,),
    "OneHot": (1,),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "MaxUnpool": (2,),
    "DFT": (1,),
    "STFT": (1, 3),
    "SplitToSequence": (1,),
    "SequenceEmpty": (),
    "SequenceInsert": (),
    "ConcatFromSequence": (),
    "StringSplit": (),
}
#: Ops whose output size comes from an attribute (checked against the limits).
_ATTRIBUTE_SHAPE_OPS = {"RandomNormal": "shape", "RandomUniform": "shape"}


def _constants(graph: Any) -> dict[str, Any]:
    """Constant tensors of one graph scope: initializers not overridable as inputs, Constant nodes."""
    inputs = {value.name for value in graph.input}
    values = {init.name: init for init in graph.initializer if init.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    values[node.output[0]] = attribute.t
    return values


def _small_array(tensor: Any) -> Any:
    """A small constant as a numpy array (None when it is large, external or unreadable)."""
    from onnx import numpy_helper

    if tensor.data_location == 1 or len(tensor.external_data) or elements(tensor.dims, tensor.name) > 64:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:
        return None


def _bounded(op: str, arrays: dict[int, Any], node: Any, max_tensor_bytes: int) -> str | None:
    """Why a dynamic-size op with all-constant size inputs is still too large (None when bounded)."""
    import numpy as np

    try:
        if op in ("ConstantOfShape", "Expand"):
            shape = [int(v) for v in np.asarray(arrays[0 if op == "ConstantOfShape" else 1]).reshape(-1)]
            if any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) * BYTES_PER_ELEMENT > max_tensor_bytes:
                return f"{op} asking for shape {shape[:8]}"
            return None
        if op == "Tile":
            repeats = [int(v) for v in np.asarray(arrays[1]).reshape(-1)]
            if any(r < 0 for r in repeats) or math.prod(repeats) > MAX_REPEATS:
                return f"Tile with repeats {repeats[:8]}"
            return None
        if op == "Range":
            start, limit, delta = (float(np.asarray(arrays[i]).reshape(-1)[0]) for i in (0, 1, 2))
            if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
                return f"Range({start}, {limit}, {delta})"
            if max(0.0, math.ceil((limit - start) / delta)) > MAX_RANGE:
                return f"Range({start}, {limit}, {delta})"
            return None
        if op in ("Resize", "Upsample"):
            scales = arrays.get(2 if op == "Resize" else 1)
            sizes = arrays.get(3) if op == "Resize" else None
            if sizes is not None and np.asarray(sizes).size:
                values = [int(v) for v in np.asarray(sizes).reshape(-1)]
                if any(v < 0 for v in values) or math.prod(values) * 4 > max_tensor_bytes:
                    return f"{op} to sizes {values[:8]}"
            if scales is not None and np.asarray(scales).size:
                values = [float(v) for v in np.asarray(scales).reshape(-1)]
                if not all(math.isfinite(v) and 0 <= v for v in values) or math.prod(values) > MAX_REPEATS:
                    return f"{op} by scales {values[:8]}"
            return None
        if op == "Pad":
            pads = [int(v) for v in np.asarray(arrays[1]).reshape(-1)]
            if any(abs(p) > MAX_REPEATS for p in pads):
                return f"Pad with pads {pads[:8]}"
            return None
        if op == "OneHot":
            depth = float(np.asarray(arrays[1]).reshape(-1)[0])
            if not math.isfinite(depth) or not 0 < depth <= 1 << 16:
                return f"OneHot with depth {depth}"
            return None
    except (KeyError, IndexError, ValueError, TypeError, OverflowError):
        return f"{op} with unreadable size inputs"
    return f"{op} (its output size is computed at run time)"


def unbounded_ops(model: Any, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> list[str]:
    """Descriptions of the nodes whose run time or output size is not fixed by the file.

    Control flow always counts; a shape-taking op (ConstantOfShape, Expand, Tile, Range,
    Resize, Pad, OneHot ...) counts unless every size input is a small constant within
    the limits. Subgraphs and model-local functions are searched too.
    """
    problems: list[str] = []

    def visit(graph_nodes: Any, constants: dict[str, Any], where: str, depth: int) -> None:
        if depth > 64:
            problems.append(f"subgraphs nested deeper than 64 ({where})")
            return
        for node in graph_nodes:
            op = node.op_type
            label = f"{op} node {(node.name or (node.output[0] if node.output else ''))[:60]!r}{where}"
            standard = node.domain in ("", "ai.onnx")
            if standard and op in CONTROL_FLOW_OPS:
                problems.append(f"control flow ({label})")
            elif standard and op in DYNAMIC_SIZE_OPS:
                positions = [p for p in DYNAMIC_SIZE_OPS[op] if p < len(node.input) and node.input[p]]
                arrays = {}
                for position in positions:
                    tensor = constants.get(node.input[position])
                    arrays[position] = None if tensor is None else _small_array(tensor)
                if op in ("Resize", "Upsample") and positions:
                    dynamic = any(arrays[p] is None for p in positions if p >= (1 if op == "Upsample" else 2))
                else:
                    dynamic = not positions or any(value is None for value in arrays.values())
                why = f"{op} fed by a run-time size" if dynamic else _bounded(op, arrays, node, max_tensor_bytes)
                if why is not None:
                    problems.append(f"{why} ({label})")
            elif standard and op in _ATTRIBUTE_SHAPE_OPS and _ATTRIBUTE_SHAPE_OPS[op]:
                for attribute in node.attribute:
                    if (
                        attribute.name == "shape"
                        and math.prod(max(d, 1) for d in attribute.ints) * 8 > max_tensor_bytes
                    ):
                        problems.append(f"{op} asking for shape {list(attribute.ints)[:8]} ({label})")
            for attribute in node.attribute:
                subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
                for subgraph in subgraphs:
                    visit(subgraph.node, {**constants, **_constants(subgraph)}, f" inside {op}", depth + 1)

    visit(model.graph.node, _constants(model.graph), "", 0)
    for function in model.functions:
        local: dict[str, Any] = {}
        for node in function.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                for attribute in node.attribute:
                    if attribute.name == "value" and attribute.HasField("t"):
                        local[node.output[0]] = attribute.t
        visit(function.node, local, f" in function {function.name[:40]!r}", 0)
    return problems
