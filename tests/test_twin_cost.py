"""The honest twin's static cost budget and its per-batch training (issue 19, item 5).

Oracles: the MACs of hand-built graphs are counted by hand from their layer sizes; the
per-batch twin is checked by its accuracy on held-out images, not by its training record.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _vet_models import CLASSES, SHAPE, linear_classifier, probe_arrays, save, write_probe
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeguard.cli import main
from edgeguard.vetting import vet
from edgeguard.vetting.cost import FORWARD_BACKWARD, macs_per_sample, twin_cost
from edgeguard.vetting.reference import BatchSource, ReferenceSettings, train_reference
from edgeguard.vetting.settings import VetSettings

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3,
        "leakage_decoders": ("knn",)}


def table() -> dict:
    return {
        "source": "test",
        "tests": {
            "leakage": {"threshold": 100.0, "scale": 0.1, "higher_is_vicious": True},
            "leakage_excess_twin": {"threshold": 100.0, "scale": 0.1, "higher_is_vicious": True},
            "finetune": {"threshold": -1.0, "scale": 0.01, "higher_is_vicious": False, "statistic": "cosine"},
        },
        "combined": {"weights": {"leakage": 1.0, "finetune": 0.0}, "min_probe_samples": 500, "require_twin": True},
    }


def tiny_cnn(batch: object = "N") -> onnx.ModelProto:
    """Conv 1->4 (3x3, stride 2, pad 1) on 1x12x12 -> Relu -> Conv 4->6 (3x3, pad 1) -> Flatten -> Gemm -> MatMul."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "k0"),
        numpy_helper.from_array(rng.normal(size=(6, 4, 3, 3)).astype(np.float32), "k1"),
        numpy_helper.from_array(rng.normal(size=(5, 6 * 6 * 6)).astype(np.float32), "w"),  # Gemm, transB=1
        numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "k0"], ["c0"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "k1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c1"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# by hand: conv0 4 channels x 6x6 positions x (1 x 3 x 3); conv1 6 x 6x6 x (4 x 3 x 3); Gemm 5 x 216; MatMul 3 x 5
HAND_MACS = 4 * 36 * 9 + 6 * 36 * 36 + 5 * 216 + 3 * 5


def test_the_estimate_of_a_tiny_cnn_equals_the_hand_count():
    macs, unresolved = macs_per_sample(tiny_cnn(), SHAPE)
    assert unresolved == () and macs == HAND_MACS
    cost = twin_cost(tiny_cnn(), SHAPE, steps=300, batch_size=64)
    assert cost.gmac == pytest.approx(HAND_MACS * 300 * 64 * FORWARD_BACKWARD / 1e9)
    assert macs_per_sample(tiny_cnn(batch=4), SHAPE)[0] == HAND_MACS  # a fixed batch is divided out


def test_the_estimate_of_the_linear_classifier():
    assert macs_per_sample(linear_classifier(), SHAPE) == (len(CLASSES) * int(np.prod(SHAPE)), ())


def test_a_graph_whose_shapes_cannot_be_inferred_has_an_unknown_cost():
    model = tiny_cnn()
    model.graph.node[4].input[1] = "missing_weight"  # the Gemm's weight is nowhere: no shape to count
    cost = twin_cost(model, SHAPE, steps=10, batch_size=8)
    assert cost.gmac is None and cost.unresolved


def test_the_budget_is_a_knob_and_validated():
    settings = VetSettings.from_knobs(table(), reference_max_gmac=12.5)
    assert settings.reference.max_gmac == 12.5
    assert VetSettings.from_knobs(table()).reference.max_gmac == ReferenceSettings().max_gmac
    with pytest.raises(ValueError, match="max_gmac"):
        ReferenceSettings(max_gmac=0)


def test_a_twin_over_the_budget_is_refused_with_the_fix_and_the_verdict_is_not_honest(tmp_path):
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    probe = write_probe(tmp_path / "probe.npz", 600)
    refused = vet(path, probe, thresholds=table(), reference_max_gmac=1e-6, reference_steps=30, **FAST)
    details = refused.tests["leakage"].details
    [record] = details["twins"]
    expected = 432 * 30 * 64 * FORWARD_BACKWARD / 1e9  # 432 MACs per sample (3 x 144), by hand
    assert record["refused"] == "cost" and record["cost"]["training_gmac"] == pytest.approx(expected)
    assert record["max_gmac"] == 1e-6
    reason = details["twin_missing_reason"]
    assert "--reference-model" in reason and "--reference-max-gmac" in reason and "GMAC" in reason
    assert refused.verdict != "honest"
    # the knob raises the budget: the same model gets its twin and can pass
    trained = vet(path, probe, thresholds=table(), reference_max_gmac=1.0, reference_steps=30, **FAST)
    twin = trained.tests["leakage"].details["twin"]
    assert twin["used"] is True and twin["cost"]["training_gmac"] == pytest.approx(expected)
    assert trained.verdict == "honest"


def test_the_cli_budget_option(tmp_path):
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    probe = write_probe(tmp_path / "probe.npz", 600)
    thresholds = tmp_path / "t.json"
    thresholds.write_text(json.dumps(table()))

    def vet_cli(budget: str):
        return CliRunner().invoke(main, [
            "vet", str(path), "--probe-data", str(probe), "--thresholds", str(thresholds), "--reference-steps", "30",
            "--reference-max-gmac", budget, "--leakage-augmentations", "1", "--leakage-max-fit", "600",
            "--leakage-bootstrap", "50", "--leakage-decoders", "knn", "--augment-seed", "3", "--format", "json", "-q",
        ])

    refused = vet_cli("0.000001")
    assert refused.exit_code == 3, refused.output  # inconclusive: no twin, no pass
    assert "--reference-max-gmac" in json.loads(refused.output)["tests"]["leakage"]["details"]["twin_missing_reason"]
    assert vet_cli("1").exit_code == 0


def test_a_per_batch_twin_is_usable(tmp_path):
    pytest.importorskip("torch")
    x, y = probe_arrays(400, seed=1)
    rng = np.random.default_rng(0)
    calls = []

    def take(index):  # augmented on the fly: noise on each drawn batch only
        calls.append(len(index))
        batch = np.clip(x[index % len(x)] + rng.normal(0, 0.05, x[index % len(x)].shape), 0, 1)
        return batch.astype(np.float32), y[index % len(x)]

    run, record = train_reference(linear_classifier(), BatchSource(4 * len(x), take),
                                  settings=ReferenceSettings(steps=60, batch_size=32))
    held_x, held_y = probe_arrays(300, seed=7)
    accuracy = float((run(held_x).argmax(axis=1) == held_y).mean())
    assert accuracy > 0.9  # three stripe classes: chance is 1/3
    assert calls == [32] * 60 and record["samples"] == 4 * len(x)


def test_the_default_twin_trains_per_batch_and_reports_its_source(tmp_path):
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, write_probe(tmp_path / "probe.npz", 600), thresholds=table(), reference_steps=30, **FAST)
    twin = report.tests["leakage"].details["twin"]
    assert twin["used"] is True and "augmented per mini-batch" in twin["source"]
    assert twin["samples"] == 4 * 600 and twin["accuracy"] > 0.9
