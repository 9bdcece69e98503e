"""SafeModel: loading, input validation, fail-closed inference, providers, threads, vet policy, budgets."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _vet_models import full_report
from onnx import TensorProto, helper, numpy_helper

from edgeguard import (
    Argmax,
    ClassLabels,
    ClippedLaplace,
    FilterError,
    FilterPipeline,
    GaussianNoise,
    InferenceError,
    InvalidInputError,
    LaplaceNoise,
    ModelLoadError,
    ModelRefusedError,
    OutputFilter,
    PrivacyBudgetExceededError,
    Round,
    SafeModel,
    Sigmoid,
    Softmax,
    UnsafeModelError,
    ViciousModelWarning,
    model_sha256,
    pipeline_capacity_bits,
)
from edgeguard.errors import ConfigError
from edgeguard.model import ModelInfo
from edgeguard.safe_model import GPU_PROVIDERS
from edgeguard.safe_model.session import resolve_providers as _resolve_providers

SHAPE = (1, 12, 12)
CLASSES = tuple(f"class{i}" for i in range(10))


def _info(output_kind="logits", task_type="multiclass", classes=CLASSES, shape=SHAPE, name="image", out="scores"):
    return ModelInfo(name, out, shape, classes, task_type, (0.0, 1.0), output_kind, True)


def _with_metadata(path: Path, info: ModelInfo) -> Path:
    model = onnx.load(str(path))
    helper.set_model_props(model, info.to_metadata_props())
    onnx.save(model, str(path))
    return path


def _export_cnn(path: Path, softmax: bool) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layers = [
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 5 * 5, 10),
    ]
    if softmax:
        layers.append(torch.nn.Softmax(dim=1))
    net = torch.nn.Sequential(*layers).eval()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, *SHAPE),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
        )
    return _with_metadata(path, _info("probabilities" if softmax else "logits"))


def _linear(
    path: Path,
    info: ModelInfo | None,
    *,
    outputs=10,
    batch="N",
    out_dim=None,
    reshape_to=None,
    external_location=None,
) -> Path:
    """A tiny Flatten -> MatMul -> Add classifier built with onnx.helper (edge cases the CNN cannot show)."""
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.normal(size=(144, outputs)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.normal(size=(outputs,)).astype(np.float32), "bias")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1)]
    source = "flat"
    if reshape_to is not None:
        shape = numpy_helper.from_array(np.array(reshape_to, dtype=np.int64), "shape")
        nodes.append(helper.make_node("Reshape", ["flat", "shape"], ["reshaped"]))
        source = "reshaped"
    nodes += [
        helper.make_node("MatMul", [source, "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["scores"]),
    ]
    initializers = [weight, bias] + ([shape] if reshape_to is not None else [])
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, *SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, out_dim or outputs])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if info is not None:
        helper.set_model_props(model, info.to_metadata_props())
    if external_location is not None:
        weight_proto = model.graph.initializer[0]
        weight_proto.ClearField("raw_data")
        weight_proto.data_location = TensorProto.EXTERNAL
        entry = weight_proto.external_data.add()
        entry.key, entry.value = "location", external_location
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "logits": _export_cnn(folder / "cnn_logits.onnx", softmax=False),
        "probabilities": _export_cnn(folder / "cnn_softmax.onnx", softmax=True),
        "liar": _linear(folder / "liar.onnx", _info("probabilities")),
        "wide": _linear(folder / "wide.onnx", _info(), outputs=12),
        "wide_dynamic": _linear(folder / "wide_dynamic.onnx", _info(), outputs=12, out_dim="K"),
        "fixed_batch": _linear(folder / "fixed.onnx", _info(), batch=1),
        "broken": _linear(folder / "broken.onnx", _info(), reshape_to=[5, -1], out_dim="M"),
        "multilabel": _linear(folder / "multilabel.onnx", _info(task_type="multilabel")),
        "no_metadata": _linear(folder / "plain.onnx", None),
    }


def _raw(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _images(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


# --- predictions -------------------------------------------------------------------------------------------
def test_predict_applies_filters_to_the_model_outputs(models):
    x = _images()
    model = SafeModel(models["logits"], filters=[Softmax(), Round(2)], input_dither=False)
    released = model.predict(x)
    expected = Round(2)(Softmax()(_raw(models["logits"], x)))
    np.testing.assert_allclose(released, expected, atol=1e-6)
    assert released.shape == (5, 10) and released.dtype == np.float32
    np.testing.assert_allclose(model.predict(x[0]), expected[0], atol=1e-6)  # one sample -> one row


def test_default_release_is_the_label_only(models):
    x = _images(8)
    model = SafeModel(models["logits"])
    labels = model.predict(x)
    np.testing.assert_array_equal(labels, _raw(models["logits"], x).argmax(axis=1))
    assert labels.dtype == np.int64
    single = model.predict(x[3])
    assert np.ndim(single) == 0 and single == labels[3]
    assert model.capacity_bits == pytest.approx(np.log2(10))
    assert [f.name for f in SafeModel(models["multilabel"]).pipeline] == ["class_labels"]


def test_probability_models_and_type_checks(models):
    x = _images()
    model = SafeModel(models["probabilities"], filters=[Round(3)], input_dither=False)
    np.testing.assert_allclose(model.predict(x), np.round(_raw(models["probabilities"], x), 3), atol=1e-6)
    assert model.capacity_bits == pipeline_capacity_bits([Round(3)], 10, input_kind="probabilities") < 75
    with pytest.raises(FilterError, match="expected logits, got probabilities"):
        SafeModel(models["probabilities"], filters=[Softmax(), Round(2)], input_dither=False)
    with pytest.raises(FilterError, match="use Sigmoid"):
        SafeModel(models["multilabel"], filters=[Softmax()], input_dither=False)
    multilabel = SafeModel(models["multilabel"], filters=[Sigmoid(), Round(1)], input_dither=False)
    assert multilabel.predict(x).shape == (5, 10)
    assert multilabel.capacity_bits == pytest.approx(10 * np.log2(11))


def test_empty_filters_and_capacity_limit_are_refused(models):
    with pytest.raises(FilterError, match="at least one output filter"):
        SafeModel(models["logits"], filters=[], input_dither=False)
    with pytest.raises(FilterError, match="at most 20 bits"):
        SafeModel(models["logits"], filters=[Softmax()], max_capacity_bits=20, input_dither=False)
    assert SafeModel(models["logits"], filters=[Argmax()], max_capacity_bits=20, input_dither=False).capacity_bits < 4


def test_raw_outputs_need_the_explicit_unsafe_option(models):
    x = _images()
    with pytest.raises(FilterError, match="allow_unsafe_raw_outputs=True"):
        SafeModel(models["logits"]).predict_unfiltered_unsafe(x)
    unsafe = SafeModel(models["logits"], allow_unsafe_raw_outputs=True)
    np.testing.assert_allclose(unsafe.predict_unfiltered_unsafe(x), _raw(models["logits"], x), rtol=1e-5)
    assert unsafe.to_dict()["raw_outputs_enabled"] is True


def test_model_without_metadata_falls_back_to_the_graph(models):
    model = SafeModel(models["no_metadata"], filters=[Softmax(), Round(2)], input_dither=False)
    assert model.info.declared is False and model.info.input_shape == SHAPE
    assert model.predict(_images()).shape == (5, 10)


# --- input validation ----------------------------------------------------------------------------------------
BAD_INPUTS = {
    "no-channel-axis": (lambda x: x[:, 0], r"expected a batch \(N, 1, 12, 12\).*got shape \(5, 12, 12\).*x\[:, None\]"),
    "channels-last": (lambda x: x.transpose(0, 2, 3, 1), r"got shape \(5, 12, 12, 1\).*transpose\(0, 3, 1, 2\)"),
    "wrong-size": (lambda x: np.zeros((2, 1, 28, 28), np.float32), r"got shape \(2, 1, 28, 28\).*resize the images"),
    "2d-image": (lambda x: x[0, 0], r"got shape \(12, 12\); add the channel axis with x\[None\]"),
    "empty": (lambda x: x[:0], "expected at least one sample"),
    "uint8": (lambda x: (x * 255).astype(np.uint8), r"expected float32 pixels, got uint8.*/ 255"),
    "float64": (lambda x: x.astype(np.float64), r"got float64.*allow_float64=True"),
    "float16": (lambda x: x.astype(np.float16), "got float16"),
    "list": (lambda x: x.tolist(), "expected a numpy array, got list"),
    "range-255": (lambda x: x * 255, r"expected pixel values in \[0, 1\].*got values in \[.*\].*x / 255"),
    "negative": (lambda x: x - 0.5, r"expected pixel values in \[0, 1\].*rescale"),
    "nan": (lambda x: np.where(np.arange(x.size).reshape(x.shape) < 3, np.nan, x).astype(np.float32), "got 3 NaN"),
    "inf": (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.inf, x).astype(np.float32), "got 1 inf"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_are_refused_with_expected_and_got(models, case):
    make, message = case
    model = SafeModel(models["logits"], filters=[Softmax(), Round(2)], input_dither=False)
    with pytest.raises(InvalidInputError, match=message) as caught:
        model.predict(make(_images()))
    assert str(caught.value).startswith("expected")


def test_float64_only_when_allowed_and_non_contiguous_inputs_work(models):
    x = _images()
    model = SafeModel(models["logits"], filters=[Round(4)], allow_float64=True, input_dither=False)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), model.predict(x))
    wide = np.concatenate([x, x], axis=3)[:, :, :, ::2]  # a strided view
    np.testing.assert_array_equal(model.predict(wide), model.predict(np.ascontiguousarray(wide)))


def test_fixed_batch_models_take_any_batch(models):
    model = SafeModel(models["fixed_batch"], filters=[Argmax()], input_dither=False)
    assert model.info.fixed_batch == 1
    one = np.concatenate([model.predict(_images(5)[i : i + 1]) for i in range(5)])
    np.testing.assert_array_equal(model.predict(_images(5)), one)  # split into batches of 1


# --- fail closed -------------------------------------------------------------------------------------------------
class _Leaky(OutputFilter):
    """A buggy filter whose error message quotes the outputs it got."""

    name = "leaky"

    def apply(self, outputs, rng, *, user_id=None):
        raise ValueError(f"cannot filter {outputs!r} {outputs.tolist()}")


def _mentions(error: BaseException, raw: np.ndarray) -> list[str]:
    """Every place the error exposes a value close to one of the raw outputs."""
    found = []
    texts = [str(error), repr(error.args), "".join(traceback.format_exception(error))]
    for text in texts:
        found += [f"text:{v:.4f}" for v in raw.ravel() if f"{v:.4f}" in text]
    for link in (error.__cause__, error.__context__):
        if link is not None:
            found.append(f"chained {type(link).__name__}")
    for attribute in vars(error).values():
        if isinstance(attribute, np.ndarray):
            found.append("array attribute")
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == __file__:  # the test's own frames hold the reference outputs
            tb = tb.tb_next
            continue
        for name, value in tb.tb_frame.f_locals.items():
            if isinstance(value, np.ndarray) and value.shape[-1:] == raw.shape[-1:]:
                if value.size >= raw.shape[-1] and np.allclose(value.reshape(-1, raw.shape[-1])[0], raw[0], atol=1e-3):
                    found.append(f"frame local {tb.tb_frame.f_code.co_name}.{name}")
        tb = tb.tb_next
    return found


@pytest.mark.parametrize(
    "filters", [[_Leaky()], [Softmax(), _Leaky()], [GaussianNoise(0.01), _Leaky()]], ids=["raw", "softmax", "noisy"]
)
def test_a_failing_filter_releases_nothing_and_leaks_nothing(models, filters):
    x = _images(2)
    raw = _raw(models["logits"], x)
    model = SafeModel(models["logits"], filters=filters)
    with pytest.raises(FilterError, match="ValueError in filter 'leaky'") as caught:
        model.predict(x)
    assert _mentions(caught.value, raw) == []
    if len(filters) > 1:
        assert _mentions(caught.value, Softmax()(raw)) == []


def test_leak_detector_can_fail(models):
    """The check above would notice raw outputs carried by an error (so it can fail)."""
    raw = _raw(models["logits"], _images(2))
    try:
        raise ValueError(f"{raw.tolist()}")
    except ValueError as error:
        assert _mentions(error, raw)


def test_onnxruntime_failures_become_inference_errors(models):
    with pytest.raises(InferenceError, match="expected onnxruntime to run the model") as caught:
        SafeModel(models["broken"], filters=[Argmax()]).predict(_images(2))  # 288 values cannot reshape to (5, -1)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_outputs_that_contradict_the_metadata_are_not_released(models):
    with pytest.raises(InferenceError, match="expected probabilities as the model's metadata declares"):
        SafeModel(models["liar"], filters=[Round(2)]).predict(_images())
    with pytest.raises(ModelLoadError, match=r"expected the graph output to have shape \(N, 10\)"):
        SafeModel(models["wide"], filters=[Argmax()])
    with pytest.raises(InferenceError, match=r"expected model outputs of shape \(5, 10\)"):
        SafeModel(models["wide_dynamic"], filters=[Argmax()]).predict(_images())


def test_external_data_escaping_the_folder_is_refused(tmp_path):
    path = _linear(tmp_path / "evil.onnx", _info(), external_location="../secrets.bin")
    with pytest.raises(UnsafeModelError, match="refusing to load"):
        SafeModel(path)


# --- providers ---------------------------------------------------------------------------------------------------
def test_provider_selection_and_reporting(models, monkeypatch):
    available = ort.get_available_providers()
    model = SafeModel(models["logits"], filters=[Argmax()])
    gpu = [p for p in GPU_PROVIDERS if p in available]
    assert model.providers[0] == (gpu[0] if gpu else "CPUExecutionProvider")
    assert SafeModel(models["logits"], filters=[Argmax()], providers=["CPUExecutionProvider"]).providers == [
        "CPUExecutionProvider"
    ]
    with pytest.raises(ConfigError, match=r"expected execution providers .*CPUExecutionProvider.*got \['Foo'\]"):
        SafeModel(models["logits"], filters=[Argmax()], providers=["Foo"])
    assert _resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert _resolve_providers("auto", ["DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]

    # "auto" asks onnxruntime for the GPU provider it offers; .providers reports what the session really uses
    requested = []
    real_session = ort.InferenceSession

    def fake_session(model_bytes, options, providers):
        requested.append(providers)
        return real_session(model_bytes, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    model = SafeModel(models["logits"], filters=[Argmax()])
    assert requested == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert model.providers == ["CPUExecutionProvider"]


# --- threads -------------------------------------------------------------------------------------------------------
def test_eight_threads_give_exactly_the_sequential_results(models):
    model = SafeModel(models["logits"], filters=[GaussianNoise(0.2), Round(2)], threads=1)
    batches = [_images(3, seed=i) for i in range(48)]
    sequential = [model.predict(batch, seed=i) for i, batch in enumerate(batches)]
    start = threading.Barrier(8)

    def work(worker):
        start.wait()
        return {i: model.predict(batches[i], seed=i) for i in range(worker, len(batches), 8)}

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = {}
        for part in pool.map(work, range(8)):
            results.update(part)
    for i, expected in enumerate(sequential):
        np.testing.assert_array_equal(results[i], expected)
    assert not np.array_equal(model.predict(batches[0]), model.predict(batches[0]))  # unseeded: fresh noise


def test_budgeted_filter_under_eight_threads_spends_exactly_the_budget(models):
    model = SafeModel(models["logits"], filters=[ClippedLaplace(3.0, 0.5, budget=10.0)], threads=1)
    x = _images(1)
    outcomes = []
    lock = threading.Lock()

    def work(_):
        for _ in range(5):
            try:
                model.predict(x, user_id="alice")
                result = "released"
            except PrivacyBudgetExceededError:
                result = "refused"
            with lock:
                outcomes.append(result)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    assert outcomes.count("released") == 20 and outcomes.count("refused") == 20
    assert model.pipeline.filters[0].accountant.spent("alice") == pytest.approx(10.0)
    model.predict(x, user_id="bob")  # another user still has a budget


def test_budget_fallback_to_argmax_through_safe_model(models):
    model = SafeModel(models["logits"], filters=[ClippedLaplace(3.0, 1.0, budget=1.0, on_exhausted="argmax")])
    x = _images(2)
    model.predict(x[:1], seed=0)
    released = model.predict(x, seed=0)
    np.testing.assert_array_equal(released, np.eye(10, dtype=np.float32)[_raw(models["logits"], x).argmax(axis=1)])


# --- vet policy -----------------------------------------------------------------------------------------------------
def _Verdict(path, verdict: str) -> dict:  # noqa: N802 - reads like the old dataclass
    """A full vet report for the file at ``path`` with this verdict (see tests/_vet_models.full_report)."""
    return full_report(Path(path), verdict)


def test_model_sha256_is_the_file_digest(models):
    path = models["logits"]
    assert model_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert SafeModel(path, filters=[Argmax()]).model_sha256 == model_sha256(path)


def test_verdict_for_another_file_is_refused(models, tmp_path):
    verdict = _Verdict(models["logits"], "honest")
    assert SafeModel(models["logits"], verdict=verdict).verdict == "honest"
    changed = tmp_path / "changed.onnx"
    model = onnx.load(str(models["logits"]))
    model.doc_string = "one byte more"
    onnx.save(model, str(changed))
    with pytest.raises(ModelRefusedError, match="verdict was issued for another file"):
        SafeModel(changed, verdict=verdict)
    with pytest.raises(ModelRefusedError, match="verdict was issued for another file"):
        SafeModel(models["probabilities"], verdict=verdict, on_vicious="warn")


def test_vicious_verdict_policies(models, caplog):
    sha = models["logits"]
    vicious = _Verdict(sha, "vicious")
    filters = [Softmax(), Round(2)]
    with pytest.raises(ModelRefusedError, match="vicious"):
        SafeModel(models["logits"], filters=filters, verdict=vicious)  # "refuse" is the default
    labels = SafeModel(models["logits"], filters=filters, verdict=vicious, on_vicious="argmax")
    assert [f.name for f in labels.pipeline] == ["argmax"] and labels.vet_action == "argmax"
    x = _images()
    np.testing.assert_array_equal(labels.predict(x), _raw(models["logits"], x).argmax(axis=1))
    with caplog.at_level(logging.WARNING, logger="edgeguard.safe_model"):
        with pytest.warns(ViciousModelWarning, match="flagged .* as vicious"):
            warned = SafeModel(models["logits"], filters=filters, verdict=vicious, on_vicious="warn")
    assert "vicious" in caplog.text
    assert [f.name for f in warned.pipeline] == ["softmax", "round"]
    ignored = SafeModel(models["logits"], filters=filters, verdict={"model_sha256": "0" * 64}, on_vicious=None)
    assert ignored.verdict is None  # not consulted at all
    with pytest.warns(ViciousModelWarning, match="inconclusive"):
        SafeModel(models["logits"], filters=filters, verdict=_Verdict(sha, "inconclusive"), on_vicious="warn")
    with pytest.raises(ModelRefusedError, match="inconclusive"):  # inconclusive is no pass under "refuse"
        SafeModel(models["logits"], filters=filters, verdict=_Verdict(sha, "inconclusive"))


def test_verdict_from_a_json_report_or_mapping(models, tmp_path):
    sha = model_sha256(models["multilabel"])
    report = tmp_path / "report.json"
    report.write_text(json.dumps(full_report(models["multilabel"], "vicious")))
    model = SafeModel(models["multilabel"], filters=[Sigmoid(), Round(2)], verdict=report, on_vicious="argmax")
    assert [f.name for f in model.pipeline] == ["class_labels"]  # label-only release for a multilabel model
    assert isinstance(model.pipeline.filters[0], ClassLabels)
    assert set(np.unique(model.predict(_images()))) <= {0.0, 1.0}
    with pytest.raises(ModelRefusedError, match="full vet report"):  # a hand-made verdict
        SafeModel(models["multilabel"], verdict={"model_sha256": sha, "verdict": "honest"})
    bad = {
        "missing-file": tmp_path / "none.json",
        "no-sha": {"verdict": "honest"},
        "unknown-verdict": {"model_sha256": sha, "verdict": "probably fine"},
    }
    for verdict in bad.values():
        with pytest.raises(ModelRefusedError, match="expected"):
            SafeModel(models["multilabel"], verdict=verdict)
    with pytest.raises(ConfigError, match="on_vicious"):
        SafeModel(models["multilabel"], on_vicious="ignore")
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            SafeModel(models["multilabel"], threads=threads)
    with pytest.raises(ConfigError, match="run_deadline_s"):
        SafeModel(models["multilabel"], run_deadline_s=0)


def test_to_dict_describes_the_release(models):
    model = SafeModel(models["logits"], filters=FilterPipeline([LaplaceNoise(0.1), Round(1, clip=5.0)]))
    described = model.to_dict()
    assert described["model_sha256"] == model.model_sha256
    assert described["capacity_bits"] == pytest.approx(10 * np.log2(101))
    assert described["release_capacity"].startswith("at most")
    assert [f["name"] for f in described["pipeline"]["filters"]] == ["laplace_noise", "round"]
    json.dumps(described)  # JSON-safe
    assert "SafeModel('cnn_logits.onnx'" in repr(model)
