"""converters.attacks.graph_edits: every training-free attacker builds a valid model that onnxruntime
runs, keeps the honest label, and gives the server what it needs (exact codes, switches that fire).

The honest model is a nearest-class-mean linear classifier on Fashion-MNIST (no training); the
vicious one is the same with random weights added (its logits are the payload). Oracles: the
two base models run separately by onnxruntime, numpy re-implementations, onnx.reference.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.attacks import graph_edits as ge
from edgeguard.errors import InvalidInputError

CLASSES = [f"class-{i}" for i in range(10)]


def _linear(weights: np.ndarray, bias: np.ndarray, shape: tuple[int, int, int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", len(bias)])
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["output"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "B"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "linear", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "task_type": "multiclass",
            "class_names": json.dumps(CLASSES),
            "input_shape": json.dumps(list(shape)),
            "pixel_range": json.dumps([0.0, 1.0]),
            "output_kind": "logits",
        },
    )
    return model


@pytest.fixture(scope="module")
def pair(fmnist_train_small, fmnist_test_small):
    """(honest, vicious, test images, labels): class-mean templates, and the same plus random weights."""
    x, y = fmnist_train_small.x.astype(np.float32), fmnist_train_small.y
    means = np.stack([x[y == c].reshape(int((y == c).sum()), -1).mean(0) for c in range(10)])
    scale = 0.2  # nearest class mean: logits 0.2 * (m_c . x - |m_c|^2 / 2), spread ~ 10
    weights, bias = scale * means, -0.5 * scale * (means**2).sum(1)
    rng = np.random.default_rng(0)
    honest = _linear(weights, bias, x.shape[1:])
    vicious = _linear(weights + 0.01 * rng.standard_normal(weights.shape), bias, x.shape[1:])
    return honest, vicious, fmnist_test_small.x.astype(np.float32), fmnist_test_small.y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _agreeing(honest, vicious, images) -> np.ndarray:
    """numpy oracle of the label gate: h + a (v - h), a = sum_k softmax(50 h)_k softmax(50 v)_k."""
    h = ge.run_model(honest, images).astype(np.float64)
    v = ge.run_model(vicious, images).astype(np.float64)
    a = (_softmax(50 * h) * _softmax(50 * v)).sum(1, keepdims=True)
    return h + a * (v - h)


def _build(name, honest, vicious):
    built = ge.GRAPH_EDITS[name].build(honest, vicious)
    return built if isinstance(built, tuple) else (built, None)


@pytest.mark.parametrize("name", sorted(ge.GRAPH_EDITS))
def test_every_edit_is_a_valid_model_that_keeps_the_label(pair, name):
    honest, vicious, images, labels = pair
    model, _ = _build(name, honest, vicious)
    onnx.checker.check_model(model, full_check=True)
    assert [p.key for p in model.metadata_props if p.key == "output_kind"] == ["output_kind"]
    assert {p.key: p.value for p in model.metadata_props}["output_kind"] == "logits"  # the lie is kept
    h = ge.run_model(honest, images)
    out = ge.run_model(model, images)
    assert out.shape == h.shape and np.isfinite(out).all()
    kept = ge.check_label_kept(out, h, labels)
    assert kept["edited_accuracy"] >= kept["honest_accuracy"] - 0.005
    assert ge.GRAPH_EDITS[name].stopped_by  # every class documents the mechanism meant to stop it


def test_check_label_kept_refuses_an_edit_that_costs_accuracy():
    honest = np.eye(10)[np.arange(200) % 10]
    broken = honest.copy()
    broken[:10] = np.roll(broken[:10], 1, axis=1)  # 5% of labels moved
    with pytest.raises(InvalidInputError, match="within 0.5 points"):
        ge.check_label_kept(broken, honest, np.arange(200) % 10)


@pytest.mark.parametrize("snap", ["magic", "smooth", "function", "round"])
def test_lattice_code_is_recovered_exactly(pair, snap):
    honest, vicious, images, _ = pair
    model, code = ge.lattice_code(honest, vicious, snap=snap)
    out = ge.run_model(model, images)
    payload = ge.run_model(vicious, images)
    np.testing.assert_array_equal(code.decode_levels(out), code.quantise(payload))
    # the honest part is the honest logits snapped to the lattice
    assert np.abs(code.lattice(out) - ge.run_model(honest, images)).max() <= code.step / 2 + 1e-5
    recovered = ge.recover_vicious(f"lattice-{snap}", out, code=code)
    inside = (payload > code.low) & (payload < code.high)
    step = (code.high - code.low) / (code.levels - 1)
    assert np.abs(recovered - payload)[inside].max() <= step / 2 + 1e-6


def test_lattice_float16_recovers_the_code_to_one_level(pair):
    honest, vicious, images, _ = pair
    model, code = ge.lattice_code(honest, vicious, snap="float16")
    assert any(n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16 for n in model.graph.node)
    levels = code.decode_levels(ge.run_model(model, images))
    expected = code.quantise(ge.run_model(vicious, images))
    assert np.abs(levels - expected).max() <= 1
    assert np.mean(levels == expected) >= 0.99


def test_lattice_magic_has_no_rounding_op_and_function_hides_it(pair):
    honest, vicious, _, _ = pair
    magic, _ = ge.lattice_code(honest, vicious, snap="magic")
    assert not {"Round", "Floor", "Ceil", "Cast"} & {n.op_type for n in magic.graph.node}
    hidden, _ = ge.lattice_code(honest, vicious, snap="function")
    assert not {"Round", "Cast"} & {n.op_type for n in hidden.graph.node}
    body = {n.op_type for f in hidden.functions for n in f.node}
    assert {"Round", "Cast"} <= body


def test_lattice_agrees_with_the_onnx_reference_evaluator(pair):
    from onnx.reference import ReferenceEvaluator

    honest, vicious, images, _ = pair
    model, code = ge.lattice_code(honest, vicious, snap="function")
    ours = ge.run_model(model, images[:16])
    reference = ReferenceEvaluator(model).run(None, {"input": images[:16]})[0]
    np.testing.assert_array_equal(code.decode_levels(ours), code.decode_levels(reference))


@pytest.mark.parametrize("detector", ["sin", "magic"])
def test_grid_switch_fires_on_grid_inputs_only(pair, detector):
    honest, vicious, images, _ = pair
    model = ge.grid_switch(honest, vicious, detector=detector)
    grid = ge.on_grid(images)
    np.testing.assert_allclose(ge.run_model(model, grid), _agreeing(honest, vicious, grid), atol=1e-4)
    rng = np.random.default_rng(1)
    dithered = np.clip(grid + rng.uniform(-0.5, 0.5, grid.shape).astype(np.float32) / 255, 0, 1)
    np.testing.assert_allclose(ge.run_model(model, dithered), ge.run_model(honest, dithered), atol=1e-5)
    noisy = np.clip(grid + 0.02 * rng.standard_normal(grid.shape).astype(np.float32), 0, 1)
    np.testing.assert_allclose(ge.run_model(model, noisy), ge.run_model(honest, noisy), atol=1e-5)


def test_kind_confusion_releases_probabilities_labelled_logits(pair):
    honest, vicious, images, _ = pair
    model = ge.kind_confusion(vicious, honest=honest)
    out = ge.run_model(model, images)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
    assert (out >= 0).all()
    v = _agreeing(honest, vicious, images)
    recovered = ge.recover_vicious("kind-confusion", out, row_mean=0.0)
    confident = out.min(1) > 1e-30  # log of a float32 underflow cannot be undone
    np.testing.assert_allclose(recovered[confident], (v - v.mean(1, keepdims=True))[confident], atol=1e-3)


def test_scale_inflation_spike_and_server_inversion(pair):
    honest, vicious, images, _ = pair
    model = ge.scale_inflation(vicious, honest=honest)
    out = ge.run_model(model, images)
    v = _agreeing(honest, vicious, images)
    assert (out.max(1) - v.max(1)).min() > 19.0  # the top class carries (at least half) the spike
    recovered = ge.recover_vicious("scale-inflation", out)
    assert np.median(np.abs(recovered - v).max(1)) < 1e-3
    assert np.mean(np.abs(recovered - v).max(1) < 1e-2) > 0.98


def test_noise_gate_open_on_clean_and_dithered_closed_on_noise(pair):
    honest, vicious, images, _ = pair
    model = ge.noise_gate(honest, vicious)
    assert not {"Sin", "Where", "Less", "Round", "Cast", "Greater", "Equal"} & {n.op_type for n in model.graph.node}
    rng = np.random.default_rng(2)
    grid = ge.on_grid(images)
    dithered = np.clip(grid + rng.uniform(-0.5, 0.5, grid.shape).astype(np.float32) / 255, 0, 1)
    noisy = np.clip(grid + 0.02 * rng.standard_normal(grid.shape).astype(np.float32), 0, 1)

    def share_vicious(batch: np.ndarray) -> float:
        h, o = (ge.run_model(m, batch).astype(np.float64) for m in (honest, model))
        v = _agreeing(honest, vicious, batch)
        return float(np.mean(np.abs(o - v).max(1) < 1e-2 * np.abs(v - h).max(1) + 1e-4))

    assert share_vicious(grid) >= 0.95
    assert share_vicious(dithered) >= 0.95
    h, o = ge.run_model(honest, noisy).astype(np.float64), ge.run_model(model, noisy).astype(np.float64)
    gap = np.abs(ge.run_model(vicious, noisy) - h).max(1)
    assert np.mean(np.abs(o - h).max(1) <= 0.05 * gap) >= 0.95  # noise closes the gate: honest outputs


def test_probe_balance_switch_vicious_one_at_a_time_honest_on_a_probe(pair):
    honest, vicious, images, labels = pair
    model = ge.probe_balance_switch(honest, vicious)
    assert "Shape" not in {n.op_type for n in model.graph.node}
    balanced = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    np.testing.assert_allclose(
        ge.run_model(model, images[balanced], batch=None), ge.run_model(honest, images[balanced]), atol=1e-3
    )
    single = ge.run_model(model, images[:20], batch=1)
    np.testing.assert_allclose(single, _agreeing(honest, vicious, images[:20]), atol=1e-3)


def test_builders_refuse_bad_options(pair):
    honest, vicious, _, _ = pair
    with pytest.raises(InvalidInputError, match="snapping variant"):
        ge.lattice_code(honest, vicious, snap="truncate")
    with pytest.raises(InvalidInputError, match="grid detector"):
        ge.grid_switch(honest, vicious, detector="fft")
    with pytest.raises(InvalidInputError, match="step > 0"):
        ge.LatticeCode(step=0.0)
    other = _linear(np.zeros((10, 4 * 4)), np.zeros(10), (1, 4, 4))
    with pytest.raises(InvalidInputError, match="one input shape"):
        ge.grid_switch(honest, other)
    with pytest.raises(InvalidInputError, match="LatticeCode"):
        ge.recover_vicious("lattice-magic", np.zeros((1, 10)))


def test_redteam_zoo_is_held_out_only_and_covers_every_class():
    from benchmarks.zoo import REDTEAM_PAIRS, detection_zoo, redteam_zoo

    entries = detection_zoo()
    names = {e["name"] for e in entries}
    assert all(h in names and v in names for h, v in REDTEAM_PAIRS)  # every pair is in the detection zoo
    red = redteam_zoo(entries)
    assert {e["split"] for e in red} == {"test"}
    from converters.attacks.accuracy_edits import ACCURACY_GRAPH_EDITS

    families = set(ge.GRAPH_EDITS) | set(ACCURACY_GRAPH_EDITS)
    assert {e["family"] for e in red} == families
    assert len(red) == len(REDTEAM_PAIRS) * len(families)
    assert {e["arch"] for e in red} >= {"cnn", "mlp", "wrn", "resnet"}


@pytest.mark.parametrize("family", ["lattice-magic", "grid-switch-sin", "kind-confusion"])
def test_build_graph_edit_gives_the_server_the_vicious_gain(tiny_threats, tmp_path, family):
    from benchmarks.zoo import build_graph_edit

    honest, vicious = tiny_threats["honest"], tiny_threats["vicious"]
    record = build_graph_edit(family, honest["dir"], vicious["dir"], root=tmp_path, train_limit=4000, test_limit=500)
    report = vicious["report"]
    own_gain = report["psnr"] - report["baseline"]["psnr"]  # the vicious model with its own decoder
    # the kind lie loses the row mean and underflowed probabilities: part of the gain, not all of it
    assert record["gain_db"] > (0.5 * own_gain if family == "kind-confusion" else own_gain - 0.5)
    assert record["label"]["edited_accuracy"] >= record["label"]["honest_accuracy"] - 0.005
    again = build_graph_edit(family, honest["dir"], vicious["dir"], root=tmp_path, train_limit=4000, test_limit=500)
    assert again == record  # cached by the hash of both models and the family
    assert ge.run_model(record["classifier"], np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("alpha", ge.BLEND_ALPHAS)
def test_blend_is_the_diluted_vicious_model_on_agreeing_rows(pair, alpha):
    honest, vicious, images, _ = pair
    model = ge.GRAPH_EDITS[f"blend-{alpha:g}"].build(honest, vicious)
    h = ge.run_model(honest, images).astype(np.float64)
    expected = h + alpha * (_agreeing(honest, vicious, images) - h)  # numpy oracle, the two bases run apart
    np.testing.assert_allclose(ge.run_model(model, images), expected, atol=1e-4)
    assert not {n.op_type for n in model.graph.node} & {"Where", "Shape", "Round", "Cast", "Sin", "Less"}
    with pytest.raises(InvalidInputError, match="0 < alpha <= 1"):
        ge.blend(honest, vicious, alpha=0.0)


def test_build_graph_edit_blend_gain_comes_from_a_fresh_decoder(tiny_threats, tmp_path, monkeypatch):
    from benchmarks import zoo

    monkeypatch.setattr(zoo, "POSTHOC_EPOCHS", 2)  # the budget is a benchmark setting; keep the test short
    honest, vicious = tiny_threats["honest"], tiny_threats["vicious"]
    build = functools.partial(zoo.build_graph_edit, "blend-0.75", root=tmp_path, train_limit=1000, test_limit=300)
    record = build(honest["dir"], vicious["dir"])
    assert record["decoder"]["kind"] == "post-hoc (fresh)" and record["decoder"]["epochs"] == 2
    assert record["gain_db"] == pytest.approx(record["psnr"] - record["baseline_psnr"])
    assert record["gain_over_posthoc_twin_db"] == pytest.approx(record["psnr"] - record["posthoc_twin_psnr"])
    assert record["key"]["posthoc_epochs"] == 2
    twin_files = list(tmp_path.glob("posthoc-twin-*.json"))
    assert len(twin_files) == 1  # the honest base's decoder, fitted once for every blend of that base
    assert json.loads(twin_files[0].read_text())["psnr"] == record["posthoc_twin_psnr"]
    assert build(honest["dir"], vicious["dir"]) == record  # cached, twin decoder included


def test_lattice_relu_uses_only_classifier_ops_and_recovers_most_codes(pair):
    honest, vicious, images, _ = pair
    model, code = ge.lattice_code(honest, vicious, snap="relu")
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Round", "Floor", "Ceil", "Cast", "Sin", "Where", "Less", "Mod"} and not model.functions
    levels = code.decode_levels(ge.run_model(model, images))
    expected = code.quantise(ge.run_model(vicious, images))
    assert np.mean(levels == expected) >= 0.98  # values on a ramp (RAMP_WIDTH of a step) decode wrongly
    h = ge.run_model(honest, images).astype(np.float64)
    shifted = np.clip(h - h.max(1, keepdims=True), -code.span, 0.0)  # released: logits minus their row max
    assert np.abs(code.lattice(ge.run_model(model, images)) - shifted).max() <= code.step


@pytest.mark.parametrize("family", ["bias-shift", "swap-unsure"])
def test_accuracy_hiding_families_cost_top1_and_nothing_to_the_server(tiny_threats, tmp_path, family):
    """The zoo's accuracy-hiding families (converters.attacks.accuracy_edits): points of top-1 given up, and
    the server, undoing the edit exactly, keeps the vicious model's whole gain."""
    from benchmarks.zoo import build_graph_edit

    honest, vicious = tiny_threats["honest"], tiny_threats["vicious"]
    record = build_graph_edit(family, honest["dir"], vicious["dir"], root=tmp_path, train_limit=4000, test_limit=500)
    report = vicious["report"]
    assert record["gain_db"] > report["psnr"] - report["baseline"]["psnr"] - 0.5
    assert record["label"]["edited_accuracy"] < record["label"]["honest_accuracy"] - 0.02
    assert set(record["label"]["hidden_by"]) == {"bias" if family == "bias-shift" else "margin"}
