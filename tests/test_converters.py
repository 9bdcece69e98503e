"""Tests of the server-side converters: training (Algorithm 1), ONNX export, reports and the CLI.

The heavy models come from the session fixture ``tiny_threats`` (conftest.py); the few
extra trainings here use a few hundred images and one epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters need torch (pip install -e '.[torch]')")
onnx = pytest.importorskip("onnx")
from click.testing import CliRunner  # noqa: E402

from converters import (  # noqa: E402
    FASHION_ATTRIBUTES,
    ExportCheckError,
    TrainConfig,
    export_classifier,
    label_only_baseline,
    load_report,
    model_info_for,
    run_onnx,
    train_and_export,
)
from converters.cli import main  # noqa: E402
from converters.losses import positive_weights, reconstruction_loss, ssim  # noqa: E402
from converters.models import ReleasedOutput, build_classifier  # noqa: E402
from converters.tasks import attribute_matrix, to_attribute_dataset  # noqa: E402
from edgeguard.data import FASHION_MNIST_CLASSES, Dataset  # noqa: E402
from edgeguard.errors import DataNotFoundError, EdgeguardError, InvalidInputError  # noqa: E402
from edgeguard.metrics import psnr, ssim_per_image  # noqa: E402
from edgeguard.model import METADATA_KEYS, ModelInfo, load_proto  # noqa: E402

#: Words that would reveal the training objective if they appeared anywhere in a classifier file.
_TELLTALE_WORDS = ("vicious", "honest", "decoder", "beta", "objective", "reconstruct", "attack", "huber", "ssim")


def _tiny_config(**changes: object) -> TrainConfig:
    """A one-epoch run on a few hundred images (seconds)."""
    values = dict(epochs=1, batch_size=32, lr=2e-3, decoder_epochs=1, threads=1, seed=0)
    values.update(changes)
    return TrainConfig(**values)


# --- losses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(4, 1, 28, 28), (3, 3, 32, 32), (2, 1, 11, 11), (2, 2, 16, 40)], ids=["fmnist", "rgb32", "window", "wide"]
)
def test_torch_ssim_matches_edgeguard_metric(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape)
    xhat = np.clip(x + rng.normal(0.0, 0.15, shape), 0.0, 1.0)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(xhat), reduction="none").numpy()
    np.testing.assert_allclose(ours, ssim_per_image(x, xhat), atol=1e-5, rtol=0)
    assert float(ssim(torch.from_numpy(x), torch.from_numpy(x))) == pytest.approx(1.0, abs=1e-12)


def test_reconstruction_loss_is_differentiable_and_zero_at_the_target() -> None:
    x = torch.rand(3, 1, 28, 28)
    xhat = torch.rand(3, 1, 28, 28, requires_grad=True)
    loss = reconstruction_loss(xhat, x, alpha_mse=5.0, alpha_ssim=1.0, huber_delta=1.0)
    loss.backward()
    assert xhat.grad is not None and float(xhat.grad.abs().sum()) > 0
    assert float(reconstruction_loss(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_positive_weights_are_negatives_over_positives() -> None:
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(positive_weights(labels).numpy(), [1 / 3, 3.0, 1.0])


# --- tasks ----------------------------------------------------------------------------------


def test_attributes_are_multilabel_and_derived_from_classes() -> None:
    matrix = attribute_matrix(FASHION_MNIST_CLASSES)
    assert matrix.shape == (10, len(FASHION_ATTRIBUTES))
    assert matrix.sum(axis=1).max() >= 3  # e.g. Coat: upper_body, long_sleeves, warm
    assert (matrix.sum(axis=1) >= 1).all()
    coat = FASHION_MNIST_CLASSES.index("Coat")
    names = list(FASHION_ATTRIBUTES)
    assert {names[i] for i in np.flatnonzero(matrix[coat])} == {"upper_body", "long_sleeves", "warm"}
    data = to_attribute_dataset(
        Dataset(np.zeros((3, 1, 28, 28), np.float32), np.array([4, 7, 8]), FASHION_MNIST_CLASSES)
    )
    assert data.multilabel and data.class_names == tuple(FASHION_ATTRIBUTES)
    assert data.y[2].tolist() == [0, 0, 1, 0, 0, 0, 0]  # Bag


def test_label_only_baseline_is_the_mean_image_of_the_predicted_class() -> None:
    x = np.stack([np.full((1, 4, 4), value, np.float32) for value in (0.0, 0.2, 1.0, 0.6)])
    train = Dataset(x, np.array([0, 0, 1, 1]), ("a", "b", "c"))
    guesses = label_only_baseline(train, np.array([1, 0, 2]))
    np.testing.assert_allclose(guesses[:, 0, 0, 0], [0.8, 0.1, 0.45])  # class 2 unseen: overall mean


# --- the session models ---------------------------------------------------------------------


def test_vicious_decoder_beats_label_only_baseline_on_held_out_images(
    tiny_threats: dict, fmnist_train_small: Dataset, fmnist_test_small: Dataset
) -> None:
    vicious = tiny_threats["vicious"]
    images = fmnist_test_small.x
    outputs = run_onnx(vicious["classifier"], images)
    reconstructions = run_onnx(vicious["decoder"], outputs)
    assert reconstructions.shape == images.shape
    assert reconstructions.min() >= 0.0 and reconstructions.max() <= 1.0
    baseline = label_only_baseline(fmnist_train_small, outputs.argmax(axis=1))
    gain = psnr(images, reconstructions) - psnr(images, baseline)
    assert gain >= 2.0, f"vicious decoder only {gain:.2f} dB above the label-only baseline"
    report = vicious["report"]
    assert report["psnr"] == pytest.approx(psnr(images, reconstructions), abs=1e-3)
    assert report["baseline"]["psnr"] == pytest.approx(psnr(images, baseline), abs=1e-3)
    assert report["accuracy"] == pytest.approx(float((outputs.argmax(axis=1) == fmnist_test_small.y).mean()))
    assert report["accuracy"] > 0.75


def test_honest_model_has_a_post_hoc_decoder_that_leaks_less(tiny_threats: dict) -> None:
    honest, vicious = tiny_threats["honest"]["report"], tiny_threats["vicious"]["report"]
    assert honest["decoder_kind"] == "post-hoc" and "post-hoc decoder" in honest["decoder_note"]
    assert honest["config"]["beta2"] == 0.0 and honest["decoder_epochs"] == 2
    assert vicious["decoder_kind"] == "joint" and vicious["config"]["beta2"] == 3.0
    assert honest["accuracy"] > 0.75
    assert honest["psnr_gain_db"] < vicious["psnr_gain_db"] - 1.0
    assert tiny_threats["honest"]["decoder"].is_file()


@pytest.mark.parametrize("objective", ["honest", "vicious"])
def test_report_has_every_documented_field(tiny_threats: dict, objective: str) -> None:
    report = load_report(tiny_threats[objective]["dir"])
    for key in ("accuracy", "psnr", "ssim", "risk", "wall_time_s", "seed", "torch_version", "best_epoch"):
        assert getattr(report, key) is not None
    assert set(report.baseline) == {"psnr", "ssim", "risk"}
    assert report.epochs_run == 2 and 1 <= report.best_epoch <= 2 and len(report.history) == 2
    assert (report.num_train, report.num_validation, report.num_test) == (3600, 400, 500)
    assert report.torch_version == torch.__version__
    assert max(report.export_max_abs_diff.values()) <= 1e-4
    assert report.config["objective"] == objective


@pytest.mark.parametrize("objective", ["honest", "vicious"])
def test_classifier_metadata_is_declared_and_hides_the_objective(tiny_threats: dict, objective: str) -> None:
    model = load_proto(tiny_threats[objective]["classifier"])
    info = ModelInfo.from_model(model)
    assert info.declared
    assert (info.input_name, info.output_name) == ("input", "output")
    assert info.input_shape == (1, 28, 28) and info.class_names == FASHION_MNIST_CLASSES
    assert (info.task_type, info.output_kind, info.pixel_range) == ("multiclass", "logits", (0.0, 1.0))
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert set(METADATA_KEYS) <= set(props) and {"model_name", "model_version"} <= set(props)
    texts = [*props, *props.values(), model.doc_string, model.producer_name, model.graph.doc_string]
    texts += [node.name for node in model.graph.node] + [init.name for init in model.graph.initializer]
    leaked = {word for word in _TELLTALE_WORDS for text in texts if word in text.lower()}
    assert not leaked, f"the classifier file mentions {leaked}"


def test_honest_and_vicious_files_look_alike(tiny_threats: dict) -> None:
    honest, vicious = (load_proto(tiny_threats[name]["classifier"]) for name in ("honest", "vicious"))
    assert {e.key: e.value for e in honest.metadata_props} == {e.key: e.value for e in vicious.metadata_props}
    assert [n.op_type for n in honest.graph.node] == [n.op_type for n in vicious.graph.node]


@pytest.mark.parametrize("objective", ["honest", "vicious"])
def test_exported_classifier_has_a_dynamic_batch(
    tiny_threats: dict, fmnist_test_small: Dataset, objective: str
) -> None:
    path = tiny_threats[objective]["classifier"]
    images = fmnist_test_small.x[:5]
    together = run_onnx(path, images)
    one_by_one = np.concatenate([run_onnx(path, images[i : i + 1]) for i in range(5)])
    assert together.shape == (5, 10)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


# --- export ---------------------------------------------------------------------------------


def _random_classifier(arch: str, activation: str) -> ReleasedOutput:
    torch.manual_seed(3)
    classifier = build_classifier(arch, (1, 28, 28), 10, [0.3], [0.35])
    for module in classifier.modules():  # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return ReleasedOutput(classifier, activation).eval()


@pytest.mark.parametrize("batch", [1, 5], ids=["batch1", "batch5"])
@pytest.mark.parametrize("arch", ["cnn", "wrn", "mlp"])
def test_onnx_round_trip_matches_torch(tmp_path, arch: str, batch: int) -> None:
    released = _random_classifier(arch, "none")
    info = ModelInfo("input", "output", (1, 28, 28), FASHION_MNIST_CLASSES, declared=True)
    sample = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    difference = export_classifier(released, tmp_path / "model.onnx", info, sample, {"model_name": "m"})
    assert difference <= 1e-4
    images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = released(images).numpy()
    actual = run_onnx(tmp_path / "model.onnx", images.numpy())
    assert actual.shape == (batch, 10)
    assert np.abs(actual - expected).max() <= 1e-4
    opset = {entry.domain: entry.version for entry in onnx.load(tmp_path / "model.onnx").opset_import}
    assert 13 <= opset[""] <= 21


def test_export_refuses_to_write_a_graph_that_does_not_match(tmp_path, monkeypatch) -> None:
    import converters.export as export_module

    released = _random_classifier("mlp", "none")
    info = ModelInfo("input", "output", (1, 28, 28), FASHION_MNIST_CLASSES, declared=True)
    real_run = export_module.run_onnx
    monkeypatch.setattr(export_module, "run_onnx", lambda model, x: real_run(model, x) + 1e-3)
    with pytest.raises(ExportCheckError, match="max abs difference"):
        export_classifier(released, tmp_path / "bad.onnx", info, torch.rand(6, 1, 28, 28))
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize(
    ("task", "last_op"), [("classes", "Softmax"), ("attributes", "Sigmoid")], ids=["classes", "attributes"]
)
def test_softmax_setting_releases_probabilities(tmp_path, fmnist_train_small, fmnist_test_small, task, last_op) -> None:
    config = _tiny_config(objective="vicious", output="softmax", task=task, arch="mlp", train_limit=800, test_limit=100)
    report = train_and_export(config, tmp_path, fmnist_train_small, fmnist_test_small)
    model = load_proto(tmp_path / "classifier.onnx")
    assert model.graph.node[-1].op_type == last_op
    info = ModelInfo.from_model(model)
    assert info.output_kind == "probabilities"
    assert info.task_type == ("multiclass" if task == "classes" else "multilabel")
    outputs = run_onnx(tmp_path / "classifier.onnx", fmnist_test_small.x[:50])
    assert outputs.min() >= 0.0 and outputs.max() <= 1.0
    if task == "classes":
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)
    reconstructions = run_onnx(tmp_path / "decoder.onnx", outputs)  # the decoder reads the probabilities
    assert reconstructions.shape == (50, 1, 28, 28)
    assert report.output == "softmax" and np.isfinite(report.psnr)


# --- training runs --------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(tmp_path, fmnist_train_small, fmnist_test_small) -> None:
    images = fmnist_test_small.x[:20]

    def run(seed: int, folder: str) -> tuple[np.ndarray, np.ndarray]:
        config = _tiny_config(objective="vicious", arch="cnn", train_limit=600, test_limit=50, seed=seed)
        train_and_export(config, tmp_path / folder, fmnist_train_small, fmnist_test_small)
        outputs = run_onnx(tmp_path / folder / "classifier.onnx", images)
        return outputs, run_onnx(tmp_path / folder / "decoder.onnx", outputs)

    first, second, other_seed = run(0, "a"), run(0, "b"), run(1, "c")
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], other_seed[0])


def test_attribute_task_trains_and_reports_via_cli(tmp_path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "train", "--task", "attributes", "--objective", "vicious", "--arch", "mlp", "--epochs", "1",
            "--batch-size", "32", "--lr", "2e-3", "--train-limit", "1000", "--test-limit", "200",
            "--decoder-epochs", "1", "--threads", "1", "--no-progress", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy_kind"] == "mean_attribute_accuracy"
    assert summary["accuracy"] > 0.85  # predicting "absent" everywhere scores about 0.71
    info = ModelInfo.from_model(load_proto(tmp_path / "classifier.onnx"))
    assert info.task_type == "multilabel" and info.class_names == tuple(FASHION_ATTRIBUTES)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "attributes" and set(report["baseline"]) == {"psnr", "ssim", "risk"}


def test_finish_ce_epochs_refit_the_decoder(tmp_path, fmnist_train_small, fmnist_test_small) -> None:
    config = _tiny_config(objective="vicious", arch="mlp", train_limit=600, test_limit=100, finish_ce_epochs=1)
    report = train_and_export(config, tmp_path, fmnist_train_small, fmnist_test_small)
    assert report.decoder_kind == "refit" and report.finish_ce_epochs == 1
    assert len(report.finish_history) == 1 and len(report.decoder_history) == 1
    assert report.finish_history[0]["task_loss"] > 0


def test_model_info_for_declares_the_task(fmnist_train_small) -> None:
    info = model_info_for(TrainConfig(output="softmax"), fmnist_train_small)
    assert info.to_metadata_props()["output_kind"] == "probabilities"
    assert info.input_shape == (1, 28, 28)


# --- bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "exit_code", "message"),
    [
        (["--epochs", "-1"], 2, "'--epochs': -1 is not in the range"),
        (["--arch", "resnet"], 2, "'resnet' is not one of"),
        (["--beta1", "0", "--beta2", "0"], 2, "nothing to train"),
        (["--objective", "honest", "--beta2", "1"], 2, "honest training uses beta2 = 0"),
        (["--lr", "0"], 2, "'--lr'"),
        (["--arch", "wrn", "--wrn-depth", "12"], 1, "6n+4"),
        (["--class-names", "shirt,shoe", "--train-limit", "100"], 1, "expected labels"),
    ],
    ids=[
        "negative-epochs",
        "unknown-arch",
        "both-betas-zero",
        "honest-with-beta2",
        "zero-lr",
        "bad-wrn-depth",
        "too-few-class-names",
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, arguments: list[str], exit_code: int, message: str) -> None:
    result = CliRunner().invoke(main, ["train", *arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert not (tmp_path / "out" / "classifier.onnx").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cli_names_the_debian_package_when_data_is_missing(tmp_path, how: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = ["train", "--epochs", "1", "--out", str(tmp_path / "out")]
    env = {}
    if how == "flag":
        arguments += ["--data", str(empty)]
    else:
        env["EDGEGUARD_FASHION_MNIST_DIR"] = str(empty)
    result = CliRunner().invoke(main, arguments, env=env)
    assert result.exit_code == 1
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert str(empty) in result.output


def test_api_raises_data_not_found(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train_and_export(TrainConfig(data=str(tmp_path), epochs=1), tmp_path / "out")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": -1}, "epochs"),
        ({"arch": "resnet"}, "architecture|arch"),
        ({"beta1": 0.0, "beta2": 0.0}, "nothing to train"),
        ({"objective": "sneaky"}, "objective"),
        ({"lr": float("nan")}, "lr"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
    ],
    ids=["negative-epochs", "unknown-arch", "both-betas-zero", "unknown-objective", "nan-lr", "bad-validation"],
)
def test_config_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        TrainConfig(**changes)
    assert isinstance(caught.value, EdgeguardError) and isinstance(caught.value, ValueError)


def test_honest_config_forces_beta2_to_zero() -> None:
    config = TrainConfig(objective="honest", beta2=3.0)
    assert config.beta2 == 0.0 and not config.vicious
    assert TrainConfig.from_dict(config.to_dict()) == config


# --- the benchmarks' model zoo --------------------------------------------------------------


def test_zoo_trains_once_per_spec_and_ignores_runtime_knobs(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks.zoo import build, spec_key

    spec = {"objective": "vicious", "arch": "mlp", "epochs": 1, "batch_size": 32, "train_limit": 300, "test_limit": 50}
    assert spec_key(spec) == spec_key({**spec, "threads": 1, "progress": True})
    assert spec_key(spec) != spec_key({**spec, "beta2": 1.0})
    stale = tmp_path / "vicious-logits-mlp-000000000000.tmp-999999999"  # no such process
    stale.mkdir()
    folder = build({**spec, "threads": 1}, root=tmp_path)
    stamp = (folder / "classifier.onnx").stat().st_mtime_ns
    assert build(spec, root=tmp_path) == folder
    assert (folder / "classifier.onnx").stat().st_mtime_ns == stamp  # cached, not retrained
    assert load_report(folder).paths["classifier"] == str(folder / "classifier.onnx")
    assert json.loads((folder / "spec.json").read_text())["train_limit"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, stale.name])  # ours is gone
    stale.rename(folder.with_name(folder.name + ".tmp-999999999"))
    build(spec, root=tmp_path)  # cached, nothing to do
    assert (folder.with_name(folder.name + ".tmp-999999999")).exists()
    (folder / "report.json").unlink()  # force a rebuild: leftovers of dead builds are removed
    assert build({**spec, "threads": 1}, root=tmp_path) == folder
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert load_report(folder).config["train_limit"] == 300
