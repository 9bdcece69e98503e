"""``train_and_export``: train, export to ONNX, measure leakage, write ``report.json``.

Output folder layout::

    out_dir/classifier.onnx   what the user receives (pixels in [0, 1] -> logits or probabilities)
    out_dir/decoder.onnx      the server's secret decoder (classifier output -> images)
    out_dir/report.json       ThreatReport.to_dict()
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from converters.config import TrainConfig
from converters.export import export_classifier, export_decoder
from converters.report import DECODER_NOTES, ThreatReport, check_same_images, leakage_scores, mahalanobis_reference
from converters.tasks import accuracy, label_only_baseline, predict, prepare_task
from converters.train import TrainedModels, compute_outputs, train_models
from edgeguard.data import Dataset, load_fashion_mnist, validation_split
from edgeguard.errors import DataError
from edgeguard.model_info import ModelInfo

__all__ = ["train_and_export", "load_data", "model_info_for", "CLASSIFIER_FILE", "DECODER_FILE", "REPORT_FILE"]

CLASSIFIER_FILE = "classifier.onnx"
DECODER_FILE = "decoder.onnx"
REPORT_FILE = "report.json"


@contextlib.contextmanager
def _reproducible(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and (optionally) a thread count, restored on exit."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_rng = torch.get_rng_state()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)
        torch.set_rng_state(previous_rng)


def load_data(
    config: TrainConfig, train_data: Dataset | None = None, test_data: Dataset | None = None
) -> tuple[Dataset, Dataset]:
    """The train and test sets for ``config``: given, or read from ``config.data`` (an IDX folder).

    Both are cut to ``train_limit``/``test_limit`` and labelled for ``config.task``.

    Without ``config.data`` the folder is ``$EDGEGUARD_FASHION_MNIST_DIR`` or Debian's
    ``/usr/share/datasets/fashion-mnist`` (a missing folder raises DataNotFoundError
    naming ``apt-get install dataset-fashion-mnist``).
    """
    if train_data is None:
        train_data = load_fashion_mnist("train", root=config.data, limit=config.train_limit)
    if test_data is None:
        test_data = load_fashion_mnist("test", root=config.data, limit=config.test_limit)
    train_data, test_data = train_data.head(config.train_limit), test_data.head(config.test_limit)
    if config.class_names is not None:
        train_data = Dataset(train_data.x, train_data.y, config.class_names)
        test_data = Dataset(test_data.x, test_data.y, config.class_names)
    for data in (train_data, test_data):
        if not data.multilabel and data.class_names and len(data) and int(data.y.max()) >= len(data.class_names):
            raise DataError(
                f"expected labels below {len(data.class_names)} (one per class name), got label {int(data.y.max())}; "
                "pass one name per class"
            )
    train_data, test_data = prepare_task(train_data, config.task), prepare_task(test_data, config.task)
    check_same_images(train_data, test_data)
    if len(train_data) < 20:
        raise DataError(f"expected at least 20 training images, got {len(train_data)}; raise --train-limit")
    if min(train_data.x.shape[2:]) < 11 and config.alpha_ssim > 0:
        raise DataError(f"expected images of at least 11x11 pixels for SSIM, got {train_data.x.shape[2:]}")
    if not train_data.class_names:
        names = tuple(str(i) for i in range(train_data.num_classes))
        train_data = Dataset(train_data.x, train_data.y, names)
        test_data = Dataset(test_data.x, test_data.y, names)
    return train_data, test_data


def model_info_for(config: TrainConfig, data: Dataset) -> ModelInfo:
    """The metadata a provider publishes with the classifier (never the objective)."""
    return ModelInfo(
        input_name="input",
        output_name="output",
        input_shape=tuple(int(d) for d in data.x.shape[1:]),
        class_names=tuple(data.class_names),
        task_type="multilabel" if data.multilabel else "multiclass",
        pixel_range=(0.0, 1.0),
        output_kind="logits" if config.output == "logits" else "probabilities",
        declared=True,
    )


def _producer(config: TrainConfig) -> dict[str, str]:
    return {
        "model_name": config.model_name,
        "model_version": config.model_version,
        "architecture": config.arch,
        "framework": f"pytorch {torch.__version__.split('+')[0]}",
    }


def train_and_export(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
) -> ThreatReport:
    """Train per ``config``, write ``classifier.onnx``, ``decoder.onnx`` and ``report.json`` to ``out_dir``.

    ``train_data``/``test_data`` override loading from ``config.data`` (limits still
    apply). Validation is a seeded 10% of the training set. Leakage is measured on the
    test set with the decoder, next to the label-only baseline. Deterministic for a given
    seed and thread count.
    """
    started = time.perf_counter()
    train_data, test_data = load_data(config, train_data, test_data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _reproducible(config.threads):
        train_index, val_index = validation_split(len(train_data), config.validation_fraction, config.seed)
        train_part, validation = train_data.subset(train_index), train_data.subset(val_index)
        trained = train_models(config, train_part, validation)
        paths, diffs = _export_all(config, trained, train_data, validation, out)
        evaluation_started = time.perf_counter()
        report = _evaluate(config, trained, train_data, test_data)
        evaluation_seconds = time.perf_counter() - evaluation_started
    report.update(
        num_train=len(train_part),
        num_validation=len(validation),
        paths=paths,
        export_max_abs_diff=diffs,
        wall_time_s=time.perf_counter() - started,
        evaluation_time_s=evaluation_seconds,
        machine={
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "threads": config.threads or torch.get_num_threads(),
        },
    )
    result = ThreatReport(**report)
    result.save(out / REPORT_FILE)
    return result


def _export_all(
    config: TrainConfig, trained: TrainedModels, train_data: Dataset, validation: Dataset, out: Path
) -> tuple[dict[str, str], dict[str, float]]:
    sample = torch.from_numpy(validation.x[:16])
    if len(sample) < 5:
        sample = torch.from_numpy(train_data.x[:16])
    info = model_info_for(config, train_data)
    classifier_path, decoder_path = out / CLASSIFIER_FILE, out / DECODER_FILE
    diffs = {"classifier": export_classifier(trained.released, classifier_path, info, sample, _producer(config))}
    _, outputs = compute_outputs(trained.released, sample)
    diffs["decoder"] = export_decoder(trained.decoder, decoder_path, outputs)
    return {"classifier": str(classifier_path), "decoder": str(decoder_path), "report": str(out / REPORT_FILE)}, diffs


def _evaluate(config: TrainConfig, trained: TrainedModels, train_data: Dataset, test_data: Dataset) -> dict:
    """Task accuracy and leakage (decoder vs label-only baseline) on the test set."""
    x_test = torch.from_numpy(test_data.x)
    scores, outputs = compute_outputs(trained.released, x_test)
    with torch.no_grad():
        trained.decoder.eval()
        reconstructions = torch.cat([trained.decoder(outputs[i : i + 1000]) for i in range(0, len(outputs), 1000)])
    predictions = predict(scores.numpy(), test_data.multilabel)
    reference = mahalanobis_reference(train_data.x)
    leak = leakage_scores(test_data.x, reconstructions.numpy(), reference)
    baseline = leakage_scores(test_data.x, label_only_baseline(train_data, predictions), reference)
    return {
        "objective": config.objective,
        "output": config.output,
        "task": config.task,
        "arch": config.arch,
        "accuracy": accuracy(predictions, test_data.y),
        "accuracy_kind": "mean_attribute_accuracy" if test_data.multilabel else "accuracy",
        "psnr": leak.psnr,
        "ssim": leak.ssim,
        "risk": leak.risk,
        "baseline": baseline.to_dict(),
        "decoder_kind": trained.decoder_kind,
        "decoder_note": DECODER_NOTES[trained.decoder_kind],
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "finish_ce_epochs": config.finish_ce_epochs,
        "decoder_epochs": config.post_training_decoder_epochs if trained.decoder_kind != "joint" else 0,
        "num_test": len(test_data),
        "seed": config.seed,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "history": trained.history,
        "finish_history": trained.finish_history,
        "decoder_history": trained.decoder_history,
    }
