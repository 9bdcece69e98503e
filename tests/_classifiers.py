"""Third-party and hand-built classifiers for tests/test_any_classifier.py.

- scikit-learn models exported by skl2onnx (LogisticRegression, MLPClassifier,
  RandomForestClassifier), with and without the default ZipMap output;
- onnxruntime's bundled ``logreg_iris.onnx`` (fixed batch of 3, a label and a ZipMap);
- small hand-built graphs: an (N, T, F) sequence model, an NHWC uint8 image model, a model
  with a second (leaky) output, and inputs edgeguard refuses (int64 token ids, strings).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SKLEARN_KINDS = ("logistic", "mlp", "forest")


def digits_data(features: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as float32 64-vectors (values 0..16), 10 classes."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:, :features].astype(np.float32), y.astype(np.int64)


def sklearn_classifier(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "logistic":
        model = LogisticRegression(max_iter=300)
    elif kind == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, random_state=seed)
    elif kind == "forest":
        model = RandomForestClassifier(n_estimators=8, max_depth=6, random_state=seed)
    else:
        raise ValueError(kind)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x, y)


def export_sklearn(model, x: np.ndarray, path: Path, *, zipmap: bool) -> Path:
    """skl2onnx export (opset 17); ``zipmap=False`` returns a float (N, K) probabilities tensor."""
    from skl2onnx import to_onnx

    options = None if zipmap else {id(model): {"zipmap": False}}
    proto = to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(proto.SerializeToString())
    return path


def iris_model_path() -> Path:
    import onnxruntime

    return Path(os.path.dirname(onnxruntime.__file__)) / "datasets" / "logreg_iris.onnx"


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17, ml: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def sequence_model(path: Path, steps: int = 5, features: int = 3, classes: int = 4, seed: int = 0) -> Path:
    """(N, T, F) float -> mean over T -> linear -> (N, K) logits."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["logits"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [w, b],
    )
    path.write_bytes(model.SerializeToString())
    return path


def nhwc_uint8_model(path: Path, side: int = 8, channels: int = 3, classes: int = 5, seed: int = 0) -> Path:
    """(N, H, W, C) uint8 -> /255 -> flatten -> linear -> softmax (N, K) probabilities."""
    rng = np.random.default_rng(seed)
    size = side * side * channels
    w = numpy_helper.from_array(rng.normal(size=(size, classes)).astype(np.float32) / 4, "w")
    scale = numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["s"]),
        helper.make_node("Flatten", ["s"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", side, side, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [w, scale],
    )
    path.write_bytes(model.SerializeToString())
    return path


def two_output_model(path: Path, features: int = 6, classes: int = 3, seed: int = 0) -> Path:
    """Scores (N, K) and a second output 'leak' that is the input itself, times 2."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"]),
        helper.make_node("Mul", ["x", "two"], ["leak"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("leak", TensorProto.FLOAT, ["N", features]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes]),
        ],
        [w, two],
    )
    path.write_bytes(model.SerializeToString())
    return path


def token_model(path: Path, length: int = 8, vocabulary: int = 20, classes: int = 2) -> Path:
    """int64 token ids (N, L) -> embedding (Gather) -> mean -> (N, K)."""
    table = numpy_helper.from_array(np.ones((vocabulary, classes), dtype=np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["tokens", "table"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["logits"], axes=[1], keepdims=0),
    ]
    nodes[0] = helper.make_node("Gather", ["table", "tokens"], ["e"])
    model = _model(
        nodes,
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", length])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [table],
    )
    path.write_bytes(model.SerializeToString())
    return path


def string_model(path: Path) -> Path:
    """A string input (N,) -> LabelEncoder -> (N,) float: refused at load."""
    nodes = [
        helper.make_node(
            "LabelEncoder", ["text"], ["score"], domain="ai.onnx.ml", keys_strings=["a", "b"], values_floats=[0.0, 1.0]
        )
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        ml=True,
    )
    path.write_bytes(model.SerializeToString())
    return path


def manual_softmax_model(path: Path, features: int = 4, classes: int = 3, seed: int = 0) -> Path:
    """Probabilities computed by hand (Exp / ReduceSum), under a name that says nothing: only the values tell."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["z"]),
        helper.make_node("Exp", ["z"], ["e"]),
        helper.make_node("ReduceSum", ["e"], ["s"], axes=[1], keepdims=1, noop_with_empty_axes=0),
        helper.make_node("Div", ["e", "s"], ["y"]),
    ]
    nodes[2] = helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1)
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        [w, axes],
    )
    path.write_bytes(model.SerializeToString())
    return path
