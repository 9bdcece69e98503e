"""Structure-aware and byte-level mutators of ONNX model files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.fuzz.corpus import INTERESTING_INTS
from tools.fuzz.hostile import loop_node, runtime_sized_nodes

# -- structure-aware model mutators -------------------------------------------------------------------


@dataclass
class Setup:
    """Files to create in the sandbox besides the model: (relative path, kind, payload)."""

    files: list[tuple[str, str, Any]] = field(default_factory=list)
    secret: str = "/nonexistent/secret.bin"  # absolute path of the sandbox's outside/secret.bin


def _tensors(proto: Any) -> list[Any]:
    from edgeguard.model import iter_tensors

    try:
        return list(iter_tensors(proto))
    except Exception:
        return list(proto.graph.initializer)


def _all_nodes(proto: Any) -> list[Any]:
    nodes = []

    def walk(graph_nodes: Any, depth: int) -> None:
        for node in graph_nodes:
            nodes.append(node)
            if depth < 4:
                for attribute in node.attribute:
                    if attribute.HasField("g"):
                        walk(attribute.g.node, depth + 1)
                    for graph in attribute.graphs:
                        walk(graph.node, depth + 1)

    walk(proto.graph.node, 0)
    for function in proto.functions:
        walk(function.node, 1)
    return nodes


def _interesting(rng: random.Random) -> int:
    return rng.choice(INTERESTING_INTS) if rng.random() < 0.8 else rng.randint(-(1 << 40), 1 << 40)


def m_dims(proto: Any, rng: random.Random, setup: Setup) -> str:
    values = list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)
    if rng.random() < 0.5 and values:
        value = rng.choice(values)
        dims = value.type.tensor_type.shape.dim
        if dims and rng.random() < 0.8:
            dim = rng.choice(dims)
            if rng.random() < 0.2:
                dim.dim_param = rng.choice(["N", "", "x" * 300])
            else:
                dim.dim_value = max(_interesting(rng), 0) if rng.random() < 0.7 else abs(_interesting(rng))
        else:
            value.type.tensor_type.shape.dim.add().dim_value = _interesting(rng) & 0xFFFFFFFF
        return f"dims of value {value.name}"
    tensors = _tensors(proto)
    if not tensors:
        return "no tensor"
    tensor = rng.choice(tensors)
    if tensor.dims and rng.random() < 0.8:
        tensor.dims[rng.randrange(len(tensor.dims))] = _interesting(rng)
    else:
        tensor.dims.append(_interesting(rng))
    return f"dims of tensor {tensor.name}"


def m_attribute(proto: Any, rng: random.Random, setup: Setup) -> str:
    from onnx import helper

    nodes = [n for n in _all_nodes(proto) if n.attribute] or _all_nodes(proto)
    if not nodes:
        return "no node"
    node = rng.choice(nodes)
    choice = rng.random()
    if not node.attribute or choice < 0.15:
        name = rng.choice(["axis", "pads", "kernel_shape", "strides", "dilations", "group", "to", "perm", "bogus"])
        node.attribute.append(helper.make_attribute(name, rng.choice([[_interesting(rng)] * 4, _interesting(rng)])))
        return f"added attribute {name} to {node.op_type}"
    attribute = rng.choice(node.attribute)
    if choice < 0.3:
        node.attribute.remove(attribute)
        return f"removed {attribute.name} of {node.op_type}"
    if attribute.ints:
        attribute.ints[rng.randrange(len(attribute.ints))] = _interesting(rng)
    elif attribute.type == attribute.INT:
        attribute.i = _interesting(rng)
    elif attribute.type == attribute.FLOAT:
        attribute.f = rng.choice([float("nan"), float("inf"), -1e30, 0.0, 1e-45])
    elif attribute.floats:
        attribute.floats[rng.randrange(len(attribute.floats))] = rng.choice([float("nan"), 1e30, -1.0])
    elif attribute.HasField("t"):
        attribute.t.dims.append(_interesting(rng))
    else:
        attribute.type = rng.randint(0, 14)
    return f"attribute {attribute.name} of {node.op_type}"


_LOCATIONS = (
    "ok",
    "../outside/secret.bin",
    "/dev/zero",
    "ABS_SECRET",
    "fifo.bin",
    "link-outside.bin",
    "link-zero.bin",
    "hard.bin",
    "canary.bin",
    "../cwd/canary.bin",
    "dir.bin",
    "nul\0.bin",
    "x" * 300,
    "sub/../../outside/secret.bin",
    "./ok.bin",
    "ok.bin/",
    "C:\\secret.bin",
    "\\\\server\\share",
    "link-dir/secret.bin",
)


def m_external(proto: Any, rng: random.Random, setup: Setup) -> str:
    from onnx import TensorProto

    tensors = [t for t in _tensors(proto) if t.data_type in (1, 6, 7, 10, 11)]
    if not tensors:
        return "no tensor"
    tensor = rng.choice(tensors)
    data = tensor.raw_data
    if not data:
        from onnx import numpy_helper

        try:
            data = numpy_helper.to_array(tensor).tobytes()
        except Exception:
            data = b"\0" * 16
    for name in ("float_data", "int32_data", "int64_data", "double_data", "raw_data"):
        tensor.ClearField(name)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    where = rng.choice(_LOCATIONS)
    location = {"ok": "ok.bin", "ABS_SECRET": setup.secret}.get(where, where)
    offset, length = "0", str(len(data))
    trick = rng.random()
    if trick < 0.1:
        offset = rng.choice(["-1", "abc", "1e3", str(1 << 62), "", " 0", "0x10", "99999999999999999999999"])
    elif trick < 0.2:
        length = rng.choice(["-1", "abc", str(len(data) * 10), "0", str(1 << 40), ""])
    elif trick < 0.25:
        offset = str(rng.randint(1, 64))
    entries = [("location", location), ("offset", offset), ("length", length)]
    if rng.random() < 0.05:
        entries.append((rng.choice(["location", "checksum", "basepath", "bogus"]), rng.choice(["x", "../y"])))
    if rng.random() < 0.05:
        entries = entries[1:]  # no location
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    payload = data if rng.random() > 0.1 else data[: len(data) // 2]  # sometimes truncated
    setup.files.append((where, "external", payload))
    return f"external data {where!r} for {tensor.name} (offset {offset!r}, length {length!r})"


_METADATA_VALUES = (
    "[1, 28]",
    "[1e999, 28, 28]",
    "[1, 28, 28, 1]",
    "[0, 28, 28]",
    "[-1, 28, 28]",
    "[1, 100000, 100000]",
    "[true, 28, 28]",
    '["1", "28", "28"]',
    "[" * 50000 + "]" * 50000,
    "{}",
    "null",
    "",
    "not json",
    "[1.5, 28, 28]",
    '{"a": 1}',
    "[]",
    "[0.0, 1.0]",
    "[1.0, 0.0]",
    "[NaN, 1]",
    "[0, Infinity]",
    json.dumps([f"c{i}" for i in range(11)]),
    json.dumps(["a"] * 10),
    json.dumps(list(range(10))),
    json.dumps([[1]] * 10),
    "multilabel",
    "probabilities",
    "x" * 100000,
)


def m_metadata(proto: Any, rng: random.Random, setup: Setup) -> str:
    from edgeguard.model import METADATA_KEYS

    key = rng.choice(METADATA_KEYS)
    value = rng.choice(_METADATA_VALUES)
    for entry in proto.metadata_props:
        if entry.key == key:
            if rng.random() < 0.2:
                proto.metadata_props.remove(entry)
                return f"removed metadata {key}"
            entry.value = value
            break
    else:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if rng.random() < 0.1:  # a duplicate key
        extra = proto.metadata_props.add()
        extra.key, extra.value = key, rng.choice(_METADATA_VALUES)
    return f"metadata {key}={value[:30]!r}"


_OPS = (
    "Identity",
    "Relu",
    "Softmax",
    "Round",
    "Loop",
    "If",
    "Scan",
    "ConstantOfShape",
    "Tile",
    "Expand",
    "Range",
    "Resize",
    "Reshape",
    "Shape",
    "NonZero",
    "Unique",
    "TopK",
    "Cast",
    "RandomNormalLike",
    "Conv",
    "MaxPool",
    "Gemm",
    "MatMul",
    "Concat",
    "Pad",
    "OneHot",
    "Bogus",
)


def m_op(proto: Any, rng: random.Random, setup: Setup) -> str:
    nodes = _all_nodes(proto)
    if not nodes:
        return "no node"
    node = rng.choice(nodes)
    old = node.op_type
    node.op_type = rng.choice(_OPS)
    if rng.random() < 0.1:
        node.domain = rng.choice(["com.microsoft", "evil.custom", "ai.onnx.ml", "local"])
    return f"op {old} -> {node.domain + '.' if node.domain else ''}{node.op_type}"


def m_outputs(proto: Any, rng: random.Random, setup: Setup) -> str:
    graph = proto.graph
    choice = rng.random()
    if choice < 0.3 and graph.output:
        graph.output.append(graph.output[0])
        return "duplicate output"
    if choice < 0.4 and graph.output:
        del graph.output[0]
        return "removed output"
    if choice < 0.55 and graph.node:
        extra = graph.output.add()
        extra.CopyFrom(graph.output[0]) if graph.output else None
        extra.name = rng.choice(list(graph.node[rng.randrange(len(graph.node))].output) or ["ghost"])
        if rng.random() < 0.5:
            graph.output.insert(0, graph.output.pop())  # the extra one first
        return f"extra output {extra.name}"
    if choice < 0.7 and graph.output:
        graph.output[0].name = rng.choice(["ghost", graph.input[0].name if graph.input else "x", ""])
        return f"renamed output to {graph.output[0].name!r}"
    if choice < 0.85 and graph.output:
        graph.output[0].type.tensor_type.elem_type = rng.choice([0, 2, 6, 7, 8, 9, 10, 11, 16, 99])
        return "output elem_type"
    if graph.input:
        if rng.random() < 0.5:
            graph.input.append(graph.input[0])
            return "duplicate input"
        graph.input[0].type.tensor_type.elem_type = rng.choice([0, 6, 7, 8, 10, 11])
        return "input elem_type"
    return "nothing"


def m_rewire(proto: Any, rng: random.Random, setup: Setup) -> str:
    nodes = [n for n in _all_nodes(proto) if n.input]
    if not nodes:
        return "no node"
    node = rng.choice(nodes)
    names = [name for n in proto.graph.node for name in n.output] + [v.name for v in proto.graph.input]
    position = rng.randrange(len(node.input))
    node.input[position] = rng.choice(names + ["", "ghost"])
    if rng.random() < 0.2:
        node.output[0] = rng.choice(names + ["ghost"])  # a cycle or a clash
    return f"rewired input {position} of {node.op_type}"


def m_insert_dynamic(proto: Any, rng: random.Random, setup: Setup) -> str:
    """Insert control flow or a run-time-sized op before the output, with constant or run-time sizes."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    if not graph.output:
        return "no output"
    out = graph.output[0].name
    producer = next((n for n in graph.node if out in n.output), None)
    if producer is None:
        return "no producer"
    tmp = f"pre_{rng.randrange(1 << 20)}"
    producer.output[list(producer.output).index(out)] = tmp
    op = rng.choice(["Loop", "ConstantOfShape", "Tile", "Expand", "Range", "Resize", "If", "Pad", "Upsample"])
    huge = rng.random() < 0.5
    const = lambda name, value: graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))  # noqa: E731
    if op == "Loop":
        const(tmp + "_M", np.int64(1 << 62 if huge else 2))
        const(tmp + "_C", np.bool_(True))
        graph.node.append(loop_node(tmp + "_M", tmp + "_C", tmp, out))
    elif op == "If":
        branch = lambda name: helper.make_graph(  # noqa: E731
            [helper.make_node("Identity", [tmp], [name + "_o"])],
            name,
            [],
            [helper.make_tensor_value_info(name + "_o", TensorProto.FLOAT, None)],
        )
        const(tmp + "_c", np.bool_(True))
        graph.node.append(helper.make_node("If", [tmp + "_c"], [out], then_branch=branch("t"), else_branch=branch("e")))
    else:
        size = tmp + "_s"
        if rng.random() < 0.5:  # a run-time size
            graph.node.append(helper.make_node("Shape", [tmp], [size]))
        else:
            const(size, np.array([1 << 40, 10] if huge else [1, 10], dtype=np.int64))
        if op in ("ConstantOfShape", "Tile", "Expand"):
            graph.node.extend(runtime_sized_nodes(op, tmp, size, out, prefix=tmp + "_"))
        elif op == "Pad":
            const(tmp + "_p", np.array([0, 1 << 40 if huge else 1, 0, 0], dtype=np.int64))
            graph.node.append(helper.make_node("Pad", [tmp, tmp + "_p"], [tmp + "_padded"]))
            graph.node.append(helper.make_node("Slice", [tmp + "_padded", tmp + "_st", tmp + "_en"], [out]))
            const(tmp + "_st", np.array([0, 0], np.int64))
            const(tmp + "_en", np.array([1 << 30, 10], np.int64))
        elif op == "Range":
            const(tmp + "_0", np.float32(0))
            const(tmp + "_d", np.float32(1e-30 if huge else 1))
            graph.node.extend(
                runtime_sized_nodes("Range", tmp, size, out, prefix=tmp + "_", zero=tmp + "_0", delta=tmp + "_d")
            )
        else:  # Resize / Upsample by scales
            const(tmp + "_sc", np.array([1.0, 1e9 if huge else 1.0], dtype=np.float32))
            inputs = [tmp, "", tmp + "_sc"] if op == "Resize" else [tmp, tmp + "_sc"]
            graph.node.append(helper.make_node(op, inputs, [out]))
    return f"inserted {op}{' (huge)' if huge else ''}"


def m_opset(proto: Any, rng: random.Random, setup: Setup) -> str:
    if rng.random() < 0.5:
        proto.ir_version = rng.choice([0, 1, 3, 4, 7, 8, 9, 10, 11, 99, -1 & 0x7FFFFFFFFFFFFFFF])
        return f"ir_version {proto.ir_version}"
    if proto.opset_import:
        proto.opset_import[0].version = rng.choice([0, 1, 6, 11, 13, 17, 18, 21, 22, 99, 1 << 40])
        return f"opset {proto.opset_import[0].version}"
    return "nothing"


def m_tensor_data(proto: Any, rng: random.Random, setup: Setup) -> str:
    tensors = _tensors(proto)
    if not tensors:
        return "no tensor"
    tensor = rng.choice(tensors)
    choice = rng.random()
    if choice < 0.4 and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data))]
        return f"truncated raw_data of {tensor.name}"
    if choice < 0.7:
        tensor.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 22, 99])
        return f"data_type of {tensor.name} -> {tensor.data_type}"
    tensor.float_data.extend([float("nan")] * rng.choice([1, 7, 1000]))
    return f"float_data appended to {tensor.name}"


def m_weights(proto: Any, rng: random.Random, setup: Setup) -> str:
    """NaN, inf or huge weight values: the model runs, and the release must still fail closed."""
    from onnx import numpy_helper

    tensors = [t for t in proto.graph.initializer if t.data_type == 1 and t.raw_data]
    if not tensors:
        return "no float tensor"
    tensor = rng.choice(tensors)
    values = numpy_helper.to_array(tensor).copy()
    flat = values.reshape(-1)
    bad = rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45])
    count = rng.choice([1, max(1, flat.size // 10), flat.size])
    flat[rng.sample(range(flat.size), min(count, flat.size))] = bad
    tensor.raw_data = values.tobytes()
    return f"{count} weight(s) of {tensor.name} set to {bad}"


MODEL_MUTATORS: dict[str, Callable[[Any, random.Random, Setup], str]] = {
    "weights": m_weights,
    "dims": m_dims,
    "attribute": m_attribute,
    "external-data": m_external,
    "metadata": m_metadata,
    "op-type": m_op,
    "graph-outputs": m_outputs,
    "rewire": m_rewire,
    "insert-dynamic": m_insert_dynamic,
    "opset": m_opset,
    "tensor-data": m_tensor_data,
}


def byte_mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buffer = bytearray(data)
    steps = []
    for _ in range(rng.randint(1, 4)):
        if not buffer:
            break
        choice = rng.random()
        position = rng.randrange(len(buffer))
        if choice < 0.35:
            buffer[position] ^= 1 << rng.randrange(8)
            steps.append("bitflip")
        elif choice < 0.55:
            buffer[position] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01])
            steps.append("byte")
        elif choice < 0.7:
            end = min(len(buffer), position + rng.randint(1, 256))
            del buffer[position:end]
            steps.append("delete")
        elif choice < 0.8:
            end = min(len(buffer), position + rng.randint(1, 256))
            buffer[position:position] = buffer[position:end]
            steps.append("duplicate")
        elif choice < 0.9:
            del buffer[position:]
            steps.append("truncate")
        else:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            steps.append("insert")
    return bytes(buffer), "+".join(steps)
