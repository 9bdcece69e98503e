"""The fuzzer's seeds: the bundled exported models, tiny hand-built models, and a probe set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import edgeguard

ASSETS = Path(edgeguard.__file__).parent / "assets"
CANARY_NAMES = ("canary.bin", "bias.bin", "weights.bin", "m.onnx.data", "data.bin", "model.onnx", "x.png")
INTERESTING_INTS = (0, 1, -1, 2, 3, 255, 256, 1 << 15, (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 62), -(1 << 62), 7, 28)
ALLOC_MARKERS = ("bad_alloc", "failed to allocate", "memoryerror", "cannot allocate", "out of memory")



# -- seeds ----------------------------------------------------------------------------------------


def tiny_models() -> dict[str, Any]:
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


def seed_models() -> dict[str, Any]:
    import onnx

    seeds = {name: onnx.load(str(ASSETS / f"{name}.onnx")) for name in ("honest", "vicious", "honest_decoder")}
    seeds.update(tiny_models())
    return seeds


def probe_arrays(n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(ASSETS / "fashion_mnist_test_subset.npz") as data:
        return data["x"][:n].copy(), data["y"][:n].copy(), data["class_names"].copy()
