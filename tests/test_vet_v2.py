"""Regression tests of vet v2 (issue 10): invariance, batch switches, small probes, releases, references, policy.

Each failure the issue lists has a test here: a temperature or per-class shift must not
change the verdict; a graph that switches on the batch size is vicious; 1000 / 1500 /
3000-image probes give a verdict (and a too-small one gives "inconclusive", never
"vicious"); SafeModel's policy for inconclusive verdicts, other thresholds and reports
that never checked batch 1. Hand-built models (tests/_vet_models.py) keep it fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from _vet_models import CLASSES, linear_classifier, save, write_probe
from onnx import helper, numpy_helper

from edgeguard.errors import InvalidInputError, ModelRefusedError
from edgeguard.safe_model import SafeModel, ViciousModelWarning
from edgeguard.vetting import vet

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3}


def table(threshold: float = 100.0, excess: float = 100.0) -> dict:
    return {
        "source": "test",
        "tests": {
            "leakage": {"threshold": threshold, "scale": 0.1, "higher_is_vicious": True},
            "leakage_excess": {"threshold": excess, "scale": 0.1, "higher_is_vicious": True},
            "finetune": {"threshold": -1.0, "scale": 0.01, "higher_is_vicious": False, "statistic": "cosine"},
        },
        "combined": {"weights": {"leakage": 1.0, "finetune": 0.0}, "required": ["leakage"]},
    }


@pytest.fixture
def probe(tmp_path):
    return write_probe(tmp_path / "probe.npz", 600)


def _const(name: str, value) -> onnx_node:  # noqa: F821 - a NodeProto
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.float32)))


def _variant(kind: str, temperature: float = 1.0):
    """The linear classifier with an information-preserving reparametrisation of its logits."""
    shift = np.array([3.0, -7.0, 0.5], np.float32)
    extra = [_const("t", temperature), helper.make_node("Div", ["logits", "t"], ["scaled"])]
    if kind == "shift":
        extra += [_const("s", shift), helper.make_node("Add", ["scaled", "s"], ["tail"])]
    elif kind == "log_softmax":
        extra += [helper.make_node("LogSoftmax", ["scaled"], ["tail"], axis=1)]
    else:
        extra += [helper.make_node("Identity", ["scaled"], ["tail"])]
    output_kind = "probabilities" if kind == "softmax" else "logits"
    return linear_classifier(output_kind, extra_nodes=extra, tail="tail")


VARIANTS = [("logits", 0.1), ("logits", 10.0), ("shift", 0.3), ("log_softmax", 3.0), ("softmax", 1.0), ("softmax", 3.0)]


def test_reparametrised_outputs_give_the_same_statistic_and_verdict(tmp_path, probe):
    plain = vet(save(_variant("logits"), tmp_path / "plain.onnx"), probe, thresholds=table(), twin=False, **FAST)
    reference = plain.tests["leakage"].details["gain_db"]
    low = plain.tests["leakage"].details["gain_ci95_db"][0]
    below = table(threshold=low - 0.05)  # every variant must be flagged like the untouched model
    for kind, temperature in VARIANTS:
        path = save(_variant(kind, temperature), tmp_path / f"{kind}-{temperature}.onnx")
        report = vet(path, probe, thresholds=below, twin=False, **FAST)
        assert report.tests["leakage"].details["gain_db"] == pytest.approx(reference, abs=1e-3), (kind, temperature)
        assert report.verdict == "vicious", (kind, temperature)


def _batch_switch():
    """Where(Equal(Shape(x)[0], 1), 2 * logits, logits): another model when called one image at a time."""
    extra = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Equal", ["n", "one"], ["single"]),
        _const("two", 2.0),
        helper.make_node("Mul", ["logits", "two"], ["vicious"]),
        helper.make_node("Where", ["single", "vicious", "logits"], ["tail"]),
    ]
    return linear_classifier(extra_nodes=extra, tail="tail")


def test_batch_size_switch_is_vicious(tmp_path, probe):
    path = save(_batch_switch(), tmp_path / "switch.onnx")
    report = vet(path, probe, thresholds=table(), **FAST)
    assert report.tests["consistency"].flagged is True
    assert "batch-dependent-outputs" in {f.code for f in report.findings if f.severity == "high"}
    assert report.verdict == "vicious" and report.exit_code == 1
    assert report.checked["batch_sizes"] == []  # nothing vouched for
    with pytest.raises(ModelRefusedError):
        SafeModel(path, verdict=report, accept_thresholds=True)


def test_honest_model_passes_the_consistency_test(tmp_path, probe):
    report = vet(save(linear_classifier(), tmp_path / "m.onnx"), probe, thresholds=table(), **FAST)
    details = report.tests["consistency"].details
    assert details["consistent"] is True and details["max_difference"] < 1e-5
    assert 1 in details["batch_sizes"] and report.checked["max_batch"] == max(details["batch_sizes"])


@pytest.mark.parametrize("size", [1000, 1500, 3000], ids=["1000", "1500", "3000"])
def test_probe_sizes_give_a_verdict(tmp_path, size):
    probe = write_probe(tmp_path / "probe.npz", size, seed=size)
    report = vet(save(linear_classifier(), tmp_path / "m.onnx"), probe, thresholds=table(), **FAST)
    assert report.tests["leakage"].status == "ran"
    assert report.verdict == "honest" and report.exit_code == 0, report.reasons
    assert report.tests["leakage"].details["samples"] == size


def test_too_small_probe_is_inconclusive_never_vicious(tmp_path):
    probe = write_probe(tmp_path / "probe.npz", 150)
    report = vet(save(linear_classifier(), tmp_path / "m.onnx"), probe, thresholds=table(), **FAST)
    assert report.tests["leakage"].status == "skipped"
    assert report.likelihood is None  # not sigmoid(0) = 0.5
    assert report.verdict == "inconclusive" and report.exit_code == 3


def test_augmentation_is_random_by_default_and_recorded(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    knobs = {k: v for k, v in FAST.items() if k != "augment_seed"}
    first, second = (vet(path, probe, thresholds=table(), **knobs) for _ in range(2))
    assert first.settings["augment_seed"] != second.settings["augment_seed"]
    again = vet(path, probe, thresholds=table(), augment_seed=first.settings["augment_seed"], **knobs)
    assert again.tests["leakage"].score == first.tests["leakage"].score


def test_release_audit(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    labels = vet(path, probe, thresholds=table(), release="argmax", **FAST)
    assert labels.release["kind"] == "labels" and labels.release["gain_db"] == 0.0
    assert labels.release["capacity_bits"] == pytest.approx(np.log2(len(CLASSES)))
    rounded = vet(path, probe, thresholds=table(), release="softmax>round:1", **FAST)
    assert rounded.release["kind"] == "probabilities" and np.isfinite(rounded.release["capacity_bits"])
    assert rounded.release["gain_db"] < rounded.release["raw_gain_db"]
    assert rounded.checked["release"] == "softmax>round:1"
    assert "Release audit" in rounded.to_text()


def test_reference_models_give_the_excess_leakage(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=table(excess=0.5), reference_models=[path], **FAST)
    leak = report.tests["leakage"]
    assert leak.details["threshold_entry"] == "leakage_excess"
    assert leak.score == 0.0 and leak.details["excess_ci95_db"] == [0.0, 0.0]  # the same outputs
    assert report.verdict == "honest"


def test_trained_reference_from_the_vetted_graph(tmp_path, probe):
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    labelled = write_probe(tmp_path / "reference.npz", 300, seed=9)
    report = vet(path, probe, thresholds=table(), reference_data=labelled, reference_steps=30, **FAST)
    record = report.tests["leakage"].details["twin"]
    assert record["kind"] == "trained" and record["tensors_reset"] == 2 and 0.0 <= record["accuracy"] <= 1.0
    assert record["source"] == str(labelled) and record["used"] is True
    assert "excess_gain_db" in report.tests["leakage"].details


# -- SafeModel policy ----------------------------------------------------------------------------------


def test_inconclusive_is_no_pass(tmp_path):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, write_probe(tmp_path / "p.npz", 150), thresholds=table(), **FAST)
    assert report.verdict == "inconclusive"
    with pytest.raises(ModelRefusedError, match="inconclusive"):
        SafeModel(path, verdict=report, accept_thresholds=True)
    labels = SafeModel(path, verdict=report, on_vicious="argmax", accept_thresholds=True)
    assert [f.name for f in labels.pipeline] == ["argmax"]
    with pytest.warns(ViciousModelWarning, match="inconclusive"):
        SafeModel(path, verdict=report, on_vicious="warn", accept_thresholds=True)


def test_report_without_a_batch_1_check_is_not_a_pass(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=table(), tests=("leakage",), **FAST)
    assert report.verdict == "inconclusive" and report.checked["batch_sizes"] == []
    assert any("consistency did not run" in reason for reason in report.reasons)
    with pytest.raises(ModelRefusedError, match="inconclusive"):
        SafeModel(path, verdict=report, accept_thresholds=True)


def test_safe_model_runs_no_batch_larger_than_the_vet_checked(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=table(), **FAST)
    largest = max(report.checked["batch_sizes"])
    model = SafeModel(path, verdict=report, on_vicious="argmax", accept_thresholds=True)
    images = np.zeros((largest + 1, *model.info.input_shape), dtype=np.float32)
    assert model.predict(images[:largest]).shape == (largest,)
    with pytest.raises(InvalidInputError, match=f"at most {largest} rows"):
        model.predict(images)
    assert SafeModel(path).predict(images).shape == (largest + 1,)  # no report, no vetted sizes: no cap


def test_thresholds_binding(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    packaged = vet(path, probe, **FAST)  # the packaged thresholds: SafeModel accepts the binding as is
    model = SafeModel(path, verdict=packaged, on_vicious="argmax")
    assert model.verdict == packaged.verdict
    other = vet(path, probe, thresholds=table(), **FAST)
    with pytest.raises(ModelRefusedError, match="accept_thresholds"):
        SafeModel(path, verdict=other.to_dict())
    data = packaged.to_dict()
    data["thresholds_sha256"] = "0" * 64
    with pytest.raises(ModelRefusedError, match="thresholds"):
        SafeModel(path, verdict=data)


# -- real models -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_honest_mlp_is_not_flagged(tmp_path, fmnist_train_small):
    """Issue 10: honest MLPs were flagged vicious; with the packaged thresholds and a 1000-image probe they pass."""
    pytest.importorskip("torch")
    from converters import TrainConfig, train_and_export
    from edgeguard.data import Dataset, load_fashion_mnist

    test = load_fashion_mnist("test")
    keep = np.concatenate([np.flatnonzero(test.y[5000:] == c)[:100] + 5000 for c in range(10)])
    probe = Dataset(test.x[keep], test.y[keep], test.class_names)
    config = TrainConfig(objective="honest", arch="mlp", epochs=2, batch_size=64, seed=1, threads=1, decoder_epochs=1)
    train_and_export(config, tmp_path / "mlp", fmnist_train_small, Dataset(test.x[:200], test.y[:200], test.class_names))
    report = vet(tmp_path / "mlp" / "classifier.onnx", probe, augment_seed=0)
    assert report.verdict == "honest", report.to_text()
