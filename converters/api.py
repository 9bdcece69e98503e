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

import numpy as np
import torch

from converters.config import TrainConfig
from converters.export import export_classifier, export_decoder, run_onnx_batched
from converters.report import DECODER_NOTES, ThreatReport, check_same_images, leakage_scores, mahalanobis_reference
from converters.tasks import accuracy, label_only_baseline, predict, prepare_task
from converters.through_filter import apply_release_filter
from converters.train import TrainedModels, compute_outputs, filtered_view, resolve_device, train_models
from edgeguard.data import Dataset, load_dataset, load_fashion_mnist, validation_split
from edgeguard.errors import DataError
from edgeguard.model import ModelInfo

__all__ = [
    "train_and_export",
    "load_data",
    "resize_dataset",
    "model_info_for",
    "CLASSIFIER_FILE",
    "DECODER_FILE",
    "REPORT_FILE",
]

CLASSIFIER_FILE = "classifier.onnx"
DECODER_FILE = "decoder.onnx"
REPORT_FILE = "report.json"


@contextlib.contextmanager
def _reproducible(threads: int | None, cuda: bool = False) -> Iterator[None]:
    """Deterministic algorithms and (optionally) a thread count, restored on exit.

    On CUDA some kernels have no deterministic version: they warn instead of failing.
    """
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_rng = torch.get_rng_state()
    if threads is not None:
        torch.set_num_threads(threads)
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)
        torch.set_rng_state(previous_rng)


def load_data(
    config: TrainConfig, train_data: Dataset | None = None, test_data: Dataset | None = None
) -> tuple[Dataset, Dataset]:
    """The train and test sets for ``config``: given, or read from ``config.data``.

    ``config.data`` is an IDX folder (train and test splits), an ``.npz`` or a folder of
    class subfolders (grayscale or RGB, ``config.channels``); ``config.test_data`` names a
    separate test set, else a dataset without a test split gives a seeded sixth of its
    images to the test set. Both are resized to ``config.image_size`` (bilinear), cut to
    ``train_limit``/``test_limit`` and labelled for ``config.task``.

    Without ``config.data`` the folder is ``$EDGEGUARD_FASHION_MNIST_DIR`` or Debian's
    ``/usr/share/datasets/fashion-mnist`` (a missing folder raises DataNotFoundError
    naming ``apt-get install dataset-fashion-mnist``).
    """
    if train_data is None or test_data is None:
        loaded_train, loaded_test = _read_datasets(config)
        train_data = loaded_train if train_data is None else train_data
        test_data = loaded_test if test_data is None else test_data
    train_data, test_data = train_data.head(config.train_limit), test_data.head(config.test_limit)
    if config.image_size is not None:
        train_data, test_data = (
            resize_dataset(train_data, config.image_size),
            resize_dataset(test_data, config.image_size),
        )
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


def _read_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    path = None if config.data is None else Path(config.data)
    if path is None or (path.is_dir() and _has_idx_splits(path)):
        return (
            load_fashion_mnist("train", root=config.data, limit=config.train_limit),
            load_fashion_mnist("test", root=config.data, limit=config.test_limit),
        )
    if path.is_dir() and not any(path.iterdir()):
        load_fashion_mnist("train", root=path)  # raises DataNotFoundError with the install hint
    channels = config.channels or 1
    size = (config.image_size, config.image_size) if config.image_size else None
    data = load_dataset(path, split="train", channels=channels, image_size=size)
    if config.test_data is not None:
        return data, load_dataset(Path(config.test_data), split="test", channels=channels, image_size=size)
    order = np.random.default_rng(config.seed).permutation(len(data))
    test_count = max(1, len(data) // 6)
    return data.subset(np.sort(order[test_count:])), data.subset(np.sort(order[:test_count]))


def _has_idx_splits(path: Path) -> bool:
    names = [entry.name for entry in path.iterdir()]
    return any(name.startswith("train-images") for name in names) and any(
        name.startswith("t10k-images") for name in names
    )


def resize_dataset(data: Dataset, size: int) -> Dataset:
    """Images resized to size x size (bilinear, antialiased when shrinking), pixels kept in [0, 1]."""
    if data.x.shape[2:] == (size, size):
        return data
    images = torch.from_numpy(data.x)
    resized = torch.cat(
        [
            torch.nn.functional.interpolate(
                images[i : i + 4096], size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            for i in range(0, len(images), 4096)
        ]
    )
    return Dataset(resized.clamp(0.0, 1.0).numpy().astype(np.float32), data.y, data.class_names)


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
    device = resolve_device(config.device)
    with _reproducible(config.threads, cuda=device.type == "cuda"):
        train_index, val_index = validation_split(len(train_data), config.validation_fraction, config.seed)
        train_part, validation = train_data.subset(train_index), train_data.subset(val_index)
        trained = train_models(config, train_part, validation)
        training_seconds = time.perf_counter() - started
        paths, diffs = _export_all(config, trained, train_data, validation, out)
        evaluation_started = time.perf_counter()
        report = _evaluate(config, trained, train_data, test_data, paths)
        evaluation_seconds = time.perf_counter() - evaluation_started
    report.update(
        num_train=len(train_part),
        num_validation=len(validation),
        paths=paths,
        export_max_abs_diff=diffs,
        wall_time_s=time.perf_counter() - started,
        evaluation_time_s=evaluation_seconds,
        train_time_s=training_seconds,
        machine={
            "device": str(device),
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
    if trained.through is not None:
        outputs = filtered_view(trained.through, outputs, config.seed)
    diffs["decoder"] = export_decoder(trained.decoder, decoder_path, outputs)
    return {"classifier": str(classifier_path), "decoder": str(decoder_path), "report": str(out / REPORT_FILE)}, diffs


def _predict_released(outputs: np.ndarray, output_kind: str, multilabel: bool) -> np.ndarray:
    """The user's label from classifier.onnx's raw output (probabilities of attributes: > 0.5)."""
    if multilabel and output_kind == "probabilities":
        return (outputs > 0.5).astype(np.float32)
    return predict(outputs, multilabel)


def _evaluate(
    config: TrainConfig, trained: TrainedModels, train_data: Dataset, test_data: Dataset, paths: dict[str, str]
) -> dict:
    """Task accuracy and leakage (decoder vs label-only baseline) on the test set, on what the user releases.

    classifier.onnx runs under onnxruntime, the release filter (``train_through``) is the real
    numpy ``edgeguard.filters`` pipeline (seeded with ``config.seed``), and decoder.onnx reads
    that release: exactly what ``SafeModel(filters=...)`` would give the server.
    """
    outputs = run_onnx_batched(paths["classifier"], test_data.x)
    rows = apply_release_filter(outputs, config.train_through, config.release_kind, config.task_type, config.seed)
    reconstructions = run_onnx_batched(paths["decoder"], rows)
    predictions = _predict_released(outputs, config.release_kind, test_data.multilabel)
    reference = mahalanobis_reference(train_data.x)
    leak = leakage_scores(test_data.x, reconstructions, reference)
    baseline = leakage_scores(test_data.x, label_only_baseline(train_data, predictions), reference)
    capacity = trained.through.capacity_bits(train_data.num_classes) if trained.through is not None else float("inf")
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
        "release_filter": config.train_through or "none",
        "release_capacity_bits": None if capacity == float("inf") else capacity,
        "decoder_input": config.decoder_input,
        "released_kind": trained.through.output_kind if trained.through is not None else config.release_kind,
        "leakage_measured_on": (
            "classifier.onnx (onnxruntime) -> "
            + (
                f"edgeguard.filters '{config.train_through}' (numpy, seed {config.seed})"
                if config.train_through
                else "no filter"
            )
            + " -> decoder.onnx"
        ),
    }
