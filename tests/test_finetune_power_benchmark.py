"""benchmarks/finetune_power.py's analysis: AUROC, the calibration threshold, the twin's structure key.

Synthetic records (no fine-tuning); the AUROC oracle is scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import finetune_power as fp


def test_auroc_matches_sklearn_with_ties_and_direction():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    honest = list(np.round(rng.normal(0.0, 1.0, 9), 1))
    vicious = list(np.round(rng.normal(0.7, 1.0, 7), 1))
    labels = [0] * len(honest) + [1] * len(vicious)
    scores = honest + vicious
    assert fp.auroc(honest, vicious, True) == pytest.approx(roc_auc_score(labels, scores))
    assert fp.auroc(honest, vicious, False) == pytest.approx(roc_auc_score(labels, [-s for s in scores]))
    assert fp.auroc([], vicious, True) is None
    block = fp.auroc_ci(honest, vicious, True, draws=200)
    assert block["low"] <= block["auroc"] <= block["high"]


def test_threshold_fitted_on_calibration_separates_when_it_can():
    # lower is vicious (loss_decrease_per_shift): honest 0.8-1.5, vicious 0.1-0.4
    threshold = fp.fit_threshold([0.8, 1.0, 1.5], [0.1, 0.4], vicious_high=False)
    assert 0.4 < threshold < 0.8
    assert fp.apply_threshold([0.3, 0.9, float("nan")], threshold, vicious_high=False) == [True, False, False]
    threshold = fp.fit_threshold([0.1, 0.2], [0.5, 0.9], vicious_high=True)
    assert 0.2 < threshold < 0.5


def _record(name, family, split, ldps, twin):
    run = {stat: 0.5 for stat in fp._directions()}
    twin_run = dict(run, loss_decrease_per_shift=twin)
    return {
        "name": name, "family": family, "split": split, "arch": "cnn", "seed": 0,
        "result": {
            "accuracy": 0.85,
            "finetune": {"calibrated": [dict(run, loss_decrease_per_shift=ldps)]},
            "twins": [{"accuracy": 0.8, "finetune": {"calibrated": [twin_run]}}],
        },
    }


def test_analyse_twin_ratio_and_held_out_threshold():
    models = [
        _record("honest-cnn-conv-s0", "honest", "calibration", 0.02, 0.02),
        _record("honest-cnn-under-s0", "honest", "calibration", 0.10, 0.02),
        _record("paper-logits-cnn-s0", "paper-logits", "calibration", 0.004, 0.02),
        _record("honest-cnn-conv-s2", "honest", "test", 0.03, 0.03),
        _record("finish-ce-cnn-s2", "finish-ce", "test", 0.006, 0.03),
        _record("temperature-cnn-s2", "temperature", "test", 0.3, 0.03),
    ]
    analysis = fp.analyse(models, "calibrated")
    row = analysis["rows"]["finish-ce-cnn-s2"]["loss_decrease_per_shift"]
    assert row["ratio"] == pytest.approx(0.2) and row["diff"] == pytest.approx(-0.024)
    block = analysis["separation"]["loss_decrease_per_shift"]["ratio"]
    assert block["calibration"]["all_honest"]["auroc"] == 1.0
    assert block["threshold"]["tp"] == 1 and block["threshold"]["vicious"] == 2  # the temperature model escapes
    assert block["threshold"]["fp"] == 0 and not block["threshold"]["separates_held_out"]
    assert "ratio" not in analysis["separation"]["cosine"]  # cosine ~1 by construction: only its difference
    assert "finish-ce-cnn-s2" in fp.render({
        "generated": "now", "machine": {"node": "n", "cpus": 2, "load_start": "0", "omp_threads": "1"},
        "wall_seconds": 1.0, "reference": {}, "twin_seeds": [0], "ft_seeds": [0], "counts": {}, "models": models,
        "analysis": {"calibrated": analysis},
    })


def _gemm_model(path, weight, scale):
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Mul", ["h", "s"], ["y"])]
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b"),
             numpy_helper.from_array(np.array([scale], np.float32), "s")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph), path)
    return str(path)


def test_structure_key_ignores_the_weights_the_twin_resets_only(tmp_path):
    rng = np.random.default_rng(1)
    a = _gemm_model(tmp_path / "a.onnx", rng.normal(size=(4, 3)), 1.0)
    b = _gemm_model(tmp_path / "b.onnx", rng.normal(size=(4, 3)), 1.0)  # other weights: same twin
    c = _gemm_model(tmp_path / "c.onnx", rng.normal(size=(4, 3)), 3.0)  # another output scale: another twin
    assert fp.structure_key(a) == fp.structure_key(b) != fp.structure_key(c)
