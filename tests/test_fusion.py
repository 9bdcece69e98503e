"""Filters fused into the onnxruntime graph give the numpy releases (bit for bit or within a stated tolerance)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import test_filters as oracles  # the one-row-at-a-time oracles (a module import: its tests are not collected twice)
from onnx import TensorProto, helper, numpy_helper

from edgeguard import (
    Argmax,
    ClassLabels,
    ClippedLaplace,
    FilterPipeline,
    GaussianNoise,
    HighConfidence,
    LabelConfidence,
    LabelPreservingNoise,
    LaplaceNoise,
    ReverseSigmoid,
    Round,
    Rounded,
    SafeModel,
    Sigmoid,
    Softmax,
    TopK,
    Truncate,
)
from edgeguard.filters.fusion import fuse_pipeline, fusible_prefix
from edgeguard.model import ModelInfo

SHAPE = (1, 6, 6)
K = 10
ROWS = 64
#: Where onnxruntime computes a transcendental function (exp, pow) or a row sum, float32 results
#: may differ from numpy's in the last bit or two.
FLOAT_TOL = dict(rtol=2e-6, atol=2e-7)


def _linear_model(path: Path, *, kind: str, task: str = "multiclass", classes: int = K, opset: int = 17) -> Path:
    """image (N, 1, 6, 6) -> Flatten -> MatMul -> Add [-> Softmax | Sigmoid]; an all-zero image ties classes 2 and 5."""
    rng = np.random.default_rng(1)
    weight = (rng.normal(size=(36, classes)) * 0.8).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    if classes > 5:
        bias[2] = bias[5] = bias.max() + 0.5
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits" if kind == "probabilities" else "scores"]),
    ]
    if kind == "probabilities":
        nodes.append(
            helper.make_node(
                "Softmax" if task == "multiclass" else "Sigmoid",
                ["logits"],
                ["scores"],
                **({"axis": 1} if task == "multiclass" else {}),
            )
        )
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    info = ModelInfo("image", "scores", SHAPE, tuple(f"c{i}" for i in range(classes)), task, (0.0, 1.0), kind, True)
    helper.set_model_props(model, info.to_metadata_props())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fusion")
    return {
        "logits": _linear_model(folder / "logits.onnx", kind="logits"),
        "probabilities": _linear_model(folder / "probs18.onnx", kind="probabilities", opset=18),
        "probabilities-opset13": _linear_model(folder / "probs13.onnx", kind="probabilities", opset=13),
        "multilabel": _linear_model(folder / "multilabel.onnx", kind="probabilities", task="multilabel", classes=5),
        "multilabel-logits": _linear_model(
            folder / "multilabel_logits.onnx", kind="logits", task="multilabel", classes=5
        ),
    }


def _images(rows: int = ROWS, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).random((rows, *SHAPE), dtype=np.float32)
    x[0] = 0.0  # a tie for the top class
    x[1] = 1.0
    return x


def _raw_and_safe(path: Path, filters: list) -> tuple[np.ndarray, SafeModel]:
    model = SafeModel(path, filters=filters, allow_unsafe_raw_outputs=True, input_dither=False)
    return model.predict_unfiltered_unsafe(_images()), model


def _agree(fused: np.ndarray, numpy: np.ndarray, tolerance: str, step: float | None = None) -> None:
    assert fused.shape == numpy.shape and fused.dtype == numpy.dtype
    if tolerance == "exact":
        np.testing.assert_array_equal(fused, numpy)
        if fused.dtype.kind == "f":  # bit for bit, the sign of zeros included
            np.testing.assert_array_equal(np.signbit(fused), np.signbit(numpy))
    elif tolerance == "float":
        np.testing.assert_allclose(fused, numpy, **FLOAT_TOL)
    else:  # "grid": rounding after a float-tolerant stage; a value within an ulp of a grid boundary may go either way
        differ = fused != numpy
        assert differ.mean() <= 0.01, f"{differ.sum()} of {differ.size} entries differ"
        np.testing.assert_allclose(fused, numpy, rtol=0, atol=step + 1e-6)


# (model, filters, how closely fused and numpy agree, stages fused)
CASES = {
    "softmax": ("logits", [Softmax()], "float", 1),
    "sigmoid": ("logits", [Sigmoid()], "float", 1),
    "round2-logits": ("logits", [Round(2)], "exact", 1),
    "round1-clip2": ("logits", [Round(1, clip=2.0)], "exact", 1),
    "rounded-art": ("logits", [Rounded()], "exact", 1),
    "truncate2": ("logits", [Truncate(2)], "exact", 1),
    "top3-logits": ("logits", [TopK(3)], "exact", 1),
    "argmax-index": ("logits", [Argmax()], "exact", 1),
    "argmax-one-hot": ("logits", [Argmax("one_hot")], "exact", 1),
    "class-labels": ("logits", [ClassLabels()], "exact", 1),
    "gaussian-logits": ("logits", [GaussianNoise(0.3)], "exact", 1),
    "laplace-logits": ("logits", [LaplaceNoise(0.3)], "exact", 1),
    "gaussian-round": ("logits", [GaussianNoise(0.05), Round(2)], "exact", 2),
    "round-gaussian": ("logits", [Round(2), GaussianNoise(0.05)], "exact", 2),
    "round-laplace-round": ("logits", [Round(1), LaplaceNoise(0.1), Round(2)], "exact", 3),
    "softmax-round2": ("logits", [Softmax(), Round(2)], "grid", 2),
    "softmax-round2-sum": ("logits", [Softmax(), Round(2, preserve_sum=True)], "grid", 2),
    "softmax-top2-renormalized": ("logits", [Softmax(), TopK(2, renormalize=True)], "float", 2),
    "softmax-high-confidence": ("logits", [Softmax(), HighConfidence(0.2)], "float", 2),
    "softmax-reverse-sigmoid": ("logits", [Softmax(), ReverseSigmoid(1.0, 0.1)], "float", 2),
    "softmax-reverse-sigmoid-strong": ("logits", [Softmax(), ReverseSigmoid(0.8, 2.0)], "float", 2),
    "softmax-gaussian-round": ("logits", [Softmax(), GaussianNoise(0.02), Round(2)], "grid", 3),
    "softmax-laplace": ("logits", [Softmax(), LaplaceNoise(0.02)], "float", 2),
    "softmax-then-numpy": ("logits", [Softmax(), LabelPreservingNoise(0.05)], "float", 1),
    "gaussian-then-numpy": ("logits", [GaussianNoise(0.1), LabelPreservingNoise(0.5), Round(2)], "exact", 1),
    "round3-probabilities": ("probabilities", [Round(3)], "exact", 1),
    "round2-sum-probabilities": ("probabilities", [Round(2, preserve_sum=True)], "exact", 1),
    "round2-sum-opset13": ("probabilities-opset13", [Round(2, preserve_sum=True)], "exact", 1),
    "top2-renormalized-probabilities": ("probabilities", [TopK(2, renormalize=True)], "float", 1),
    "high-confidence-probabilities": ("probabilities", [HighConfidence(0.1)], "exact", 1),
    "reverse-sigmoid-probabilities": ("probabilities-opset13", [ReverseSigmoid(1.0, 0.1)], "float", 1),
    "gaussian-renormalized": ("probabilities", [GaussianNoise(0.05)], "float", 1),
    "laplace-renormalized-round": ("probabilities", [LaplaceNoise(0.05), Round(2)], "grid", 2),
    "argmax-probabilities": ("probabilities-opset13", [Argmax()], "exact", 1),
    "label-confidence4-probabilities": ("probabilities", [LabelConfidence(4)], "exact", 1),
    "label-confidence10-opset13": ("probabilities-opset13", [LabelConfidence(10), Round(2)], "exact", 2),
    "class-labels-multilabel": ("multilabel", [ClassLabels()], "exact", 1),
    "class-labels-multilabel-logits": ("multilabel-logits", [ClassLabels()], "exact", 1),
    "sigmoid-round-multilabel": ("multilabel-logits", [Sigmoid(), Round(2)], "grid", 2),
    "reverse-sigmoid-multilabel": ("multilabel", [ReverseSigmoid(1.0, 0.5)], "float", 1),
    "gaussian-clip01-multilabel": ("multilabel", [GaussianNoise(0.1)], "exact", 1),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fused_release_equals_the_numpy_release(models, case):
    kind, filters, tolerance, fused_count = case
    raw, model = _raw_and_safe(models[kind], filters)
    assert model.fused_stages == fused_count
    numpy_pipeline = FilterPipeline(filters, input_kind=model.info.output_kind, task_type=model.info.task_type)
    for seed in (3, 4):
        expected = numpy_pipeline(raw, np.random.default_rng(seed))
        released = model.predict(_images(), seed=seed)
        step = next((10.0**-f.decimals for f in filters if isinstance(f, Round)), None)
        _agree(released, expected, tolerance, step)


# single stages against the one-row-at-a-time oracles of tests/test_filters.py
ORACLE_MODELS = {"logits": "logits", "probabilities": "probabilities"}


@pytest.mark.parametrize("name", list(oracles.ORACLE_CASES), ids=list(oracles.ORACLE_CASES))
def test_fused_stage_equals_the_one_row_oracle(models, name):
    stage, kind, oracle, tolerance = oracles.ORACLE_CASES[name]
    raw, model = _raw_and_safe(models[ORACLE_MODELS[kind]], [stage])
    if model.fused_stages == 0:
        assert fusible_prefix(model.pipeline, K) == 0
        pytest.skip(f"{stage.name} is not fusible (it runs in numpy)")
    released = model.predict(_images(), seed=7)
    stream = np.random.default_rng(7)
    expected = np.stack([np.asarray(oracle(row.copy(), stream)) for row in raw])
    tolerance = max(tolerance, FLOAT_TOL["rtol"] if tolerance else 0.0)
    np.testing.assert_allclose(released, expected, rtol=tolerance, atol=tolerance)


#: One example per grammar entry, and the stages that have no ONNX form (run in numpy only).
GRAMMAR_EXAMPLES = {
    "softmax": "softmax",
    "sigmoid": "sigmoid",
    "round": "softmax>round:2",
    "truncate": "softmax>truncate:2",
    "top_k": "softmax>top_k:3",
    "argmax": "argmax",
    "gaussian": "gaussian:1",
    "laplace": "laplace:1",
    "label_preserving": "label_preserving:1",
    "clipped_laplace": "clipped_laplace:c=5,eps=1",
    "rounded": "rounded",
    "high_confidence": "softmax>high_confidence:0.5",
    "reverse_sigmoid": "softmax>reverse_sigmoid:beta=0.5,gamma=0.5",
    "class_labels": "softmax>class_labels",
    "label_confidence": "softmax>label_confidence:4",
}
NOT_IN_GRAPH = {"label_preserving", "clipped_laplace"}  # ties broken by one ulp; OpenDP's sampler and budget


def _emitted(pipeline: FilterPipeline, rows: np.ndarray, seed: int) -> np.ndarray:
    """``pipeline`` emitted stage by stage into a bare graph (x -> stages -> release), run in onnxruntime."""
    import onnxruntime as ort

    from edgeguard.filters.onnx_graph import GraphBuilder, emit_stage

    graph = helper.make_graph([], "stages", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])], [])
    builder = GraphBuilder(graph, 17, prefix="s_", noise="input")
    tensor = "x"
    for stage in pipeline.filters:
        tensor = emit_stage(stage, builder, tensor, K)
    graph.node.extend(builder.nodes)
    graph.initializer.extend(builder.initializers)
    graph.input.extend(builder.inputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    types = {v.name: v.type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.append(onnx.ValueInfoProto(name=tensor, type=types[tensor]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {"x": rows, **{noise.name: noise.draw(rng, len(rows)) for noise in builder.noise_inputs}}
    return session.run(None, feeds)[0]


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    return float(np.max(np.abs(np.searchsorted(np.sort(a), grid, "right") / a.size
                               - np.searchsorted(np.sort(b), grid, "right") / b.size)))


@pytest.mark.parametrize("name", sorted(GRAMMAR_EXAMPLES))
def test_every_grammar_stage_emits_a_graph_that_releases_what_its_numpy_form_does(name):
    from edgeguard.filters import FILTER_NAMES, parse_filter_spec
    from edgeguard.filters.onnx_graph import NotFusible

    assert set(GRAMMAR_EXAMPLES) == set(FILTER_NAMES[1:])  # every filter but "none" has an example
    pipeline = FilterPipeline(parse_filter_spec(GRAMMAR_EXAMPLES[name]).build(), input_kind="logits")
    rows = (np.random.default_rng(3).normal(size=(4000, K)) * 3).astype(np.float32)
    if name in NOT_IN_GRAPH:
        with pytest.raises(NotFusible):
            _emitted(pipeline, rows[:4], seed=0)
        return
    released = _emitted(pipeline, rows, seed=0)
    expected = np.asarray(pipeline(rows, np.random.default_rng(1)))
    assert released.shape == expected.shape and released.dtype == expected.dtype
    if not pipeline.is_random:
        np.testing.assert_allclose(released, expected, **FLOAT_TOL)
        return
    noise, reference = (released - rows).ravel(), (expected - rows).ravel()  # the noise itself, two samples
    bound = math.sqrt(-math.log(1e-6 / 2) / 2) * math.sqrt(2.0 / noise.size)  # two-sample KS at alpha 1e-6
    assert _ks(noise, reference) <= bound
    assert not np.array_equal(noise, reference)  # two draws, not one stream replayed


def test_unknown_subclasses_and_keyed_or_opendp_stages_are_not_fused(models):
    class MyRound(Round):
        pass

    key = bytes(range(32))
    for filters in (
        [MyRound(2)],
        [LabelPreservingNoise(1.0), Round(2)],
        [ClippedLaplace(3.0, 10.0, budget=1e9)],
        [GaussianNoise(0.1, key=key)],
        [TopK(11)],
    ):
        model = SafeModel(models["logits"], filters=filters, input_dither=False)
        assert model.fused_stages == 0
        if not isinstance(filters[0], TopK):
            model.predict(_images(4), seed=0)  # the numpy path still works (keyed noise gets the inputs)
    consistent = SafeModel(models["logits"], filters=[GaussianNoise(0.1, key=key)], input_dither=False)
    x = _images(4)
    np.testing.assert_array_equal(consistent.predict(x), consistent.predict(x))


def test_fully_fused_graph_never_outputs_the_raw_scores(models):
    model = SafeModel(models["logits"], filters=[Softmax(), Round(2)], input_dither=False)
    assert [o.name for o in model.session.get_outputs()] != ["scores"]
    assert len(model.session.get_outputs()) == 1
    assert model.to_dict()["fusion"] == {"fused_stages": ["softmax", "round"], "numpy_stages": [], "noise_inputs": []}
    raw_enabled = SafeModel(models["logits"], filters=[Round(2)], allow_unsafe_raw_outputs=True, input_dither=False)
    assert "scores" in [o.name for o in raw_enabled.session.get_outputs()]


def test_fusion_leaves_the_model_proto_unchanged_and_refuses_old_opsets(models, tmp_path):
    proto = onnx.load(str(models["logits"]))
    before = proto.SerializeToString()
    pipeline = FilterPipeline([Softmax(), Round(2)], input_kind="logits")
    fused = fuse_pipeline(proto, pipeline, output_name="scores", num_classes=K, output_kind="logits")
    assert fused is not None and len(fused.fused) == 2 and proto.SerializeToString() == before
    onnx.checker.check_model(fused.proto)
    old = _linear_model(tmp_path / "old.onnx", kind="logits", opset=12)
    assert (
        fuse_pipeline(onnx.load(str(old)), pipeline, output_name="scores", num_classes=K, output_kind="logits") is None
    )
    assert SafeModel(old, filters=[Softmax(), Round(2)], input_dither=False).fused_stages == 0


def test_unseeded_noise_is_fresh_and_has_the_stated_spread(models):
    model = SafeModel(models["logits"], filters=[GaussianNoise(1.0)], allow_unsafe_raw_outputs=True, input_dither=False)
    laplace = SafeModel(models["logits"], filters=[LaplaceNoise(1.0)], input_dither=False)
    x = _images()
    raw = model.predict_unfiltered_unsafe(x)
    noise = np.concatenate([model.predict(x) - raw for _ in range(10)])
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05
    assert not np.array_equal(model.predict(x), model.predict(x))
    spread = np.concatenate([laplace.predict(x) - raw for _ in range(10)])
    assert abs(spread.std() - math.sqrt(2.0)) < 0.1  # Laplace(0, 1) has standard deviation sqrt(2)


def test_fused_probability_check_fails_closed(tmp_path):
    """A file declaring probabilities whose graph emits logits: refused inside the graph, as in numpy."""
    path = _linear_model(tmp_path / "liar.onnx", kind="logits")
    model = onnx.load(str(path))
    info = ModelInfo(
        "image", "scores", SHAPE, tuple(f"c{i}" for i in range(K)), "multiclass", (0.0, 1.0), "probabilities", True
    )
    del model.metadata_props[:]
    helper.set_model_props(model, info.to_metadata_props())
    onnx.save(model, str(path))
    from edgeguard import InferenceError

    for filters in ([Round(2)], [Argmax()], [Round(2), LabelPreservingNoise(0.1)]):
        safe = SafeModel(path, filters=filters, input_dither=False)
        assert safe.fused_stages == 1
        with pytest.raises(InferenceError, match="expected probabilities as the model's metadata declares"):
            safe.predict(_images(3))


@pytest.mark.parametrize("filters", [[Argmax()], [Round(2)], [ClassLabels()]], ids=["index", "values", "labels"])
def test_a_graph_without_input_check_still_releases_and_gates_non_finite_values(models, filters):
    import onnxruntime as ort

    proto = onnx.load(str(models["logits"]))
    pipeline = FilterPipeline(filters, input_kind="logits")
    fused = fuse_pipeline(proto, pipeline, output_name="scores", num_classes=K, output_kind="logits")
    assert fused is not None and not fused.checks_input
    session = ort.InferenceSession(fused.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    _, safe = _raw_and_safe(models["logits"], filters)
    released = session.run(None, {"image": _images()})[0]
    _agree(released, safe.predict(_images()), "exact")
    if filters[0].name == "round":  # a non-finite raw value: all NaN, never the raw row
        bad = _images()
        bad[3] = np.inf
        assert np.isnan(session.run(None, {"image": bad})[0]).all()
