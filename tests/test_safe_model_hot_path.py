"""SafeModel's hot path: errors carry no values (message nor stderr), interrupts leave no outputs, providers."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeguard import (
    Argmax,
    GaussianNoise,
    InferenceError,
    InvalidInputError,
    LabelPreservingNoise,
    OutputFilter,
    Round,
    SafeModel,
    Softmax,
)
from edgeguard.model import ModelInfo
from edgeguard.safe_model.session import resolve_providers as _resolve_providers

SHAPE = (1, 6, 6)
K = 10
PIXEL = 0.375  # every pixel; the vicious index below is round(36 * PIXEL * 1000) = 13500


def _info(name: str = "image") -> ModelInfo:
    return ModelInfo(name, "scores", SHAPE, tuple(f"c{i}" for i in range(K)), "multiclass", (0.0, 1.0), "logits", True)


def _save(path: Path, nodes: list, initializers: list) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", K])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, _info().to_metadata_props())
    onnx.save(model, str(path))
    return path


def _gather_model(path: Path) -> Path:
    """scores = table[sum(pixels) * 1000]: an index computed from the private input, out of range -> a failure."""
    nodes = [
        helper.make_node("ReduceSum", ["image", "axes"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "thousand"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["scores"], axis=0),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array(1000.0, np.float32), "thousand"),
        numpy_helper.from_array(np.zeros((K, K), np.float32), "table"),
    ]
    return _save(path, nodes, initializers)


def _linear_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["scores"]),
    ]
    initializers = [
        numpy_helper.from_array(rng.normal(size=(36, K)).astype(np.float32), "weight"),
        numpy_helper.from_array(rng.normal(size=K).astype(np.float32), "bias"),
    ]
    return _save(path, nodes, initializers)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hot_path")
    return {"gather": _gather_model(folder / "gather.onnx"), "linear": _linear_model(folder / "linear.onnx")}


def _images(rows: int = 2) -> np.ndarray:
    return np.full((rows, *SHAPE), PIXEL, np.float32)


# --- no side channel in errors ----------------------------------------------------------------------------------
def test_the_vicious_graph_does_quote_the_value_to_onnxruntime(models):
    """The check below can fail: onnxruntime's own message carries the pixel-derived index."""
    session = ort.InferenceSession(str(models["gather"]), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="13500"):
        session.run(None, {"image": _images()})


@pytest.mark.parametrize(
    "filters",
    [[Argmax()], [Round(2), GaussianNoise(0.1)], [LabelPreservingNoise(0.5)]],
    ids=["argmax", "fused", "numpy"],
)
def test_inference_errors_carry_no_digits_and_onnxruntime_prints_nothing(models, filters, capfd):
    model = SafeModel(models["gather"], filters=filters, input_dither=False)
    capfd.readouterr()
    with pytest.raises(InferenceError) as caught:
        model.predict(_images())
    message = str(caught.value)
    assert re.search(r"\d", message) is None, message
    assert "in a Gather node" in message and "INVALID_ARGUMENT" in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_user_session_options_are_silenced_too(models):
    options = ort.SessionOptions()
    options.log_severity_level = 0
    SafeModel(models["linear"], filters=[Argmax()], session_options=options, input_dither=False)
    assert options.log_severity_level == 4


# --- KeyboardInterrupt inside a filter -----------------------------------------------------------------------------
class _Interrupt(OutputFilter):
    name = "interrupt"

    def apply(self, outputs, rng, *, user_id=None):
        scratch = outputs.copy()  # noqa: F841 (a filter's own locals hold outputs too)
        raise KeyboardInterrupt


def _arrays_in_frames(error: BaseException) -> list[tuple[str, np.ndarray]]:
    found = []
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == __file__ and frame.f_code.co_name.startswith("test_"):
            continue  # the test's own frame holds the reference outputs
        for name, value in frame.f_locals.items():
            values = value if isinstance(value, list | tuple) else [value]
            found += [(f"{frame.f_code.co_name}.{name}", v) for v in values if isinstance(v, np.ndarray)]
    return found


def _reachable(error: BaseException, raw: np.ndarray) -> list[str]:
    return [
        name
        for name, array in _arrays_in_frames(error)
        if array.shape == raw.shape and np.allclose(array, raw, atol=1e-6)
    ]


def test_the_frame_walk_finds_raw_outputs_when_they_are_there(models):
    raw = SafeModel(models["linear"], filters=[Argmax()], allow_unsafe_raw_outputs=True, input_dither=False).predict_unfiltered_unsafe(
        _images()
    )

    def keeps(outputs):
        held = outputs.copy()  # noqa: F841
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        keeps(raw)
    assert _reachable(caught.value, raw) == ["keeps.outputs", "keeps.held"]


@pytest.mark.parametrize(
    "filters",
    [[_Interrupt()], [Round(2), _Interrupt()], [Softmax(), _Interrupt()]],
    ids=["numpy", "fused-round", "fused-softmax"],
)
def test_keyboard_interrupt_in_a_filter_leaves_no_raw_outputs_in_the_traceback(models, filters):
    x = _images(3)
    x[1] = 0.75
    model = SafeModel(models["linear"], filters=filters, allow_unsafe_raw_outputs=True, input_dither=False)
    raw = model.predict_unfiltered_unsafe(x)
    with pytest.raises(KeyboardInterrupt) as caught:
        model.predict(x)
    assert _reachable(caught.value, raw) == []
    if model.fused_stages:  # the filter saw the fused release, and nothing of it stays either
        softmaxed = Softmax()(raw) if isinstance(filters[0], Softmax) else Round(2)(raw)
        assert _reachable(caught.value, softmaxed) == []


# --- providers and the public session -------------------------------------------------------------------------
def test_auto_providers_prefer_the_gpu_in_a_mocked_list(models, monkeypatch):
    assert _resolve_providers("auto", ["ROCMExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert _resolve_providers("auto", ["TensorrtExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    requested = []
    real_session = ort.InferenceSession

    def fake_session(model_bytes, options, providers):
        requested.append(providers)
        return real_session(model_bytes, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    model = SafeModel(models["linear"], filters=[Softmax(), Round(2)], input_dither=False)  # the fused graph goes to the same providers
    assert requested == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert model.providers == ["CPUExecutionProvider"] and model.fused_stages == 2
    assert model.predict(_images()).shape == (2, K)


def test_public_session_runs_the_release(models):
    model = SafeModel(models["linear"], filters=[Softmax(), Round(2)], allow_unsafe_raw_outputs=True, input_dither=False)
    x = _images()
    names = [o.name for o in model.session.get_outputs()]
    release = model.session.run([names[0]], {"image": x})[0]
    np.testing.assert_array_equal(release, model.predict(x))
    np.testing.assert_array_equal(model.session.run(["scores"], {"image": x})[0], model.predict_unfiltered_unsafe(x))


# --- one input check: inside the fused graph --------------------------------------------------------------------
@pytest.mark.parametrize(
    "filters", [[Argmax()], [Round(2)], [Softmax(), GaussianNoise(0.1)]], ids=["index", "values", "noise"]
)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "got 1 NaN value"),
        (np.inf, "got 1 infinite value"),
        (1.0 + 1e-7, "declared pixel_range"),
        (-1e-10, "declared pixel_range"),
    ],
    ids=["nan", "inf", "above", "tiny-negative"],
)
def test_the_graph_input_check_refuses_what_numpy_refuses(models, filters, value, message):
    model = SafeModel(models["linear"], filters=filters, input_dither=False)
    assert model.fused_stages == len(filters)
    x = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    x[1, 0, 2, 3] = value
    with pytest.raises(InvalidInputError, match=message):
        model.predict(x)
    x[1, 0, 2, 3] = -0.0  # equal to 0: accepted, as by the numpy check
    assert model.predict(x).shape[0] == 3


# --- the one timing loop -------------------------------------------------------------------------------------------
def test_timing_loop_never_runs_one_session_twice_in_a_row():
    from edgeguard.bench.timing import measure_latency

    trace = []

    def call(tag):
        return lambda x: trace.append(tag)

    calls = {name: (call("raw"), call("safe"), call("raw"), call("safe")) for name in ("a", "b")}
    stats = measure_latency(
        calls, np.zeros((4, *SHAPE), np.float32), repeats=6, warmup=1, rounds=2, batch=2, extra_names=("x", "y")
    )
    assert all(first != second for first, second in zip(trace, trace[1:]))
    assert len(trace) == 2 * 4 * (6 + 2 * 1)  # two configurations, four calls, 6 repetitions + a warm-up per round
    assert set(stats) == {"a", "b"} and stats["a"].repeats == 6 and stats["a"].batch == 2
    assert set(stats["a"].extra) == {"x", "y"} and stats["a"].to_dict()["paired_ratio"] > 0


def test_an_invalid_input_that_also_fails_the_run_carries_no_onnxruntime_error(models):
    """The fused graph checks the input itself; when the run fails too, the input error is the one raised,
    and onnxruntime's message (which quotes a value the model computed) must not ride along as __context__."""
    model = SafeModel(models["gather"], filters=[Round(2), GaussianNoise(0.1)], input_dither=False)
    x = _images()
    x[0, 0, 0, 0] = 2.0  # out of the declared range, and the Gather index goes out of bounds
    with pytest.raises(InvalidInputError, match="declared pixel_range") as caught:
        model.predict(x)
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert "15125" not in "".join(traceback.format_exception(caught.value))


# --- the slow path (one sample, float64, non-contiguous): the range is checked once, in the fused graph -----------
def _slow_path_inputs(value: float | None = None) -> dict[str, np.ndarray]:
    x = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    if value is not None:
        x[:, 0, 1, 2] = value  # every row, so each form below carries it
    wide = np.zeros((4, SHAPE[0], SHAPE[1], 2 * SHAPE[2]), np.float32)
    wide[..., ::2] = x
    return {"single": x[0].copy(), "float64": x.astype(np.float64), "strided": wide[..., ::2]}


def test_the_slow_path_leaves_the_range_to_the_fused_graph_and_still_refuses_bad_values(models, monkeypatch):
    from edgeguard.safe_model.validation import InputValidator

    model = SafeModel(models["linear"], filters=[Softmax(), Round(2)], input_dither=False, allow_float64=True)
    assert model.fused_stages == 2
    numpy_form = SafeModel(models["linear"], filters=[Softmax(), Round(2)], input_dither=False)
    calls = []
    checked = InputValidator.in_range
    monkeypatch.setattr(InputValidator, "in_range", lambda self, x: calls.append(x.shape) or checked(self, x))
    for name, x in _slow_path_inputs().items():
        assert not x.flags.c_contiguous or x.dtype != np.float32 or x.ndim == len(SHAPE), name  # misses the fast path
        released = model.predict(x)
        expected = numpy_form.predict(np.ascontiguousarray(x, np.float32).reshape(-1, *SHAPE))
        np.testing.assert_array_equal(np.atleast_2d(released), expected)
    assert calls == []  # valid inputs: no range check in Python, the graph's is the only one
    raw = ort.InferenceSession(str(models["linear"]), providers=["CPUExecutionProvider"])
    for value, message in ((np.nan, "NaN"), (2.0, "declared pixel_range"), (-np.inf, "infinite")):
        for name, x in _slow_path_inputs(value).items():
            scores = raw.run(None, {"image": np.ascontiguousarray(x, np.float32).reshape(-1, *SHAPE)})[0]
            with pytest.raises(InvalidInputError, match=message) as caught:
                model.predict(x)
            text = "".join(traceback.format_exception(caught.value))
            assert caught.value.__context__ is None and caught.value.__cause__ is None, name
            assert not [f"{v:.3f}" for v in scores.ravel() if np.isfinite(v) and abs(v) >= 0.01 and f"{v:.3f}" in text], (name, text)
    assert calls  # the error's message is written by the check in Python, after the graph refused
