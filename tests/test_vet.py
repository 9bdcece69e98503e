"""edgeguard.vetting: the Python API, the probe preprocessing, the behavioural tests, and real models.

Hand-built ONNX models (tests/_vet_models.py) cover the plumbing in milliseconds; the
``tiny_threats`` fixture (an honest and a vicious CNN trained in seconds on 4000
Fashion-MNIST images) checks that the vet tells them apart.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _vet_models import (
    CLASSES,
    SHAPE,
    control_flow_classifier,
    custom_domain_classifier,
    linear_classifier,
    probe_arrays,
    rounding_classifier,
    save,
    write_probe,
)

import edgeguard
from edgeguard import SafeModel, model_sha256
from edgeguard.data import Dataset
from edgeguard.errors import ConfigError, DataError, ModelRefusedError
from edgeguard.model import ModelInfo
from edgeguard.vetting import VetReport, vet
from edgeguard.vetting.leakage import LeakageSettings, leakage_audit, output_features
from edgeguard.vetting.probe import load_probe

#: Cheap leakage settings for the hand-built models (one augmentation, small fits).
SMALL = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 1}
FINETUNE_SMALL = {"finetune_train_samples": 64, "finetune_eval_samples": 200, "finetune_batch_size": 32}


def permissive(leakage: float = 100.0) -> dict:
    """Thresholds under which the hand-built models pass (leakage flags above ``leakage`` dB)."""
    return {
        "source": "test",
        "tests": {
            "leakage": {"threshold": leakage, "scale": 0.1, "higher_is_vicious": True},
            "finetune": {"threshold": -1.0, "scale": 0.01, "higher_is_vicious": False, "statistic": "cosine"},
        },
        "combined": {"weights": {"leakage": 1.0, "finetune": 1.0}, "bias": 0.0, "required": ["leakage"]},
    }


@pytest.fixture
def probe(tmp_path):
    return write_probe(tmp_path / "probe.npz", 600)


# -- API and report ----------------------------------------------------------------------------------


def test_package_is_callable_and_exports(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = edgeguard.vet(path, probe, thresholds=permissive(), **SMALL)
    assert isinstance(report, edgeguard.VetReport)
    assert report.verdict == "honest" and report.exit_code == 0
    assert set(report.tests) == {"consistency", "precision", "continuity", "leakage"}  # fine-tune: on request
    assert report.checked["batch_sizes"][0] == 1 and report.settings["augment_seed"] == 1
    with_finetune = vet(path, probe, thresholds=permissive(), tests=("leakage", "finetune"), **SMALL, **FINETUNE_SMALL)
    assert with_finetune.tests["finetune"].details["interpreter_max_abs_diff"] < 1e-4


def test_report_round_trip_and_safe_model_binding(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=permissive(), **SMALL)
    data = report.to_dict()
    json.dumps(data, allow_nan=False)  # strict JSON
    again = VetReport.from_json(report.to_json())
    assert again.to_dict() == data
    saved = report.save(tmp_path / "report.json")
    assert VetReport.load(saved).model_sha256 == model_sha256(path) == report.model_sha256
    assert report.thresholds_sha256 and report.edgeguard_version == edgeguard.__version__
    # made with other thresholds than the packaged ones: refused unless accepted
    with pytest.raises(ModelRefusedError, match="thresholds"):
        SafeModel(path, verdict=report)
    assert SafeModel(path, verdict=report, accept_thresholds=True).verdict == "honest"
    assert SafeModel(path, verdict=saved, accept_thresholds=True).verdict == "honest"
    flagged = vet(path, probe, thresholds=permissive(leakage=-100.0), **SMALL)
    assert flagged.verdict == "vicious" and flagged.exit_code == 1 and flagged.likelihood > 0.99
    with pytest.raises(ModelRefusedError):
        SafeModel(path, verdict=flagged, on_vicious="refuse", accept_thresholds=True)


def test_knob_validation(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="finetune_stpes"):
        vet(path, probe, finetune_stpes=3)
    with pytest.raises(ConfigError, match="optimiser"):
        vet(path, probe, finetune_optimiser="rmsprop")
    with pytest.raises(ConfigError, match="decoders"):
        vet(path, probe, leakage_decoders=("gan",))
    with pytest.raises(ConfigError, match="tests"):
        vet(path, probe, tests=["magic"])


def test_uncalibrated_statistic_is_reported_but_not_used(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(
        path, probe, thresholds=permissive(), tests=("consistency", "precision", "continuity", "leakage", "finetune"),
        finetune_statistic="class_coherence", **SMALL, **FINETUNE_SMALL,
    )
    finetune = report.tests["finetune"]
    assert finetune.score is not None and finetune.threshold is None and "no threshold" in finetune.reason
    assert report.verdict == "honest"


def test_settings_come_from_the_thresholds_file(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    table = permissive()
    table["audit"] = {"settings": {"decoders": ["knn"], "augmentations": 1, "max_fit": 500}}
    report = vet(path, probe, thresholds=table, augment_seed=1)
    assert report.settings["leakage"]["decoders"] == ["knn"] and report.settings["leakage"]["max_fit"] == 500
    assert {key.split("/")[2] for key in report.tests["leakage"].details["gains_db"]} == {"knn"}
    assert "calibration_note" not in report.tests["leakage"].details
    overridden = vet(path, probe, thresholds=table, leakage_decoders=("krr", "knn"), augment_seed=1)
    assert {key.split("/")[2] for key in overridden.tests["leakage"].details["gains_db"]} == {"krr", "knn"}
    assert "decoders" in overridden.tests["leakage"].details["calibration_note"]


@pytest.mark.parametrize("output_kind", ["logits", "probabilities"])
def test_multilabel_model_end_to_end(tmp_path, output_kind):
    x, y = probe_arrays(600)
    probe = tmp_path / "attributes.npz"
    np.savez(probe, x=x, y=np.eye(3, dtype=np.float32)[y])  # one-hot attributes: (N, 3) 0/1 labels
    model = save(linear_classifier(output_kind, task_type="multilabel"), tmp_path / "m.onnx")
    report = vet(model, probe, thresholds=permissive(), tests=("consistency", "precision", "continuity", "leakage", "finetune"), **SMALL, **FINETUNE_SMALL)
    assert report.model["task_type"] == "multilabel"
    assert report.tests["leakage"].status == "ran" and report.tests["finetune"].status == "ran"
    assert report.tests["finetune"].details["loss_after"] < report.tests["finetune"].details["loss_before"]
    assert report.verdict == "honest" and report.probe["class_counts"] == np.bincount(y).tolist()


# -- findings change the verdict -----------------------------------------------------------------------


def test_non_differentiable_op_blocks_an_honest_verdict(tmp_path, probe):
    report = vet(save(rounding_classifier(), tmp_path / "m.onnx"), probe, thresholds=permissive(), **SMALL)
    assert any(f.code == "non-differentiable-op" and f.severity == "high" for f in report.findings)
    assert report.tests["leakage"].flagged is False
    assert report.verdict == "inconclusive" and report.exit_code == 3
    assert "non-differentiable-op" in report.reasons[0]


def test_control_flow_is_refused_before_anything_runs(tmp_path, probe):
    report = vet(save(control_flow_classifier(), tmp_path / "m.onnx"), probe, thresholds=permissive(), **SMALL)
    assert "control-flow" in {f.code for f in report.findings}
    assert report.critical and report.exit_code == 2 and report.tests == {}


def test_custom_domain_model_cannot_run(tmp_path, probe):
    report = vet(save(custom_domain_classifier(), tmp_path / "m.onnx"), probe, thresholds=permissive(), **SMALL)
    codes = {f.code: f.severity for f in report.findings}
    assert codes["custom-domain"] == "high" and report.critical
    assert report.exit_code == 2 and report.tests == {}


# -- probe preprocessing ------------------------------------------------------------------------------


def test_image_folder_probe_is_matched_resized_and_scaled(tmp_path):
    from PIL import Image

    x, y = probe_arrays(30)
    root = tmp_path / "folder"
    for index, (image, label) in enumerate(zip(x, y)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").resize((24, 24)).save(folder / f"{index}.png")
    model = linear_classifier()
    info = ModelInfo.from_model(model)
    info = ModelInfo(**{**info.to_dict(), "pixel_range": (-1.0, 1.0)})
    probe = load_probe(root, info)
    assert probe.images.shape == (30, *SHAPE) and probe.inputs.shape == (30, *SHAPE)
    assert probe.images.min() >= 0.0 and probe.inputs.min() < 0.0
    np.testing.assert_allclose(probe.inputs, probe.images * 2.0 - 1.0, atol=1e-6)
    # folders are read in sorted order: stripe-bottom (class 2), stripe-middle (1), stripe-top (0)
    expected = np.concatenate([np.full(np.sum(y == c), c) for c in (2, 1, 0)])
    np.testing.assert_array_equal(probe.labels, expected)


def test_probe_class_names_are_remapped_and_checked():
    info = ModelInfo.from_model(linear_classifier())
    x, y = probe_arrays(20)
    reversed_names = tuple(reversed(CLASSES))
    data = Dataset(x[:, None].astype(np.float32) / 255, (2 - y).astype(np.int64), reversed_names)
    np.testing.assert_array_equal(load_probe(data, info).labels, y)
    with pytest.raises(DataError, match="unknown"):
        load_probe(Dataset(data.x, data.y, ("a", "b", "c")), info)
    with pytest.raises(DataError, match="labels in"):
        load_probe(Dataset(data.x, data.y + 5, ()), info)


# -- the behavioural tests on their own ------------------------------------------------------------------


def test_output_features_agree_for_logits_and_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(50, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        output_features(logits, "logits"), output_features(probabilities, "probabilities"), atol=1e-8
    )
    np.testing.assert_allclose(output_features(logits, "logits", features="probabilities"), probabilities, atol=1e-12)
    with pytest.raises(DataError):
        output_features(np.full((2, 3), np.nan))


@pytest.mark.parametrize("decoder", ["knn", "krr", "ridge"])
def test_leakage_audit_sees_an_encoding_and_not_a_label(decoder):
    x, y = probe_arrays(600, seed=1)
    images = x[:, None].astype(np.float32) / 255
    flat = images.reshape(len(images), -1).astype(np.float64)
    mean = flat.mean(0)
    components = np.linalg.svd(flat - mean, full_matrices=False)[2][:6]
    templates = np.stack([flat[y == c].mean(0) for c in range(3)])

    def label_only(batch):  # outputs that carry the nearest class template and nothing else
        rows = batch.reshape(len(batch), -1)
        return np.eye(3)[(rows @ templates.T - 0.5 * (templates**2).sum(1)).argmax(1)] * 5.0

    def encoding(batch):  # the class plus image details
        rows = batch.reshape(len(batch), -1)
        return np.hstack([label_only(batch), (rows - mean) @ components.T])

    settings = LeakageSettings(decoder=decoder, augmentations=1, max_fit=600, bootstrap=50)
    honest = leakage_audit(images, label_only, settings=settings, augment_seed=2)
    vicious = leakage_audit(images, encoding, settings=settings, augment_seed=2)
    assert honest.gain_db < 0.5
    assert vicious.gain_db > honest.gain_db + 1.0 and vicious.ci_low_db > honest.ci_high_db
    assert vicious.to_dict()["gain_ci95_db"][0] <= vicious.gain_db <= vicious.to_dict()["gain_ci95_db"][1]
    with pytest.raises(DataError, match="at least 200"):
        leakage_audit(images[:100], label_only, settings=settings)


def test_finetune_test_on_probabilities_and_multilabel(tmp_path):
    torch = pytest.importorskip("torch")
    from edgeguard.onnx_torch import to_torch
    from edgeguard.vetting.finetune import FinetuneSettings, finetune_test

    x, y = probe_arrays(300)
    images = x[:, None].astype(np.float32) / 255
    settings = FinetuneSettings(train_samples=64, eval_samples=200, batch_size=32)
    module = to_torch(linear_classifier("probabilities"))
    before = [p.detach().clone() for p in module.parameters()]
    result = finetune_test(module, images, y, output_kind="probabilities", settings=settings)
    assert 0.9 < result["cosine"] <= 1.0 and result["loss_after"] < result["loss_before"]
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))  # the original is untouched
    multilabel = np.eye(3, dtype=np.float32)[y]
    logits_module = to_torch(linear_classifier())
    result = finetune_test(logits_module, images, multilabel, task_type="multilabel", settings=settings)
    assert np.isfinite(result["score"]) and result["loss_after"] < result["loss_before"]
    blown = finetune_test(
        logits_module, images, y, settings=FinetuneSettings(train_samples=64, eval_samples=200, learning_rate=1e38)
    )
    assert blown["finite"] is False and blown["score"] == -1.0


# -- real models -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fmnist_probe():
    from edgeguard.data import load_fashion_mnist
    from edgeguard.errors import DataNotFoundError

    try:
        test = load_fashion_mnist("test")
    except DataNotFoundError as error:
        pytest.skip(f"Fashion-MNIST is not installed: {error}")
    keep = np.concatenate([np.flatnonzero(test.y[500:] == c)[:100] + 500 for c in range(10)])
    return Dataset(test.x[keep], test.y[keep], test.class_names)  # 1000 images, 100 per class, never trained on


@pytest.mark.slow
def test_tiny_honest_and_vicious_models_are_told_apart(tiny_threats, fmnist_probe):
    """With the packaged thresholds and a 1000-image probe (100 per class); see detection.md."""
    honest = vet(tiny_threats["honest"]["classifier"], fmnist_probe, augment_seed=0)
    vicious = vet(tiny_threats["vicious"]["classifier"], fmnist_probe, augment_seed=0)
    assert honest.verdict == "honest", honest.to_text()
    assert vicious.verdict == "vicious", vicious.to_text()
    assert vicious.tests["leakage"].score > honest.tests["leakage"].score + 1.0
    assert honest.probe["samples"] == 1000 and honest.probe["accuracy"] > 0.75
    assert SafeModel(tiny_threats["honest"]["classifier"], verdict=honest).verdict == "honest"
