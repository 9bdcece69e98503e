"""The accuracy the vet credits a model and its twin with (edgeguard.vetting.accuracy): recoverable, not claimed.

The decision raises the excess over the twin for the model's accuracy lead, so a provider would
like its model to *look* less accurate at no real cost: one Add on a class logit lowers top-1
accuracy while its server subtracts the constant again (benchmarks/redteam_bias_shift.py). These
tests check that the recoverable accuracy is not moved by such edits (bias, temperature), that it
never falls below top-1, and that the vet measures model and twin with it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _vet_models import linear_classifier, save, write_probe
from onnx import helper, numpy_helper

from edgeguard.vetting import vet
from edgeguard.vetting.accuracy import recoverable_accuracy, top1_accuracy

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3,
        "leakage_decoders": ("knn",)}


def _logits(n=1000, k=10, signal=2.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n // k)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += signal
    return logits, labels


def test_top1_matches_a_row_at_a_time_oracle():
    logits, labels = _logits(n=200)
    oracle = sum(int(max(range(10), key=lambda j, r=row: r[j]) == y) for row, y in zip(logits, labels)) / 200
    assert top1_accuracy(logits, labels) == pytest.approx(oracle)


@pytest.mark.parametrize(
    "edit",
    [lambda z: z + np.eye(10)[0] * 3.25, lambda z: z * 0.2, lambda z: z * 5.0 - np.arange(10) * 0.7],
    ids=["bias-on-one-class", "temperature", "affine"],
)
def test_a_per_class_bias_or_rescaling_does_not_move_it(edit):
    logits, labels = _logits()
    before = recoverable_accuracy(logits, labels, seed=1)
    after = recoverable_accuracy(edit(logits), labels, seed=1)
    assert after["accuracy"] == pytest.approx(before["accuracy"], abs=0.01)
    if after["top1"] < before["top1"] - 0.1:  # the bias did hide accuracy from top-1 ...
        assert after["accuracy"] > after["top1"] + 0.1  # ... and the probes got it back


def test_it_never_falls_below_top1_and_says_when_probes_cannot_run():
    logits, labels = _logits(n=200)
    record = recoverable_accuracy(logits, labels)
    assert record["accuracy"] >= record["top1"] and set(record) >= {"linear", "knn", "folds"}
    lonely = recoverable_accuracy(logits[:11], np.r_[labels[:10], 5])  # class 0 ten times, class 5 once
    assert lonely["accuracy"] == lonely["top1"] and "too few" in lonely["note"]
    multilabel = recoverable_accuracy(logits[:, :3], (logits[:, :3] > 0).astype(float), task_type="multilabel")
    assert multilabel["accuracy"] == 1.0 and "multilabel" in multilabel["note"]


def _bias_shift(bias: float):
    vector = np.zeros((1, 3), np.float32)
    vector[0, 0] = bias
    nodes = [helper.make_node("Constant", [], ["shift"], value=numpy_helper.from_array(vector)),
             helper.make_node("Add", ["logits", "shift"], ["shifted"])]
    return linear_classifier(extra_nodes=nodes, tail="shifted")


def test_the_vet_measures_model_and_twin_by_recoverable_accuracy(tmp_path):
    pytest.importorskip("torch")
    probe = write_probe(tmp_path / "probe.npz", 600)
    entry = {"threshold": 100.0, "scale": 0.1, "higher_is_vicious": True}
    table = {"source": "test", "tests": {"leakage": entry, "leakage_excess_twin": entry, "finetune": entry},
             "combined": {"min_probe_samples": 500, "require_twin": True}}
    details = {}
    for name, model in (("plain", linear_classifier()), ("shifted", _bias_shift(8.0))):
        report = vet(save(model, tmp_path / f"{name}.onnx"), probe, thresholds=table, **FAST)
        details[name] = report.tests["leakage"].details
    plain, shifted = details["plain"], details["shifted"]
    assert shifted["model_accuracy"] < plain["model_accuracy"] - 0.1  # the edit hides accuracy from top-1
    assert shifted["model_recoverable_accuracy"] == pytest.approx(plain["model_recoverable_accuracy"], abs=0.02)
    for d in (plain, shifted):
        assert d["accuracy_gap"] == pytest.approx(d["model_recoverable_accuracy"] - d["twin_recoverable_accuracy"])
        assert d["twin"]["recoverable_accuracy"] >= d["twin"]["accuracy"]
        assert "recoverable" in d["accuracy_measure"]
