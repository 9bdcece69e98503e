"""A mutation fuzzer for edgeguard's hostile-input surface: model files and probe sets.

An attacker who read the source sends crafted files. Each *mutant* is a small sandbox::

    sandbox/cwd/       the working directory of the run, with canary files named like data files
    sandbox/outside/   a secret file next to the model's folder (target of ../, symlinks, hard links)
    sandbox/model/     the mutated model (plus its external data, FIFOs, links ...)
    sandbox/probe*     the probe set (a mutated .npz, IDX pair or PNG folder for probe mutants)

and runs in a forked child of a pre-imported parent, under a memory limit (RLIMIT_AS) and a
timeout: ``SafeModel`` load + ``predict``, ``vet`` (cheap settings) and, for some mutants,
``edgeguard vet`` through click. Opening anything under ``cwd/`` or ``outside/`` is seen by
inotify in the parent. Outcomes:

- ``ok`` (ran fine) or ``clean`` (an EdgeguardError with its message);
- defects: ``non-edgeguard-exception``, ``exit-code-1-on-crash``, ``traceback``,
  ``read-outside-folder``, ``hang``, ``memory`` (MemoryError or an allocation failure
  under the limit), ``signal`` (the child died of a signal), ``bad-exit-code``.

Mutators are structure-aware (tensor dims, attributes, external_data entries,
metadata_props, op types, graph outputs/inputs, inserted control flow and run-time
sizes, opsets) and byte-level (bit flips, chunk deletion/duplication, truncation), applied
to real exported models (``edgeguard/assets/*.onnx``) and tiny hand-built ones, and to
probe sets (.npz arrays and bytes, IDX headers and gzip streams, PNG folders).
"""

from __future__ import annotations

import ctypes
import gzip
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFECT_TYPES", "FuzzResult", "MODEL_MUTATORS", "PROBE_MUTATORS", "fuzz", "make_mutant"]

DEFECT_TYPES = (
    "non-edgeguard-exception",
    "exit-code-1-on-crash",
    "traceback",
    "read-outside-folder",
    "hang",
    "memory",
    "signal",
    "bad-exit-code",
    "released-invalid-input",
)
ASSETS = Path(__file__).parent / "assets"
_CANARY_NAMES = ("canary.bin", "bias.bin", "weights.bin", "m.onnx.data", "data.bin", "model.onnx", "x.png")
_INTERESTING_INTS = (0, 1, -1, 2, 3, 255, 256, 1 << 15, (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 62), -(1 << 62), 7, 28)
_ALLOC_MARKERS = ("bad_alloc", "failed to allocate", "memoryerror", "cannot allocate", "out of memory")


# -- seeds ----------------------------------------------------------------------------------------


def _tiny_models() -> dict[str, Any]:
    """Hand-built 1x28x28 classifiers (10 classes) that store their weights in every tensor field."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    with np.load(ASSETS / "fashion_mnist_test_subset.npz") as data:
        names = [str(n) for n in data["class_names"]]  # the probe's classes, so the vet runs them through
    weight = rng.normal(0, 0.05, (784, 10)).astype(np.float32)
    bias = rng.normal(0, 0.1, 10).astype(np.float32)
    props = {
        "task_type": "multiclass",
        "class_names": json.dumps(names),
        "input_shape": "[1, 28, 28]",
        "pixel_range": "[0.0, 1.0]",
        "output_kind": "logits",
    }

    def model(extra_nodes, initializers, sparse=(), functions=(), output="scores"):
        nodes = [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            *extra_nodes,
        ]
        graph = helper.make_graph(
            nodes,
            "tiny",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 10])],
            [numpy_helper.from_array(weight, "W"), *initializers],
            sparse_initializer=list(sparse),
        )
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("local", 1)] if functions else [])
        proto = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
        proto.ir_version = 8
        helper.set_model_props(proto, props)
        return proto

    add = helper.make_node("Add", ["logits", "B"], ["scores"])
    b = numpy_helper.from_array(bias, "B")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(bias, "B"), numpy_helper.from_array(np.arange(10, dtype=np.int64), "Bi"), [10]
    )
    constant = helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(bias, "c"))
    body = [
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(bias, "fb")),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    function = helper.make_function("local", "AddBias", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    models = {
        "tiny-linear": model([add], [b]),
        "tiny-sparse": model([add], [], sparse=[sparse]),
        "tiny-constant": model([constant, add], []),
        "tiny-function": model(
            [helper.make_node("AddBias", ["logits"], ["scores"], domain="local")], [], functions=[function]
        ),
    }
    external = onnx.ModelProto()
    external.CopyFrom(models["tiny-linear"])
    models["tiny-external"] = external  # saved with m.onnx.data (the dynamo exporter's layout)
    return models


def _seed_models() -> dict[str, Any]:
    import onnx

    seeds = {name: onnx.load(str(ASSETS / f"{name}.onnx")) for name in ("honest", "vicious", "honest_decoder")}
    seeds.update(_tiny_models())
    return seeds


def _probe_arrays(n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(ASSETS / "fashion_mnist_test_subset.npz") as data:
        return data["x"][:n].copy(), data["y"][:n].copy(), data["class_names"].copy()


# -- structure-aware model mutators -------------------------------------------------------------------


@dataclass
class _Setup:
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
    return rng.choice(_INTERESTING_INTS) if rng.random() < 0.8 else rng.randint(-(1 << 40), 1 << 40)


def m_dims(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_attribute(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_external(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_metadata(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_op(proto: Any, rng: random.Random, setup: _Setup) -> str:
    nodes = _all_nodes(proto)
    if not nodes:
        return "no node"
    node = rng.choice(nodes)
    old = node.op_type
    node.op_type = rng.choice(_OPS)
    if rng.random() < 0.1:
        node.domain = rng.choice(["com.microsoft", "evil.custom", "ai.onnx.ml", "local"])
    return f"op {old} -> {node.domain + '.' if node.domain else ''}{node.op_type}"


def m_outputs(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_rewire(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_insert_dynamic(proto: Any, rng: random.Random, setup: _Setup) -> str:
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
        body = helper.make_graph(
            [helper.make_node("Identity", ["v_in"], ["v_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
            ],
            [
                helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
            ],
        )
        const(tmp + "_M", np.int64(1 << 62 if huge else 2))
        const(tmp + "_C", np.bool_(True))
        graph.node.append(helper.make_node("Loop", [tmp + "_M", tmp + "_C", tmp], [out], body=body))
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
        if op == "ConstantOfShape":
            graph.node.append(helper.make_node("ConstantOfShape", [size], [tmp + "_z"]))
            graph.node.append(helper.make_node("Add", [tmp, tmp + "_z"], [out]))
        elif op in ("Tile", "Expand"):
            graph.node.append(helper.make_node(op, [tmp, size], [out]))
        elif op == "Pad":
            const(tmp + "_p", np.array([0, 1 << 40 if huge else 1, 0, 0], dtype=np.int64))
            graph.node.append(helper.make_node("Pad", [tmp, tmp + "_p"], [tmp + "_padded"]))
            graph.node.append(helper.make_node("Slice", [tmp + "_padded", tmp + "_st", tmp + "_en"], [out]))
            const(tmp + "_st", np.array([0, 0], np.int64))
            const(tmp + "_en", np.array([1 << 30, 10], np.int64))
        elif op == "Range":
            const(tmp + "_0", np.float32(0))
            const(tmp + "_d", np.float32(1e-30 if huge else 1))
            graph.node.append(helper.make_node("ReduceMax", [tmp], [tmp + "_m"], keepdims=0))
            graph.node.append(helper.make_node("Range", [tmp + "_0", tmp + "_m", tmp + "_d"], [tmp + "_r"]))
            graph.node.append(helper.make_node("ReduceSum", [tmp + "_r"], [tmp + "_rs"], keepdims=0))
            graph.node.append(helper.make_node("Add", [tmp, tmp + "_rs"], [out]))
        else:  # Resize / Upsample by scales
            const(tmp + "_sc", np.array([1.0, 1e9 if huge else 1.0], dtype=np.float32))
            inputs = [tmp, "", tmp + "_sc"] if op == "Resize" else [tmp, tmp + "_sc"]
            graph.node.append(helper.make_node(op, inputs, [out]))
    return f"inserted {op}{' (huge)' if huge else ''}"


def m_opset(proto: Any, rng: random.Random, setup: _Setup) -> str:
    if rng.random() < 0.5:
        proto.ir_version = rng.choice([0, 1, 3, 4, 7, 8, 9, 10, 11, 99, -1 & 0x7FFFFFFFFFFFFFFF])
        return f"ir_version {proto.ir_version}"
    if proto.opset_import:
        proto.opset_import[0].version = rng.choice([0, 1, 6, 11, 13, 17, 18, 21, 22, 99, 1 << 40])
        return f"opset {proto.opset_import[0].version}"
    return "nothing"


def m_tensor_data(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


def m_weights(proto: Any, rng: random.Random, setup: _Setup) -> str:
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


MODEL_MUTATORS: dict[str, Callable[[Any, random.Random, _Setup], str]] = {
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


def _byte_mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
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


# -- probe mutators -----------------------------------------------------------------------------------


def _npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def p_npz(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, names = (a.copy() for a in base)
    y = y.astype(np.int64)
    choice = rng.random()
    what = ""
    if choice < 0.15:
        x = rng.choice(
            [
                x[:, None],
                x[:, None].repeat(3, 1),
                x[..., None].repeat(3, -1),
                x[:0],
                x[0],
                x.reshape(len(x), -1),
                x[:, :5],
            ]
        )
        what = f"x shape {x.shape}"
    elif choice < 0.3:
        x = rng.choice(
            [
                x.astype(np.float64) * 3,
                np.full(x.shape, np.nan, np.float32),
                x.astype(np.int64) - 300,
                x.astype(bool),
                x.astype("U1"),
                x.astype(np.float16) / 255,
                x.astype(np.complex64),
            ]
        )
        what = f"x dtype {x.dtype}"
    elif choice < 0.5:
        y = rng.choice(
            [
                y.astype(str),
                y + 0.5,
                y - 20,
                y[:, None],
                y[:-5],
                y * 10**9,
                np.zeros((len(y), 10)),
                y.astype(np.float64),
                np.full(len(y), np.nan),
            ]
        )
        what = f"y {y.dtype} {y.shape}"
    elif choice < 0.6:
        names = rng.choice([names[:3], np.array(["x"] * 10), np.arange(10), np.array([]), names.repeat(2)])
        what = f"class_names {names[:3]}"
    elif choice < 0.7:
        keys = rng.choice([{"x": x}, {"y": y}, {"images": x, "labels": y}, {}])
        return "npz", _npz_bytes(**keys), f"keys {sorted(keys)}"
    else:
        data, steps = _byte_mutate(_npz_bytes(x=x, y=y, class_names=names), rng)
        return "npz", data, f"bytes {steps}"
    return "npz", _npz_bytes(x=x, y=y, class_names=names), what


def _idx_header(code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d & 0xFFFFFFFF) for d in dims)


def p_idx(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, _ = base
    images = _idx_header(0x08, list(x.shape)) + x.tobytes()
    labels = _idx_header(0x08, [len(y)]) + y.astype(np.uint8).tobytes()
    choice = rng.random()
    if choice < 0.3:
        dims = [rng.choice([0, 1, 28, 0xFFFFFFFF, 1 << 20, len(x)]) for _ in range(rng.choice([0, 1, 3, 4, 9]))]
        images = _idx_header(rng.choice([0x08, 0x0D, 0x0E, 0x07, 0x0B]), dims) + x.tobytes()
        what = f"header dims {dims[:4]}"
    elif choice < 0.45:
        bomb = gzip.compress(_idx_header(0x08, [len(x), 28, 28]) + b"\0" * (64 << 20), compresslevel=1)
        return "idx", (bomb, gzip.compress(labels)), "gzip bomb (64 MiB of zeros)"
    elif choice < 0.6:
        labels = _idx_header(rng.choice([0x0D, 0x0E, 0x0C]), [len(y)]) + np.full(len(y), 2.5, ">f8").tobytes()
        what = "float labels"
    else:
        images, steps = _byte_mutate(gzip.compress(images), rng)
        return "idx", (images, gzip.compress(labels)), f"gzip bytes {steps}"
    return "idx", (gzip.compress(images), gzip.compress(labels)), what


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int, depth: int = 8, color: int = 0) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b"")
    )


def p_png(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, names = base
    files: dict[str, Any] = {}
    for i in range(20):
        files[f"{int(y[i])}/img{i}.png"] = _png(x[i])
    choice = rng.random()
    target = rng.choice(sorted(files))
    if choice < 0.25:
        side = rng.choice([20000, 5000, 1 << 16, 0xFFFFFFF])
        files[target] = _png_header(side, rng.choice([side, 1]))
        what = f"PNG header {side}"
    elif choice < 0.35:
        files[target] = "FIFO"
        what = "FIFO named .png"
    elif choice < 0.4:
        files[target] = "LINK-ZERO"
        what = "symlink to /dev/zero named .png"
    elif choice < 0.5:
        from PIL import Image

        buffer = io.BytesIO()
        mode = rng.choice(["RGBA", "I;16", "P", "1", "CMYK", "F"])
        image = Image.new(mode if mode != "F" else "F", (28, 28))
        image.save(buffer, format="TIFF" if mode in ("CMYK", "F") else "PNG")
        files[target] = buffer.getvalue()
        what = f"mode {mode}"
    elif choice < 0.6:
        files[f"notaclass{rng.randrange(9)}/a.png"] = files[target]
        what = "unknown class folder"
    elif choice < 0.7:
        files[target.replace(".png", ".jpg")] = files.pop(target)[:50]
        what = "truncated jpg"
    else:
        files[target], steps = _byte_mutate(files[target], rng)
        what = f"PNG bytes {steps}"
    return "png", files, what


PROBE_MUTATORS: dict[str, Callable[..., tuple[str, Any, str]]] = {"npz": p_npz, "idx": p_idx, "png-folder": p_png}


# -- mutants -------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    index: int
    kind: str  # "model" or "probe"
    mutator: str
    seed_model: str
    description: str
    model_bytes: bytes
    setup: _Setup
    probe: tuple[str, Any]  # (format, payload)


def make_mutant(
    index: int, seed: int, seeds: dict[str, Any], probe_base: Any, probe_npz: bytes, sandbox: Path | None = None
) -> Mutant:
    """Mutant number ``index`` of the campaign ``seed`` (deterministic but for the sandbox path)."""
    import onnx

    rng = random.Random(f"{seed}:{index}")
    good_probe = ("npz", probe_npz)
    if rng.random() < 0.2:  # a probe-set mutant against a good model
        name = rng.choice(sorted(PROBE_MUTATORS))
        try:
            fmt, payload, what = PROBE_MUTATORS[name](rng, probe_base)
        except Exception as error:  # a mutator bug: fall back to corrupted bytes of the good probe
            data, steps = _byte_mutate(probe_npz, rng)
            fmt, payload, what = "npz", data, f"{name} failed ({type(error).__name__}); npz bytes {steps}"
        model_name = rng.choice(["honest", "tiny-linear"])
        return Mutant(
            index, "probe", name, model_name, what, seeds[model_name].SerializeToString(), _Setup(), (fmt, payload)
        )
    model_name = rng.choice(sorted(seeds))
    proto = onnx.ModelProto()
    proto.CopyFrom(seeds[model_name])
    setup = _Setup(secret=str((sandbox or Path("/nonexistent")) / "outside" / "secret.bin"))
    if model_name == "tiny-external":
        m_external_ok(proto, setup)
    if rng.random() < 0.25:  # byte-level
        data, steps = _byte_mutate(proto.SerializeToString(), rng)
        return Mutant(index, "model", "bytes", model_name, steps, data, setup, good_probe)
    names = [rng.choice(sorted(MODEL_MUTATORS)) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    descriptions = []
    for name in names:
        try:
            descriptions.append(MODEL_MUTATORS[name](proto, rng, setup))
        except Exception as error:  # a mutator that cannot apply to this seed: keep what it did
            descriptions.append(f"{name} failed: {type(error).__name__}")
    try:
        data = proto.SerializeToString()
    except Exception:
        data, _ = _byte_mutate(seeds[model_name].SerializeToString(), rng)
    return Mutant(index, "model", "+".join(names), model_name, "; ".join(descriptions), data, setup, good_probe)


def m_external_ok(proto: Any, setup: _Setup) -> None:
    """Move every initializer of the tiny-external seed to m.onnx.data (the dynamo exporter's layout)."""
    offset = 0
    blob = b""
    for tensor in proto.graph.initializer:
        data = tensor.raw_data
        if not data:
            from onnx import numpy_helper

            data = numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = 1
        for key, value in (("location", "m.onnx.data"), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        blob += data
        offset += len(data)
    setup.files.append(("m.onnx.data", "raw", blob))


def _materialise(mutant: Mutant, sandbox: Path) -> tuple[Path, Path]:
    cwd, outside, model_dir = sandbox / "cwd", sandbox / "outside", sandbox / "model"
    for folder in (cwd, outside, model_dir):
        folder.mkdir(parents=True)
    secret = outside / "secret.bin"
    secret.write_bytes(b"SECRET" * 1000)
    for name in _CANARY_NAMES:
        (cwd / name).write_bytes(b"CANARY" * 1000)
    model = model_dir / "m.onnx"
    model.write_bytes(mutant.model_bytes)
    for where, kind, payload in mutant.setup.files:
        if kind == "raw":
            (model_dir / where).write_bytes(payload)
            continue
        if where in ("ok", "./ok.bin"):
            (model_dir / "ok.bin").write_bytes(payload)
        elif where == "fifo.bin" and not (model_dir / where).exists():
            os.mkfifo(model_dir / where)
        elif where == "link-outside.bin" and not (model_dir / where).exists():
            os.symlink(secret, model_dir / where)
        elif where == "link-zero.bin" and not (model_dir / where).exists():
            os.symlink("/dev/zero", model_dir / where)
        elif where == "hard.bin" and not (model_dir / where).exists():
            os.link(secret, model_dir / where)
        elif where == "dir.bin":
            (model_dir / where).mkdir(exist_ok=True)
        elif where == "link-dir/secret.bin" and not (model_dir / "link-dir").exists():
            os.symlink(outside, model_dir / "link-dir")
    fmt, payload = mutant.probe
    if fmt == "npz":
        probe = sandbox / "probe.npz"
        probe.write_bytes(payload)
    elif fmt == "idx":
        probe = sandbox / "probe"
        probe.mkdir()
        (probe / "t10k-images-idx3-ubyte.gz").write_bytes(payload[0])
        (probe / "t10k-labels-idx1-ubyte.gz").write_bytes(payload[1])
    else:
        probe = sandbox / "probe"
        for name, content in payload.items():
            path = probe / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content == "FIFO":
                os.mkfifo(path)
            elif content == "LINK-ZERO":
                os.symlink("/dev/zero", path)
            else:
                path.write_bytes(content)
    return model, probe


# -- the child ---------------------------------------------------------------------------------------


def _classify(error: BaseException) -> tuple[str, str]:
    from edgeguard.errors import EdgeguardError

    message = " ".join(str(error).split())[:300]
    lowered = message.lower()
    if isinstance(error, MemoryError) or any(marker in lowered for marker in _ALLOC_MARKERS):
        return "memory", f"{type(error).__name__}: {message}"
    if isinstance(error, EdgeguardError):
        return "clean", f"{type(error).__name__}: {message[:160]}"
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return "non-edgeguard-exception", f"{type(error).__name__}{place}: {message}"


def _step(outcome: dict[str, Any], name: str, function: Callable[[], Any]) -> Any:
    try:
        value = function()
    except _CliDefect as defect:
        outcome["steps"][name] = {"result": defect.kind, "detail": defect.detail}
        return None
    except BaseException as error:  # noqa: B036 - the fuzzer records everything
        kind, detail = _classify(error)
        outcome["steps"][name] = {"result": kind, "detail": detail}
        return None
    outcome["steps"][name] = {"result": "ok"}
    return value


def _child(mutant: Mutant, model: Path, probe: Path, cwd: Path, cli: bool, leakage: bool) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")
    os.chdir(cwd)
    outcome: dict[str, Any] = {"steps": {}}
    if mutant.kind == "selftest":  # a deliberate defect: the detectors must see it
        _step(outcome, "selftest", lambda: _SELFTESTS[mutant.mutator](cwd))
        return outcome
    from edgeguard import SafeModel
    from edgeguard.data import load_dataset
    from edgeguard.vetting import vet

    if mutant.kind == "probe":
        _step(outcome, "data", lambda: load_dataset(probe, image_size=(28, 28)))
    else:

        def load_and_predict() -> Any:
            safe = SafeModel(model, providers=["CPUExecutionProvider"], threads=1)
            shape = safe.info.input_shape
            if np.prod(shape) <= 1 << 20:
                low, high = safe.info.pixel_range
                safe.predict(np.full(shape, low, dtype=np.float32))
                batch = np.random.default_rng(0).uniform(low, high, (3, *shape)).astype(np.float32)
                safe.predict(batch)
            return safe

        safe = _step(outcome, "safemodel", load_and_predict)
        if safe is not None:
            rng = random.Random(mutant.index)
            _step(outcome, "hostile-input", lambda: _expect_refusal(safe, _hostile_input(rng, safe.info.input_shape)))
            _step(outcome, "filter-spec", lambda: _filter_spec_run(model, safe, rng))
    knobs: dict[str, Any] = {"tests": ()}
    if leakage:
        knobs = {
            "tests": ("leakage",),
            "leakage_min_samples": 40,
            "leakage_fit_samples": 40,
            "leakage_eval_samples": 20,
        }
    _step(outcome, "vet", lambda: vet(model, probe, min_per_class=1, probe_limit=60, **knobs))
    if cli:
        from click.testing import CliRunner

        from edgeguard.cli import main

        def run_cli() -> None:
            result = CliRunner().invoke(
                main,
                [
                    "vet",
                    str(model),
                    "-p",
                    str(probe),
                    "--format",
                    "json",
                    "-q",
                    "--tests",
                    "leakage",
                    "--probe-limit",
                    "60",
                ],
            )
            text = (result.stdout or "") + (result.stderr or "")
            code = result.exit_code
            if "Traceback" in text:
                raise _CliDefect("traceback", f"exit {code}: {text[-200:]}")
            if code == 1:
                try:
                    verdict = json.loads(result.stdout).get("verdict")
                except Exception:
                    verdict = None
                if verdict != "vicious":
                    raise _CliDefect("exit-code-1-on-crash", text[-200:])
            elif code not in (0, 2, 3):
                raise _CliDefect("bad-exit-code", f"exit {code}: {text[-200:]}")

        try:
            run_cli()
            outcome["steps"]["cli"] = {"result": "ok"}
        except _CliDefect as defect:
            outcome["steps"]["cli"] = {"result": defect.kind, "detail": defect.detail}
        except BaseException as error:  # noqa: B036
            kind, detail = _classify(error)
            outcome["steps"]["cli"] = {"result": kind, "detail": detail}
    return outcome


def _selftest_memory(cwd: Path) -> None:
    # 4 GiB of address space: refused at once under the RLIMIT_AS (it is larger than the margin), while
    # without the limit it would succeed lazily (overcommit) and the selftest would report "not seen"
    block = np.empty(4 << 30, dtype=np.uint8)
    block[:: 1 << 20] = 1


_SELFTESTS: dict[str, Callable[[Path], Any]] = {
    "read-outside-folder": lambda cwd: (cwd / "canary.bin").read_bytes(),
    "non-edgeguard-exception": lambda cwd: {}["missing"],
    "hang": lambda cwd: time.sleep(1e6),
    "signal": lambda cwd: os.kill(os.getpid(), signal.SIGSEGV),
    "memory": _selftest_memory,
}


def _hostile_input(rng: random.Random, shape: tuple[int, ...]) -> Any:
    """An input predict must refuse (InvalidInputError), never release or crash on."""
    good = np.zeros((2, *shape), dtype=np.float32)
    masked = np.ma.masked_array(good.copy(), mask=np.zeros(good.shape, bool))
    masked[0, 0, 0, 0] = 1000.0
    masked[0, 0, 0, 0] = np.ma.masked
    choices = [
        lambda: masked,
        lambda: np.full_like(good, np.nan),
        lambda: np.full_like(good, np.inf),
        lambda: good.astype(np.float16),
        lambda: good.astype(object),
        lambda: good.astype(np.complex64),
        lambda: np.zeros((0, *shape), np.float32),
        lambda: np.zeros(shape[1:], np.float32),
        lambda: good.tolist(),
        lambda: np.zeros((2, *shape[:-1], shape[-1] + 1), np.float32),
        lambda: np.full_like(good, 1e30),
        lambda: np.full_like(good, -0.5),
        lambda: np.asfortranarray(good)[..., ::-1] + 2.0,
        lambda: "not an array",
        lambda: np.broadcast_to(np.float32(7.0), good.shape),
        lambda: good.astype(np.float64) + 3.0,
        lambda: good.astype(np.uint8) + 200,
    ]
    return rng.choice(choices)()


_SPEC_PARTS = (
    "softmax",
    "sigmoid",
    "round:2",
    "round:-1",
    "round:99",
    "truncate:3",
    "top_k:0",
    "top_k:3",
    "top_k:1e9",
    "argmax",
    "gaussian:0",
    "gaussian:nan",
    "laplace:1",
    "label_preserving:3",
    "clipped_laplace:c=5,eps=1",
    "clipped_laplace:c=-1,eps=inf",
    "rounded",
    "high_confidence",
    "reverse_sigmoid",
    "class_labels",
    "label_confidence:4",
    "none",
    "",
    ">",
    "bogus:1",
    "round:",
    "softmax>softmax",
    "round:2:3",
    "top_k:3,k=4",
)


def _filter_spec_run(model: Path, safe: Any, rng: random.Random) -> None:
    """A random filter-spec string: parse it, build SafeModel with it, predict (or a clean refusal)."""
    from edgeguard import SafeModel
    from edgeguard.filters import default_filter_specs, parse_filter_spec

    if rng.random() < 0.5:  # a spec the bench uses (valid), so the release path itself runs
        text = rng.choice([spec.text for spec in default_filter_specs(safe.info.output_kind)])
    else:
        text = ">".join(rng.choice(_SPEC_PARTS) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.15:
        text, _ = _byte_mutate(text.encode(), rng)
        text = text.decode("latin-1")
    spec = parse_filter_spec(text)
    if spec.is_raw:
        return
    filtered = SafeModel(model, filters=spec.build(), providers=["CPUExecutionProvider"], threads=1)
    low, high = filtered.info.pixel_range
    released = filtered.predict(
        np.random.default_rng(1).uniform(low, high, (2, *filtered.info.input_shape)).astype(np.float32)
    )
    if isinstance(released, np.ndarray) and released.dtype.kind == "f" and not np.isfinite(released).all():
        raise _CliDefect("released-invalid-input", f"filters {text!r} released non-finite values")


def _expect_refusal(safe: Any, x: Any) -> None:
    """The refusal (InvalidInputError) is the expected outcome ("ok"); a release is a defect."""
    from edgeguard.errors import InvalidInputError

    try:
        safe.predict(x)
    except InvalidInputError:
        return
    raise _CliDefect("released-invalid-input", f"predict accepted a hostile input ({type(x).__name__})")


class _CliDefect(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, " ".join(detail.split())[:300]


# -- inotify (reads outside the model's folder) --------------------------------------------------------

_IN_ACCESS, _IN_OPEN, _IN_ISDIR = 0x1, 0x20, 0x40000000


class _Watch:
    """inotify watches on the sandbox's cwd/ and outside/ (and the secret file's inode)."""

    def __init__(self, paths: list[Path]) -> None:
        self.fd = -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        for path in paths:
            self._libc.inotify_add_watch(self.fd, str(path).encode(), _IN_OPEN | _IN_ACCESS)

    @property
    def available(self) -> bool:
        return self.fd >= 0

    def events(self) -> list[str]:
        if self.fd < 0:
            return []
        names = []
        try:
            while True:
                data = os.read(self.fd, 1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    _, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode(errors="replace")
                    offset += 16 + length
                    if not mask & _IN_ISDIR:
                        names.append(name or "<watched file>")
        except BlockingIOError:
            pass
        return names

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- the campaign ------------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    """What a campaign found; ``to_dict()`` is what benchmarks/fuzz.py writes."""

    settings: dict[str, Any]
    tried: int = 0
    ran_fine: int = 0
    clean_errors: int = 0
    defects: Counter = field(default_factory=Counter)
    signals: Counter = field(default_factory=Counter)
    hangs: int = 0
    by_mutator: dict[str, Counter] = field(default_factory=dict)
    by_step: dict[str, Counter] = field(default_factory=dict)
    clean_error_types: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    inotify: bool = True
    selftest: dict[str, bool] = field(default_factory=dict)
    defective_mutants: int = 0
    unclear_messages: Counter = field(default_factory=Counter)  # clean errors without "expected ..., got ..."

    @property
    def defect_count(self) -> int:
        return sum(self.defects.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "tried": self.tried,
            "ran_fine": self.ran_fine,
            "clean_errors": self.clean_errors,
            "mutants_with_defects": self.defective_mutants,
            "defects": {kind: self.defects.get(kind, 0) for kind in DEFECT_TYPES},
            "defect_total": self.defect_count,
            "signals": dict(self.signals),
            "hangs": self.hangs,
            "by_mutator": {name: dict(counts) for name, counts in sorted(self.by_mutator.items())},
            "by_step": {name: dict(counts) for name, counts in sorted(self.by_step.items())},
            "clean_error_types": dict(self.clean_error_types.most_common()),
            "examples": self.examples,
            "clean_errors_without_expected_got": dict(self.unclear_messages.most_common(20)),
            "seconds": round(self.seconds, 1),
            "read_outside_detection": "inotify" if self.inotify else "unavailable",
            "selftest_detected": self.selftest,
        }


def _memory_limit(extra_bytes: int) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024 + extra_bytes
    except OSError:
        pass
    return 4 << 30


def fuzz(
    mutants: int = 1000,
    *,
    seed: int = 0,
    workers: int = 2,
    timeout_s: float = 20.0,
    memory_mb: int = 1536,
    cli_every: int = 4,
    leakage_every: int = 10,
    selftest: bool = True,
    progress: Callable[[str], None] | None = None,
) -> FuzzResult:
    """Run ``mutants`` mutants, ``workers`` forked children at a time (see the module docstring).

    Each child gets RLIMIT_AS = the parent's address space + ``memory_mb`` MiB and is
    killed after ``timeout_s`` seconds (a hang). One mutant in ``cli_every`` also runs
    ``edgeguard vet`` through click; one in ``leakage_every`` runs the leakage audit.
    ``selftest`` first runs one deliberate defect per detector (a read of a canary, a
    KeyError, a hang, a SIGSEGV, a memory blow-up) and records whether each was seen
    (``FuzzResult.selftest``); they are not counted among the mutants.
    """
    import onnxruntime  # noqa: F401
    from click.testing import CliRunner  # noqa: F401
    from PIL import Image, PngImagePlugin, TiffImagePlugin  # noqa: F401

    import edgeguard.cli  # noqa: F401 - pre-import everything the children use
    import edgeguard.vetting.api  # noqa: F401

    try:
        import sklearn.linear_model  # noqa: F401
        import sklearn.neighbors  # noqa: F401
    except ImportError:
        pass
    started = time.perf_counter()
    settings = {
        "mutants": mutants,
        "seed": seed,
        "workers": workers,
        "timeout_s": timeout_s,
        "memory_mb_above_parent": memory_mb,
        "cli_every": cli_every,
        "leakage_every": leakage_every,
        "python": sys.version.split()[0],
    }
    result = FuzzResult(settings)
    probe_watch = _Watch([])
    result.inotify = probe_watch.available
    probe_watch.close()
    seeds = _seed_models()
    probe_base = _probe_arrays(60)
    probe_npz = _npz_bytes(x=probe_base[0], y=probe_base[1], class_names=probe_base[2])
    limit = _memory_limit(memory_mb << 20)
    root = Path(tempfile.mkdtemp(prefix="edgeguard-fuzz-"))
    running: dict[int, dict[str, Any]] = {}
    next_index = 0
    if selftest:
        probe = FuzzResult({})
        for offset, name in enumerate(_SELFTESTS):
            mutant = Mutant(-1 - offset, "selftest", name, "-", name, b"", _Setup(), ("npz", probe_npz))
            job = _spawn(mutant, root / f"selftest{offset}", limit, False, False)
            while True:
                done = _reap(job, min(timeout_s, 3.0))
                if done:
                    _record(probe, done[0])
                    break
                time.sleep(0.01)
        seen = {example["mutator"]: {d["type"] for d in example["defects"]} for example in probe.examples}
        result.selftest = {name: name in seen.get(name, set()) for name in _SELFTESTS}
    try:
        while next_index < mutants or running:
            while next_index < mutants and len(running) < workers:
                running.update(
                    _start(next_index, seed, seeds, probe_base, probe_npz, root, limit, cli_every, leakage_every)
                )
                next_index += 1
            finished = _reap(running, timeout_s)
            for job in finished:
                _record(result, job)
                if progress and result.tried % 50 == 0:
                    progress(f"{result.tried}/{mutants} mutants, {result.defect_count} defect(s)")
            if not finished:
                time.sleep(0.005)
    finally:
        for job in running.values():
            _kill(job)
        shutil.rmtree(root, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _start(
    index, seed, seeds, probe_base, probe_npz, root, limit, cli_every, leakage_every
) -> dict[int, dict[str, Any]]:
    sandbox = root / f"m{index}"
    mutant = make_mutant(index, seed, seeds, probe_base, probe_npz, sandbox)
    return _spawn(mutant, sandbox, limit, index % cli_every == 0, index % leakage_every == 0)


def _spawn(mutant: Mutant, sandbox: Path, limit: int, cli: bool, leakage: bool) -> dict[int, dict[str, Any]]:
    model, probe = _materialise(mutant, sandbox)
    watch = _Watch([sandbox / "cwd", sandbox / "outside", sandbox / "outside" / "secret.bin"])
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(reader)
            os.setpgid(0, 0)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            outcome = _child(mutant, model, probe, sandbox / "cwd", cli, leakage)
            payload = json.dumps(outcome).encode()[:60000]
            os.write(writer, payload)
        except BaseException:  # noqa: B036
            code = 70
        finally:
            os._exit(code)
    os.close(writer)
    return {
        pid: {
            "mutant": mutant,
            "sandbox": sandbox,
            "watch": watch,
            "reader": reader,
            "start": time.monotonic(),
            "pid": pid,
            "cli": cli,
        }
    }


def _reap(running: dict[int, dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    finished = []
    for pid, job in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            if time.monotonic() - job["start"] > timeout_s:
                _kill(job)
                job["hang"] = True
                finished.append(running.pop(pid))
            continue
        job["status"] = status
        finished.append(running.pop(pid))
    for job in finished:
        try:
            job["output"] = _read_pipe(job["reader"])
        finally:
            os.close(job["reader"])
        job["opened"] = job["watch"].events()
        job["watch"].close()
        shutil.rmtree(job["sandbox"], ignore_errors=True)
    return finished


def _read_pipe(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _kill(job: dict[str, Any]) -> None:
    try:
        os.killpg(job["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(job["pid"], 0)
    except ChildProcessError:
        pass


def _record(result: FuzzResult, job: dict[str, Any]) -> None:
    mutant: Mutant = job["mutant"]
    result.tried += 1
    counts = result.by_mutator.setdefault(f"{mutant.kind}:{mutant.mutator.split('+')[0]}", Counter())
    found: list[tuple[str, str, str]] = []  # (defect type, step, detail)
    steps: dict[str, Any] = {}
    if job.get("hang"):
        result.hangs += 1
        found.append(("hang", "-", "killed after the timeout"))
    else:
        status = job["status"]
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            result.signals[name] += 1
            found.append(("signal", "-", name))
        elif os.WEXITSTATUS(status) != 0 or not job["output"]:
            found.append(("non-edgeguard-exception", "-", f"child exited {os.WEXITSTATUS(status)} without a result"))
        else:
            steps = json.loads(job["output"])["steps"]
    for step, entry in steps.items():
        kind = entry["result"]
        result.by_step.setdefault(step, Counter())[kind] += 1
        if kind == "clean":
            error_type, _, message = entry["detail"].partition(": ")
            result.clean_error_types[f"{step}: {error_type}"] += 1
            if "expected" not in message:
                result.unclear_messages[f"{step}: {entry['detail'][:120]}"] += 1
        elif kind != "ok":
            found.append((kind, step, entry.get("detail", "")))
    if job["opened"]:
        found.append(("read-outside-folder", "-", f"opened {sorted(set(job['opened']))[:5]}"))
    if found:
        for kind, _, _ in found:
            result.defects[kind] += 1
        counts["defect"] += 1
        result.defective_mutants += 1
        if len(result.examples) < 60:
            result.examples.append(
                {
                    "index": mutant.index,
                    "kind": mutant.kind,
                    "mutator": mutant.mutator,
                    "seed_model": mutant.seed_model,
                    "description": mutant.description[:300],
                    "defects": [{"type": k, "step": s, "detail": d} for k, s, d in found],
                }
            )
    elif all(entry["result"] == "ok" for entry in steps.values()):
        result.ran_fine += 1
        counts["ok"] += 1
    else:
        result.clean_errors += 1
        counts["clean"] += 1
