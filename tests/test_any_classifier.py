"""SafeModel, vet and the CLI on third-party classifiers: skl2onnx exports (with and without ZipMap),
onnxruntime's bundled logreg_iris.onnx (fixed batch of 3), an (N, T, F) sequence model, an NHWC
uint8 image model, a model with a second (leaky) output, and the inputs that are refused.

Oracles: the scikit-learn model itself (its label, its probabilities), onnxruntime on the
original file, and numpy rounding.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from _classifiers import (
    SKLEARN_KINDS,
    digits_data,
    export_sklearn,
    iris_model_path,
    manual_softmax_model,
    nhwc_uint8_model,
    sequence_model,
    sklearn_classifier,
    string_model,
    token_model,
    two_output_model,
)
from click.testing import CliRunner

from edgeguard import Argmax, Round, SafeModel, Softmax, vet
from edgeguard.cli import main
from edgeguard.errors import FilterError, InvalidInputError, ModelLoadError
from edgeguard.filters import OutputFilter
from edgeguard.model.signature import zipmap_to_array

VET_FAST = dict(seed=0, augment_seed=1, leakage_bootstrap=20, leakage_augmentations=1)


@pytest.fixture(scope="module")
def digits():
    return digits_data()


@pytest.fixture(scope="module")
def probe_file(digits, tmp_path_factory):
    x, y = digits
    path = tmp_path_factory.mktemp("probe") / "digits.npz"
    np.savez(path, x=x[:400], y=y[:400])
    return path


@pytest.fixture(scope="module", params=[(k, z) for k in SKLEARN_KINDS for z in (True, False)], ids=lambda p: f"{p[0]}-zipmap{p[1]}")
def sklearn_file(request, digits, tmp_path_factory):
    kind, zipmap = request.param
    x, y = digits
    model = sklearn_classifier(kind, x, y)
    return model, export_sklearn(model, x, tmp_path_factory.mktemp(kind) / f"{kind}.onnx", zipmap=zipmap)


# --- skl2onnx exports ----------------------------------------------------------------------------------------------
def test_sklearn_default_release_is_the_models_own_label(sklearn_file, digits):
    estimator, path = sklearn_file
    x = digits[0][:64]
    model = SafeModel(path)
    assert model.info.input_kind == "vector" and model.info.input_shape == (64,)
    assert model.info.class_names == tuple(str(c) for c in range(10))
    released = model.predict(x)
    np.testing.assert_array_equal(released, estimator.predict(x))
    assert model.predict(x[0]) == estimator.predict(x[:1])[0]  # one sample: a scalar
    assert model.capacity_bits == pytest.approx(math.log2(10))


def test_sklearn_rounded_probabilities(sklearn_file, digits):
    estimator, path = sklearn_file
    x = digits[0][:64]
    model = SafeModel(path, filters=[Round(2)])
    assert model.info.output_kind == "probabilities"
    expected = np.round(estimator.predict_proba(x).astype(np.float32), 2)
    released = model.predict(x)
    assert released.shape == (64, 10)
    # float32 ONNX arithmetic against sklearn's float64: a value on a rounding edge may differ by one step
    assert np.mean(np.abs(released - expected) > 1e-6) < 0.01
    assert np.abs(released - expected).max() <= 0.01 + 1e-6
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})))
    raw = outputs[model.info.output_source]
    raw = zipmap_to_array(raw, list(range(10))) if isinstance(raw, list) else raw
    np.testing.assert_allclose(released, np.round(raw, 2), atol=1e-6)  # bit for bit against onnxruntime


def test_sklearn_vet_ends_with_a_verdict(sklearn_file, probe_file):
    _, path = sklearn_file
    report = vet(path, probe_file, **VET_FAST)
    assert report.verdict in ("honest", "vicious", "inconclusive")
    assert report.tests["leakage"].status == "ran"
    assert report.tests["leakage"].details["target"].startswith("standardised features")
    assert len(report.tests["leakage"].details["r2_per_feature"]) == 64
    assert report.tests["consistency"].status == "ran"
    # image-calibrated thresholds: a raw gain on features is no evidence of honesty without a twin
    assert report.verdict != "honest"


def test_label_output_is_a_label_only_release(sklearn_file, digits):
    estimator, path = sklearn_file
    x = digits[0][:32]
    model = SafeModel(path, output=_label_name(path))
    assert model.info.output_type == "label"
    np.testing.assert_array_equal(model.predict(x), estimator.predict(x))
    assert model.capacity_bits == pytest.approx(math.log2(10))
    with pytest.raises(FilterError, match="label-only"):
        SafeModel(path, output=_label_name(path), filters=[Round(2)])


def _label_name(path):
    import onnx

    return next(o.name for o in onnx.load(str(path)).graph.output if "label" in o.name)


# --- onnxruntime's bundled model: fixed batch of 3, label + ZipMap ------------------------------------------------
def test_iris_fixed_batch_is_split_and_padded():
    path = iris_model_path()
    model = SafeModel(path, filters=[Round(3)])
    assert model.info.fixed_batch == 3
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 6, size=(7, 2)).astype(np.float32)
    released = model.predict(x)
    assert released.shape == (7, 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = np.concatenate(
        [zipmap_to_array(session.run(["probabilities"], {"float_input": x[i : i + 3]})[0], [0, 1, 2]) for i in (0, 3)]
        + [zipmap_to_array(session.run(["probabilities"], {"float_input": x[[6, 6, 6]]})[0], [0, 1, 2])[:1]]
    )
    np.testing.assert_allclose(released, np.round(expected, 3), atol=1e-6)
    labels = SafeModel(path).predict(x)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    assert SafeModel(path).predict(x[0]).shape == ()  # one sample, padded to 3 inside


def test_iris_vet_ends_with_a_verdict(tmp_path):
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    lines = ["a,b,species"] + [f"{r[0]},{r[1]},{t}" for r, t in zip(x, y)]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["vet", str(iris_model_path()), "-p", str(tmp_path / "iris.csv"), "--label-column", "species",
               "--format", "json", "-q", "--augment-seed", "1"],
    )
    report = json.loads(result.output)
    assert result.exit_code in (0, 1, 3), result.output
    assert report["verdict"] in ("honest", "vicious", "inconclusive")
    assert report["model"]["fixed_batch"] == 3


# --- other input kinds ----------------------------------------------------------------------------------------------
def test_sequence_model(tmp_path):
    path = sequence_model(tmp_path / "seq.onnx")
    model = SafeModel(path, filters=[Softmax(), Round(2)])
    assert model.info.input_kind == "sequence" and model.info.input_shape == (5, 3)
    x = np.random.default_rng(0).normal(size=(6, 5, 3)).astype(np.float32)
    logits = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), np.round(expected, 2), atol=1e-6)
    with pytest.raises(InvalidInputError, match=r"expected a batch \(N, 5, 3\).*got shape \(6, 3, 5\)"):
        model.predict(x.transpose(0, 2, 1).copy())


def test_nhwc_uint8_image_model(tmp_path):
    path = nhwc_uint8_model(tmp_path / "img.onnx")
    model = SafeModel(path, filters=[Round(2)])
    assert (model.info.input_layout, model.info.input_dtype, model.info.pixel_range) == ("NHWC", "uint8", (0.0, 255.0))
    x = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    expected = ort.InferenceSession(str(path)).run(None, {"image": x})[0]
    np.testing.assert_allclose(model.predict(x), np.round(expected, 2), atol=1e-6)
    with pytest.raises(InvalidInputError, match="expected uint8 pixels"):
        model.predict(x.astype(np.float32) / 255)
    with pytest.raises(InvalidInputError, match=r"transpose\(0, 2, 3, 1\)"):
        model.predict(x.transpose(0, 3, 1, 2).copy())


def test_nhwc_uint8_image_model_vets(tmp_path):
    path = nhwc_uint8_model(tmp_path / "img.onnx")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(250, 3, 8, 8), dtype=np.uint8)  # the probe as images (N, C, H, W)
    np.savez(tmp_path / "probe.npz", x=x, y=np.arange(250) % 5)
    report = vet(path, tmp_path / "probe.npz", **VET_FAST)
    assert report.tests["leakage"].status == "ran" and report.verdict in ("honest", "vicious", "inconclusive")


# --- several outputs: only the chosen one leaves --------------------------------------------------------------------
def test_only_the_chosen_output_ever_leaves(tmp_path):
    path = two_output_model(tmp_path / "two.onnx")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    leak = 2 * x
    for filters in ([Argmax()], [Softmax(), Round(3)], [Softmax(), Round(3), _Identity()]):
        safe = SafeModel(path, output="scores", filters=filters)
        names = [o.name for o in safe.session.get_outputs()]
        assert len(names) == 1 and "leak" not in names  # the graph run computes the release only
    model = SafeModel(path, output="scores", filters=[Softmax(), Round(3)], allow_unsafe_raw_outputs=True)
    assert "leak" not in [o.name for o in model.session.get_outputs()]  # the raw output kept is the chosen one
    raw = model.predict_unfiltered_unsafe(x)
    scores = ort.InferenceSession(str(path)).run(["scores"], {"x": x})[0]
    np.testing.assert_allclose(raw, scores, rtol=1e-6)
    assert not np.allclose(raw[:, :3], leak[:, :3])
    for filters in ([Argmax()], [Softmax(), Round(3)]):
        released = SafeModel(path, output="scores", filters=filters).predict(x)
        assert released.shape in ((4,), (4, 3))
    # by default the first float (N, K) output is taken: here the leaky one, and K = 6 says so
    default = SafeModel(path, filters=[Round(3)])
    assert default.info.output_source == "leak" and default.num_classes == 6
    report = vet(path, _vector_probe(tmp_path, 6, 3), output="scores", **VET_FAST)
    assert report.model["output_source"] == "scores"


class _Identity(OutputFilter):
    """A numpy-only stage: the graph then ends in the raw (chosen) output, filtered in Python."""

    name = "identity"

    def apply(self, outputs, rng, *, user_id=None):
        return outputs


def _vector_probe(tmp_path, features, classes, n=240):
    rng = np.random.default_rng(0)
    path = tmp_path / "vectors.npz"
    np.savez(path, x=rng.normal(size=(n, features)).astype(np.float32), y=np.arange(n) % classes)
    return path


def test_probabilities_recognised_from_the_values(tmp_path):
    path = manual_softmax_model(tmp_path / "y.onnx")
    model = SafeModel(path, filters=[Round(2)])
    assert (model.info.output_kind, model.info.output_kind_source) == ("probabilities", "values")
    scores = SafeModel(two_output_model(tmp_path / "two.onnx"), output="scores", filters=[Argmax()])
    assert (scores.info.output_kind, scores.info.output_kind_source) == ("logits", "default")  # values: not a simplex
    report = vet(path, _vector_probe(tmp_path, 4, 3), **VET_FAST)
    assert (report.model["output_kind"], report.model["output_kind_source"]) == ("probabilities", "values")


# --- the API's input options ----------------------------------------------------------------------------------------
def test_input_shape_range_and_layout_options(tmp_path):
    path = sequence_model(tmp_path / "seq.onnx")
    bounded = SafeModel(path, input_range=(-1.0, 1.0), filters=[Argmax()])
    with pytest.raises(InvalidInputError, match=r"\[-1, 1\]"):
        bounded.predict(np.full((2, 5, 3), 3.0, np.float32))
    with pytest.raises(ModelLoadError, match="input_shape"):
        SafeModel(path, input_shape=(4, 3))
    with pytest.raises(ModelLoadError, match="only for image inputs"):
        SafeModel(path, input_layout="NHWC")
    with pytest.raises(InvalidInputError, match="finite feature values"):
        SafeModel(path).predict(np.full((1, 5, 3), np.nan, np.float32))


# --- refusals ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "builder, words",
    [(token_model, ["int64", "token ids"]), (string_model, ["string input"])],
    ids=["int64-token-ids", "strings"],
)
def test_refused_inputs(tmp_path, builder, words):
    path = builder(tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError) as error:
        SafeModel(path)
    for word in ["expected float32 inputs of shape (N, F)", *words]:
        assert word in str(error.value)


def test_refused_zipmap_and_unknown_output(tmp_path):
    import onnx

    proto = onnx.load(str(iris_model_path()))
    next(n for n in proto.graph.node if n.op_type == "ZipMap").op_type = "ZipMapLookalike"
    proto.graph.node[-1].domain = "ai.onnx.ml"
    path = tmp_path / "fake_zipmap.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match="zipmap=False"):
        SafeModel(path, output="probabilities")
    with pytest.raises(ModelLoadError, match=r"\['label', 'probabilities'\]"):
        SafeModel(iris_model_path(), output="scores")


def test_cli_vet_refusal_and_model_output(tmp_path, probe_file):
    path = token_model(tmp_path / "tokens.onnx")
    result = CliRunner().invoke(main, ["vet", str(path), "-p", str(probe_file), "--format", "json", "-q"])
    assert result.exit_code == 2
    assert "int64" in result.output
    two = two_output_model(tmp_path / "two.onnx")
    probe = _vector_probe(tmp_path, 6, 3)
    args = ["vet", str(two), "-p", str(probe), "--format", "json", "-q", "--augment-seed", "1", "--model-output", "scores"]
    result = CliRunner().invoke(main, args)
    report = json.loads(result.output)
    assert report["model"]["output_source"] == "scores" and len(report["model"]["class_names"]) == 3
    result = CliRunner().invoke(main, [*args[:-1], "nope"])
    assert result.exit_code == 2 and "['leak', 'scores']" in result.output
