"""Tiny hand-built ONNX classifiers and probe sets for the vet tests (no training, milliseconds).

Images are 1x12x12 (SSIM needs at least 11x11 pixels), three classes, each class a
different bright stripe plus noise. ``linear_classifier`` is a Gemm on the flattened
pixels whose weights are the class templates, so it classifies the probe set well.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPE = (1, 12, 12)
CLASSES = ("stripe-top", "stripe-middle", "stripe-bottom")
PIXELS = int(np.prod(SHAPE))


def templates() -> np.ndarray:
    out = np.zeros((len(CLASSES),) + SHAPE, dtype=np.float32)
    for c in range(len(CLASSES)):
        out[c, 0, 4 * c : 4 * c + 4, :] = 1.0
    return out


def probe_arrays(n: int, seed: int = 0, classes: int = len(CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 12 x 12) and labels drawn from the first ``classes`` classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    base = templates()[y] * rng.uniform(0.5, 1.0, size=(n, 1, 1, 1))
    x = np.clip(base + rng.normal(0.0, 0.15, size=base.shape), 0.0, 1.0)
    return (x[:, 0] * 255).round().astype(np.uint8), y.astype(np.int64)


def write_probe(path: Path, n: int, seed: int = 0, classes: int = len(CLASSES), names: bool = True) -> Path:
    x, y = probe_arrays(n, seed, classes)
    if names:
        np.savez(path, x=x, y=y, class_names=np.array(CLASSES))
    else:
        np.savez(path, x=x, y=y)
    return path


def metadata(output_kind: str = "logits", task_type: str = "multiclass") -> dict[str, str]:
    return {
        "task_type": task_type,
        "class_names": json.dumps(list(CLASSES)),
        "input_shape": json.dumps(list(SHAPE)),
        "pixel_range": json.dumps([0.0, 1.0]),
        "output_kind": output_kind,
    }


def _finish(graph: onnx.GraphProto, props: dict[str, str] | None, opset: int = 17, **kwargs) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)
    model.ir_version = 8
    if props:
        helper.set_model_props(model, props)
    return model


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *SHAPE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", len(CLASSES)])
    return x, y


def _weights(scale: float = 4.0) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    w = (templates().reshape(len(CLASSES), -1) * scale / 16.0).astype(np.float32)
    b = np.zeros(len(CLASSES), dtype=np.float32) - scale / 8.0
    return numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")


def linear_classifier(
    output_kind: str = "logits", props: bool = True, extra_nodes=(), tail: str = "logits", task_type: str = "multiclass"
) -> onnx.ModelProto:
    """input -> Flatten -> Gemm(W^T) -> [extra nodes reading 'logits'] -> [Softmax/Sigmoid] -> output."""
    x, y = _io()
    w, b = _weights()
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1, name="gemm"),
        *extra_nodes,
    ]
    if output_kind == "probabilities" and task_type == "multilabel":
        nodes.append(helper.make_node("Sigmoid", [tail], ["output"], name="sigmoid"))
    elif output_kind == "probabilities":
        nodes.append(helper.make_node("Softmax", [tail], ["output"], axis=1, name="softmax"))
    else:
        nodes.append(helper.make_node("Identity", [tail], ["output"], name="out"))
    graph = helper.make_graph(nodes, "linear", [x], [y], [w, b])
    return _finish(graph, metadata(output_kind, task_type) if props else None)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def rounding_classifier() -> onnx.ModelProto:
    """Logits rounded to 1 decimal (Mul, Round, Div) before the output: a non-differentiable path."""
    extra = [
        helper.make_node(
            "Constant", [], ["ten"], value=numpy_helper.from_array(np.array(10.0, np.float32)), name="c10"
        ),
        helper.make_node("Mul", ["logits", "ten"], ["scaled"], name="scale"),
        helper.make_node("Round", ["scaled"], ["rounded"], name="round"),
        helper.make_node("Div", ["rounded", "ten"], ["back"], name="unscale"),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def integer_cast_classifier() -> onnx.ModelProto:
    """Logits cast to int32 and back: also non-differentiable."""
    extra = [
        helper.make_node("Cast", ["logits"], ["as_int"], to=TensorProto.INT32, name="to_int"),
        helper.make_node("Cast", ["as_int"], ["back"], to=TensorProto.FLOAT, name="to_float"),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def shape_cast_classifier() -> onnx.ModelProto:
    """A Cast to int64 on a *shape* (Shape -> Cast -> Reshape): standard in exports, no finding."""
    extra = [
        helper.make_node("Shape", ["logits"], ["shape"], name="shape"),
        helper.make_node("Cast", ["shape"], ["shape64"], to=TensorProto.INT64, name="cast_shape"),
        helper.make_node("Reshape", ["logits", "shape64"], ["back"], name="reshape"),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def custom_domain_classifier() -> onnx.ModelProto:
    extra = [helper.make_node("Leak", ["logits"], ["back"], domain="evil.ops", name="leak")]
    model = linear_classifier(extra_nodes=extra, tail="back")
    model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    return model


def control_flow_classifier() -> onnx.ModelProto:
    """If(mean(input) > 0.5) then logits else -logits."""
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)
    then_graph = helper.make_graph([helper.make_node("Identity", ["logits"], ["then_y"])], "then", [], [then_out])
    else_graph = helper.make_graph([helper.make_node("Neg", ["logits"], ["else_y"])], "else", [], [else_out])
    extra = [
        helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0, name="mean"),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32)), name="c"),
        helper.make_node("Greater", ["mean", "half"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["back"], then_branch=then_graph, else_branch=else_graph, name="switch"),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def huge_constant_classifier() -> onnx.ModelProto:
    """Adds a ConstantOfShape asking for 100000 x 100000 floats (40 GB)."""
    extra = [
        helper.make_node(
            "Constant", [], ["big_shape"], value=numpy_helper.from_array(np.array([100000, 100000], np.int64)), name="s"
        ),
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="alloc"),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0, name="sum"),
        helper.make_node("Add", ["logits", "total"], ["back"], name="add"),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def external_data_classifier(folder: Path, location: str) -> Path:
    """Save the linear classifier with W stored externally at ``location`` (may escape ``folder``)."""
    model = linear_classifier()
    for tensor in model.graph.initializer:
        if tensor.name == "W":
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", "0"), ("length", str(PIXELS * len(CLASSES) * 4))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def full_report(model_path: Path, verdict: str) -> dict:
    """A complete vet report for ``model_path`` whose scores give ``verdict`` under the installed thresholds.

    Built by hand (no vet run) for the SafeModel policy tests: it is exactly what a provider
    who fabricates scores could ship, which is why reviewers sign reports (verdict_key).
    """
    from edgeguard._version import __version__
    from edgeguard.model import model_sha256
    from edgeguard.verdicts.rule import decide_record
    from edgeguard.verdicts.thresholds import load_thresholds

    table = load_thresholds()
    excess = {"honest": [-0.4, 0.1], "inconclusive": [0.1, 0.6], "vicious": [1.0, 1.5]}[verdict]
    ran = {"status": "ran", "details": {}}
    record = {
        "model_path": str(model_path),
        "model_sha256": model_sha256(model_path),
        "verdict": verdict,
        "findings": [],
        "tests": {
            "consistency": {**ran, "score": 0.0, "flagged": False},
            "precision": {**ran, "score": 1e-7},
            "continuity": {**ran, "score": 0.5},
            "leakage": {
                "status": "ran",
                "score": sum(excess) / 2,
                "details": {"ci95": excess, "statistic": "excess_gain_db", "threshold_entry": "leakage_excess_twin"},
            },
        },
        "probe": {"samples": 1000, "coverage_problems": []},
        "settings": {"tests": ["consistency", "precision", "continuity", "leakage"]},
        "thresholds": {"tests": table["tests"], "combined": table["combined"]},
        "thresholds_sha256": table["sha256"],
        "edgeguard_version": __version__,
        "checked": {"runtime": "onnxruntime", "batch_sizes": [1, 2, 3, 8]},
    }
    assert decide_record(record, table).verdict == verdict
    return record
