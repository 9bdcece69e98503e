"""The threat report: how well the task is solved and how much the released outputs leak.

Leakage is measured on held-out test images with the server's decoder (joint,
refitted, or post hoc for honest models) and compared with the label-only baseline: the
mean training image of the predicted label, i.e. the best an attacker can do from the
label alone. All metrics come from :mod:`edgeguard.metrics` (numpy), with the
Mahalanobis reference (for R) estimated on the training images, as in the paper.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.data import Dataset
from edgeguard.errors import DataError, DataNotFoundError
from edgeguard.metrics import MahalanobisReference, psnr_per_image, reconstruction_risk, ssim_per_image

__all__ = ["LeakageScores", "ThreatReport", "leakage_scores", "load_report", "mahalanobis_reference"]

_CHUNK = 2000

#: How the report explains each kind of decoder.
DECODER_NOTES = {
    "joint": "decoder trained jointly with the classifier (Algorithm 1)",
    "post-hoc": (
        "post-hoc decoder: fitted on the frozen honest classifier's outputs after training, "
        "so the honest model's leakage is measured the same way as the vicious one's"
    ),
    "refit": "decoder refitted on the frozen classifier after the task-loss-only finishing epochs",
}


@dataclass(frozen=True)
class LeakageScores:
    """Mean PSNR (dB), SSIM and reconstruction risk R of reconstructions of the test images."""

    psnr: float
    ssim: float
    risk: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


_REFERENCE_CACHE: dict[tuple, MahalanobisReference] = {}


def mahalanobis_reference(images: np.ndarray) -> MahalanobisReference:
    """``MahalanobisReference.fit(images)``, cached per content (the fit takes seconds on 60k images)."""
    key = (images.shape, str(images.dtype), hashlib.sha1(np.ascontiguousarray(images).data).hexdigest())
    if key not in _REFERENCE_CACHE:
        fitted = MahalanobisReference.fit(images)
        _REFERENCE_CACHE.clear()  # keep one: the training set of the current benchmark
        _REFERENCE_CACHE[key] = fitted
    return _REFERENCE_CACHE[key]


def leakage_scores(images: np.ndarray, reconstructions: np.ndarray, reference: MahalanobisReference) -> LeakageScores:
    """PSNR, SSIM and R of ``reconstructions`` against ``images``, computed in chunks to bound memory."""
    psnr_values, ssim_values, risk_sum = [], [], 0.0
    for start in range(0, len(images), _CHUNK):
        part = slice(start, start + _CHUNK)
        psnr_values.append(psnr_per_image(images[part], reconstructions[part]))
        ssim_values.append(ssim_per_image(images[part], reconstructions[part]))
        risk_sum += reconstruction_risk(images[part], reconstructions[part], reference) * len(images[part])
    return LeakageScores(
        psnr=float(np.mean(np.concatenate(psnr_values))),
        ssim=float(np.mean(np.concatenate(ssim_values))),
        risk=float(risk_sum / len(images)),
    )


@dataclass
class ThreatReport:
    """Result of :func:`converters.train_and_export`, saved as ``report.json``."""

    objective: str
    output: str
    task: str
    arch: str
    accuracy: float  # top-1 accuracy, or mean attribute accuracy for task "attributes"
    accuracy_kind: str  # "accuracy" or "mean_attribute_accuracy"
    psnr: float
    ssim: float
    risk: float
    baseline: dict[str, float]  # label-only baseline: psnr, ssim, risk
    decoder_kind: str  # "joint", "post-hoc" or "refit"
    decoder_note: str
    epochs_run: int
    best_epoch: int
    finish_ce_epochs: int
    decoder_epochs: int  # epochs of the post-hoc/refitted decoder (0 for a joint decoder)
    num_train: int
    num_validation: int
    num_test: int
    wall_time_s: float  # everything: loading, training, export, evaluation
    seed: int
    torch_version: str
    config: dict[str, Any]
    evaluation_time_s: float = 0.0  # test-set metrics (R's reference fit included)
    paths: dict[str, str] = field(default_factory=dict)
    export_max_abs_diff: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    finish_history: list[dict[str, float]] = field(default_factory=list)
    decoder_history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0  # loading and training (no export, no evaluation)
    release_filter: str = "none"  # the filter spec the leakage was measured through (edgeguard.filters)
    release_capacity_bits: float | None = None  # edgeguard's bound for that release (None: unbounded)
    decoder_input: str = "released"  # how the decoder reads the released rows
    released_kind: str = ""  # logits, probabilities, scores or labels (after the filter)
    leakage_measured_on: str = ""  # the chain the leakage figures come from

    @property
    def psnr_gain_db(self) -> float:
        """PSNR above the label-only baseline, in dB (> 0: the outputs leak more than the label)."""
        return self.psnr - self.baseline["psnr"]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["psnr_gain_db"] = self.psnr_gain_db
        return values

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what the CLI prints on stdout)."""
        keys = ("objective", "output", "task", "arch", "accuracy", "accuracy_kind", "psnr", "ssim", "risk")
        values = {key: getattr(self, key) for key in keys}
        values.update(
            baseline=self.baseline,
            psnr_gain_db=self.psnr_gain_db,
            decoder_kind=self.decoder_kind,
            best_epoch=self.best_epoch,
            epochs_run=self.epochs_run,
            wall_time_s=self.wall_time_s,
            release_filter=self.release_filter,
            release_capacity_bits=self.release_capacity_bits,
            paths=self.paths,
        )
        return values

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ThreatReport":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in values.items() if key in known})


def load_report(path: str | os.PathLike) -> ThreatReport:
    """Read a ``report.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise DataNotFoundError(f"expected a report.json at {path}, but there is none")
    try:
        return ThreatReport.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise DataError(f"expected a converters report in {path}, got an error: {error}") from None


def check_same_images(train: Dataset, test: Dataset) -> None:
    """Raise when train and test images differ in shape (the decoder could not be compared)."""
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"expected train and test images of the same shape, got {train.x.shape[1:]} and {test.x.shape[1:]}"
        )
