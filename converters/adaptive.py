"""Losses of attackers who know the vet: distillation towards an honest teacher, and a penalty on the audit.

- :func:`mimic_loss`: keep the released outputs close to an honest teacher's (KL from the
  teacher's distribution, or squared error of row-centred log-probabilities, the space
  edgeguard's leakage audit works in), so that a residual code is all that differs.
- :func:`audit_gain_db`: a differentiable stand-in for edgeguard's black-box leakage audit
  (edgeguard/vetting/leakage.py): on one half of the batch, fit a closed-form decoder from
  the standardised row-centred log-probabilities to the residual of each image from the
  mean image of its predicted class (kernel ridge with an RBF kernel of width 1/K, or
  linear ridge); on the other half, measure its PSNR gain (dB) over that label-only
  baseline. The attacker adds ``weight * max(gain, 0)`` to its loss. Row-centred
  log-probabilities make the statistic invariant to temperature-free shifts, as the audit is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as functional

from edgeguard.errors import DataError, InvalidInputError

__all__ = [
    "MIMIC_LOSSES",
    "AUDIT_DECODERS",
    "centred_log_probabilities",
    "mimic_loss",
    "audit_gain_db",
    "teacher_log_probabilities",
]

MIMIC_LOSSES = ("kl", "log-mse")
AUDIT_DECODERS = ("rbf", "linear")
_FLOOR = 1.1754943508222875e-38


def centred_log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax minus its row mean (the audit's "log" features of multiclass outputs)."""
    logs = torch.log_softmax(logits, dim=1)
    return logs - logs.mean(dim=1, keepdim=True)


def mimic_loss(student_logits: torch.Tensor, teacher_logs: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Distance of the student's released distribution from the teacher's (``teacher_logs``: log-probabilities)."""
    if kind == "kl":
        return functional.kl_div(
            torch.log_softmax(student_logits, dim=1), teacher_logs, log_target=True, reduction="batchmean"
        )
    if kind == "log-mse":
        teacher = teacher_logs - teacher_logs.mean(dim=1, keepdim=True)
        return ((centred_log_probabilities(student_logits) - teacher) ** 2).mean()
    raise InvalidInputError(f"expected a mimic loss in {list(MIMIC_LOSSES)}, got {kind!r}")


def audit_gain_db(
    logits: torch.Tensor, images: torch.Tensor, decoder: str = "rbf", alpha: float = 1.0, gamma: float = 1.0
) -> torch.Tensor:
    """PSNR gain (dB) of a closed-form decoder over the label-only baseline, fitted on half the batch.

    Differentiable in ``logits`` (the predicted classes and the images are constants).
    """
    count = len(logits)
    if count < 8:
        return logits.sum() * 0.0
    half = count // 2
    features = centred_log_probabilities(logits)
    fit, query = features[:half], features[half:]
    mean, std = fit.mean(dim=0, keepdim=True), fit.std(dim=0, keepdim=True).clamp(min=1e-6)
    fit, query = (fit - mean) / std, (query - mean) / std
    flat = images.reshape(count, -1)
    fit_images, query_images = flat[:half], flat[half:]
    num_classes = logits.shape[1]
    with torch.no_grad():
        fit_onehot = functional.one_hot(logits[:half].argmax(dim=1), num_classes).to(flat.dtype)
        query_onehot = functional.one_hot(logits[half:].argmax(dim=1), num_classes).to(flat.dtype)
        counts = fit_onehot.sum(dim=0)
        overall = fit_images.mean(dim=0, keepdim=True)
        class_means = (fit_onehot.T @ fit_images) / counts.clamp(min=1.0)[:, None]
        class_means = torch.where(counts[:, None] > 0, class_means, overall)
        fit_baseline, query_baseline = fit_onehot @ class_means, query_onehot @ class_means
    residual = fit_images - fit_baseline
    if decoder == "rbf":
        width = gamma / num_classes

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
            return torch.exp(-width * squared.clamp(min=0.0))

        gram = kernel(fit, fit) + alpha * torch.eye(half, dtype=fit.dtype, device=fit.device)
        weights = torch.linalg.solve(gram, residual)
        decoded = query_baseline + kernel(query, fit) @ weights
    elif decoder == "linear":
        design = torch.cat([fit, torch.ones_like(fit[:, :1])], dim=1)
        regulariser = alpha * torch.eye(design.shape[1], dtype=fit.dtype, device=fit.device)
        weights = torch.linalg.solve(design.T @ design + regulariser, design.T @ residual)
        decoded = query_baseline + torch.cat([query, torch.ones_like(query[:, :1])], dim=1) @ weights
    else:
        raise InvalidInputError(f"expected an audit decoder in {list(AUDIT_DECODERS)}, got {decoder!r}")
    mse_decoder = ((decoded.clamp(0.0, 1.0) - query_images) ** 2).mean()
    mse_label = ((query_baseline - query_images) ** 2).mean()
    return 10.0 * torch.log10(mse_label / mse_decoder.clamp(min=1e-12))


def teacher_log_probabilities(path: str | os.PathLike, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The honest teacher's log-probabilities on ``images`` (its ONNX run by onnxruntime, its output kind from
    its metadata: probabilities are logged, logits log-softmaxed)."""
    import onnx
    import onnxruntime

    from edgeguard.model import ModelInfo

    path = Path(path)
    if not path.is_file():
        raise DataError(f"expected a teacher ONNX file at {path}, but there is none; pass an honest classifier.onnx")
    info = ModelInfo.from_model(onnx.load(str(path)))
    if info.task_type != "multiclass":
        raise InvalidInputError(f"expected a multiclass teacher for --mimic, got a {info.task_type} one ({path})")
    if tuple(info.input_shape) != tuple(images.shape[1:]):
        raise InvalidInputError(
            f"expected a teacher taking images of shape {tuple(images.shape[1:])}, got {tuple(info.input_shape)} "
            f"({path}); train the teacher on the same data and --image-size"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = np.concatenate(
        [
            session.run(None, {name: np.ascontiguousarray(images[i : i + batch])})[0]
            for i in range(0, len(images), batch)
        ]
    ).astype(np.float64)
    if info.output_kind == "probabilities":
        logs = np.log(np.clip(outputs, _FLOOR, None))
    else:
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        logs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logs = logs - np.log(np.exp(logs).sum(axis=1, keepdims=True))  # renormalise (probabilities sum to ~1)
    return logs.astype(np.float32)
