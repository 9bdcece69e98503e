"""edgeguard.model.signature: any classifier's input and output, and the one-output prepared graph.

Oracles: onnxruntime on the ORIGINAL file (its ZipMap rows, its label output) and the
scikit-learn model itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _classifiers import (
    SKLEARN_KINDS,
    digits_data,
    export_sklearn,
    iris_model_path,
    nhwc_uint8_model,
    sequence_model,
    sklearn_classifier,
    string_model,
    token_model,
    two_output_model,
)

from edgeguard.errors import ModelLoadError
from edgeguard.model.signature import (
    looks_like_probabilities,
    prepare_graph,
    read_signature,
    zipmap_to_array,
)


@pytest.fixture(scope="module")
def digits():
    return digits_data()


@pytest.fixture(scope="module", params=[(k, z) for k in SKLEARN_KINDS for z in (True, False)], ids=lambda p: f"{p[0]}-zipmap{p[1]}")
def sklearn_file(request, digits, tmp_path_factory):
    kind, zipmap = request.param
    x, y = digits
    model = sklearn_classifier(kind, x, y)
    path = export_sklearn(model, x, tmp_path_factory.mktemp(kind) / f"{kind}.onnx", zipmap=zipmap)
    return model, path, zipmap


def _outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


def test_sklearn_probabilities_equal_the_original_outputs_in_class_order(sklearn_file, digits):
    model, path, zipmap = sklearn_file
    x = digits[0][:40]
    proto = onnx.load(str(path))
    signature = read_signature(proto)
    assert signature.input.kind == "vector" and signature.input.sample_shape == (64,)
    assert signature.output.type == ("zipmap" if zipmap else "scores")
    assert signature.output.num_classes == 10
    prepared = prepare_graph(proto, signature)
    assert len(prepared.graph.output) == 1
    got = ort.InferenceSession(prepared.SerializeToString()).run(None, {signature.input.name: x})[0]
    original = _outputs(path, x)[signature.output.name]
    expected = zipmap_to_array(original, [int(c) for c in signature.output.class_labels]) if zipmap else original
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, model.predict_proba(x), atol=1e-4)
    assert looks_like_probabilities(got)


def test_sklearn_label_output_becomes_a_one_hot_of_the_models_label(sklearn_file, digits):
    model, path, _ = sklearn_file
    x = digits[0][:40]
    proto = onnx.load(str(path))
    label_name = next(o.name for o in proto.graph.output if "label" in o.name)
    signature = read_signature(proto, output=label_name)
    assert signature.output.type == "label" and signature.output.num_classes == 10
    prepared = prepare_graph(proto, signature)
    one_hot = ort.InferenceSession(prepared.SerializeToString()).run(None, {signature.input.name: x})[0]
    labels = _outputs(path, x)[label_name]
    np.testing.assert_array_equal(one_hot.argmax(axis=1), labels)
    np.testing.assert_array_equal(one_hot.sum(axis=1), np.ones(len(x)))
    np.testing.assert_array_equal(labels, model.predict(x))


def test_iris_bundled_model_has_a_fixed_batch_and_a_zipmap():
    proto = onnx.load(str(iris_model_path()))
    signature = read_signature(proto)
    assert signature.input.fixed_batch == 3 and signature.input.sample_shape == (2,)
    assert signature.output.type == "zipmap" and signature.output.class_labels == ("0", "1", "2")
    prepared = prepare_graph(proto, signature)
    x = np.random.default_rng(0).uniform(0, 5, size=(3, 2)).astype(np.float32)
    got = ort.InferenceSession(prepared.SerializeToString()).run(None, {"float_input": x})[0]
    expected = zipmap_to_array(_outputs(iris_model_path(), x)["probabilities"], [0, 1, 2])
    np.testing.assert_array_equal(got, expected)
    label = prepare_graph(proto, read_signature(proto, output="label"))  # the file imports no default opset
    one_hot = ort.InferenceSession(label.SerializeToString()).run(None, {"float_input": x})[0]
    np.testing.assert_array_equal(one_hot.argmax(1), _outputs(iris_model_path(), x)["label"])


def test_only_the_chosen_output_is_left_in_the_prepared_graph(tmp_path):
    path = two_output_model(tmp_path / "two.onnx")
    proto = onnx.load(str(path))
    signature = read_signature(proto)  # the first (N, K) float output is 'leak' (N, 6): picked by default
    assert signature.output.name == "leak"
    chosen = read_signature(proto, output="scores")
    prepared = prepare_graph(proto, chosen)
    session = ort.InferenceSession(prepared.SerializeToString())
    assert [o.name for o in session.get_outputs()] == ["scores"]
    with pytest.raises(Exception, match="leak"):  # noqa: B017 (onnxruntime: no such output)
        session.run(["leak"], {"x": np.ones((2, 6), np.float32)})


def test_input_kinds_and_layouts(tmp_path):
    sequence = read_signature(onnx.load(str(sequence_model(tmp_path / "s.onnx"))))
    assert (sequence.input.kind, sequence.input.sample_shape) == ("sequence", (5, 3))
    image = read_signature(onnx.load(str(nhwc_uint8_model(tmp_path / "i.onnx"))))
    assert (image.input.kind, image.input.layout, image.input.dtype) == ("image", "NHWC", "uint8")
    assert image.input.channels_first_shape == (3, 8, 8)
    assert image.output.output_kind == "probabilities"  # made by a Softmax


@pytest.mark.parametrize(
    "builder, words",
    [(token_model, ["int64", "token ids", "float32"]), (string_model, ["string", "float32"])],
)
def test_refused_inputs_say_what_is_supported(tmp_path, builder, words):
    proto = onnx.load(str(builder(tmp_path / "m.onnx")))
    with pytest.raises(ModelLoadError) as error:
        read_signature(proto)
    message = str(error.value)
    assert "expected float32 inputs of shape (N, F)" in message
    for word in words:
        assert word in message


def test_a_sequence_output_not_made_by_zipmap_is_refused_with_the_fix(tmp_path):
    proto = onnx.load(str(iris_model_path()))
    zipmap = next(n for n in proto.graph.node if n.op_type == "ZipMap")
    zipmap.op_type = "ZipMapLookalike"
    with pytest.raises(ModelLoadError, match="zipmap=False"):
        read_signature(proto, output="probabilities")


def test_an_ambiguous_image_layout_asks_for_input_layout():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 72])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="input_layout"):
        read_signature(proto)
    assert read_signature(proto, input_layout="NHWC").input.channels_first_shape == (3, 3, 8)


def test_unknown_output_name_lists_the_outputs():
    proto = onnx.load(str(iris_model_path()))
    with pytest.raises(ModelLoadError, match=r"\['label', 'probabilities'\]"):
        read_signature(proto, output="scores")


def test_zipmap_to_array_orders_by_class_and_refuses_other_keys():
    rows = [{2: 0.5, 0: 0.2, 1: 0.3}, {0: 1.0, 1: 0.0, 2: 0.0}]
    np.testing.assert_array_equal(zipmap_to_array(rows, [0, 1, 2]), np.array([[0.2, 0.3, 0.5], [1, 0, 0]], np.float32))
    with pytest.raises(ModelLoadError):
        zipmap_to_array(rows, [0, 1, 7])


def test_looks_like_probabilities():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert looks_like_probabilities(p)
    assert not looks_like_probabilities(p * 2)
    assert not looks_like_probabilities(np.log(p))
    assert not looks_like_probabilities(p[:1])  # one row proves nothing
