"""Black-box leakage audit: how much more than the label do a model's outputs reveal?

The audit needs only the outputs the user would share. On one part of the probe set it
fits a simple client-side decoder from outputs to pixels (kernel ridge regression with an
RBF kernel, k nearest neighbours via ``scipy.spatial.cKDTree``, or linear ridge, on
standardised outputs; numpy/scipy only); on the other part it compares that decoder's
reconstructions with the label-only baseline (the mean probe image of the predicted
class). An honest model's outputs say little beyond the class and how similar the image
is to the other classes, so the decoder beats the baseline by a little; a vicious model's
outputs were trained to carry the image, so it beats it by more. The score is the gain in
PSNR (dB) over the baseline; ``mean_entropy`` of the outputs is returned too because less
confident honest models reveal more (the calibrated verdict discounts the gain by it),
and SSIM and the paper's reconstruction risk R of both decoders are reported.

Output space: probabilities are mapped back to log space (centred log-ratio, the softmax's
inverse up to a constant), logits are centred the same way, so the logits and softmax
settings of one model give the same features (up to float precision); each feature is
then standardised on the fitting part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import DataError

__all__ = [
    "LeakageSettings",
    "output_features",
    "leakage_audit",
    "knn_reconstruct",
    "kernel_ridge_reconstruct",
    "ridge_reconstruct",
    "label_only_reconstruct",
    "mean_entropy",
]

#: Probabilities below this are clamped before taking logs (smallest normal float32).
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)


DECODERS = ("knn", "krr", "ridge")
FEATURES = ("log", "probabilities", "both")


@dataclass(frozen=True)
class LeakageSettings:
    """Knobs of the leakage audit (:func:`edgeguard.vetting.vet` starts from the calibrated ones in
    ``thresholds.json``, chosen by ``benchmarks/detection.py``; these are fallbacks).

    ``decoder``: "knn" (mean of the k nearest fitting images), "krr" (kernel ridge
    regression with an RBF kernel of width ``kernel_gamma / K`` on the standardised
    features, ridge ``ridge_alpha``) or "ridge" (linear). ``features``: "log" (centred
    log-probabilities), "probabilities" (softmax / sigmoid values) or "both".
    """

    fit_samples: int = 2000  # probe samples the client-side decoder is fitted on
    eval_samples: int = 1000  # probe samples it is scored on
    decoder: str = "knn"
    neighbours: int = 10  # k of the k-NN decoder
    kernel_gamma: float = 1.0  # RBF width of the kernel ridge decoder, per feature
    ridge_alpha: float = 1.0
    features: str = "log"
    standardise: bool = True

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"expected decoder in {DECODERS}, got {self.decoder!r}")
        if self.features not in FEATURES:
            raise ValueError(f"expected features in {FEATURES}, got {self.features!r}")
        if self.fit_samples < 2 or self.eval_samples < 1 or self.neighbours < 1:
            raise ValueError(
                f"expected fit_samples >= 2, eval_samples >= 1, neighbours >= 1, got "
                f"{self.fit_samples}, {self.eval_samples}, {self.neighbours}"
            )
        if not (self.kernel_gamma > 0 and self.ridge_alpha > 0):
            raise ValueError(
                f"expected kernel_gamma > 0 and ridge_alpha > 0, got {self.kernel_gamma} and {self.ridge_alpha}"
            )


def output_features(
    outputs: np.ndarray, output_kind: str = "logits", task_type: str = "multiclass", features: str = "log"
) -> np.ndarray:
    """Map raw model outputs (N, K) to the audit's feature space (float64).

    ``features="log"``: multiclass outputs become centred log-probabilities (log-softmax
    of logits, log of probabilities), so both output kinds land in the same space;
    multilabel outputs become per-attribute logits. ``"probabilities"``: softmax (or
    sigmoid) values. ``"both"``: the two side by side.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2:
        raise DataError(f"expected model outputs of shape (N, K), got {outputs.shape}")
    if not np.all(np.isfinite(outputs)):
        raise DataError("expected finite model outputs, got NaN or inf; the model is broken for these inputs")
    if task_type == "multilabel":
        if output_kind == "probabilities":
            p = np.clip(outputs, PROBABILITY_FLOOR, 1.0 - 1e-7)
            logs = np.log(p) - np.log1p(-p)
        else:
            logs = outputs
        probabilities = 1.0 / (1.0 + np.exp(-logs))
    else:
        if output_kind == "probabilities":
            logs = np.log(np.clip(outputs, PROBABILITY_FLOOR, None))
            logs = logs - logs.mean(axis=1, keepdims=True)
        else:
            shifted = outputs - outputs.max(axis=1, keepdims=True)
            logs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            logs = logs - logs.mean(axis=1, keepdims=True)
        probabilities = np.exp(logs - logs.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    if features == "log":
        return logs
    if features == "probabilities":
        return probabilities
    if features == "both":
        return np.hstack([logs, probabilities])
    raise ValueError(f"expected features in {FEATURES}, got {features!r}")


def knn_reconstruct(
    fit_features: np.ndarray, fit_images: np.ndarray, query_features: np.ndarray, neighbours: int = 10
) -> np.ndarray:
    """Mean image of the ``neighbours`` nearest fitting samples in feature space."""
    from scipy.spatial import cKDTree

    k = min(neighbours, len(fit_features))
    _, index = cKDTree(fit_features).query(query_features, k=k)
    index = np.asarray(index).reshape(len(query_features), k)
    return fit_images[index].mean(axis=1)


def kernel_ridge_reconstruct(
    fit_features: np.ndarray,
    fit_images: np.ndarray,
    query_features: np.ndarray,
    gamma: float,
    alpha: float = 1.0,
) -> np.ndarray:
    """Kernel ridge regression (RBF kernel ``exp(-gamma |a - b|^2)``) from features to pixels.

    Solved in the dual with the query kernel as right-hand side, so memory and time do not
    grow with the image size. The mean fitting image is the intercept; clipped to [0, 1].
    """
    from scipy.linalg import cho_factor, cho_solve

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
        return np.exp(-gamma * np.maximum(squared, 0.0))

    gram = kernel(fit_features, fit_features)
    gram[np.diag_indices_from(gram)] += alpha
    weights = cho_solve(cho_factor(gram, lower=True, check_finite=False), kernel(fit_features, query_features))
    flat = fit_images.reshape(len(fit_images), -1)
    mean = flat.mean(axis=0)
    decoded = weights.T @ (flat - mean) + mean
    return np.clip(decoded, 0.0, 1.0).reshape((len(query_features),) + fit_images.shape[1:])


def ridge_reconstruct(
    fit_features: np.ndarray, fit_images: np.ndarray, query_features: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    """Ridge regression from features (plus bias) to pixels, clipped to [0, 1]."""
    from scipy.linalg import solve

    design = np.hstack([fit_features, np.ones((len(fit_features), 1))])
    query = np.hstack([query_features, np.ones((len(query_features), 1))])
    regulariser = alpha * np.eye(design.shape[1])
    regulariser[-1, -1] = 0.0
    weights = solve(design.T @ design + regulariser, design.T @ fit_images.reshape(len(fit_images), -1), assume_a="pos")
    return np.clip(query @ weights, 0.0, 1.0).reshape((len(query_features),) + fit_images.shape[1:])


def _predicted_groups(features: np.ndarray, task_type: str) -> np.ndarray:
    """The label the user shares anyway: argmax, or the attribute pattern for multilabel."""
    if task_type == "multilabel":
        _, groups = np.unique(features > 0, axis=0, return_inverse=True)
        return groups.reshape(-1)
    return features.argmax(axis=1)


def label_only_reconstruct(fit_groups: np.ndarray, fit_images: np.ndarray, query_groups: np.ndarray) -> np.ndarray:
    """The baseline: mean fitting image of the query's predicted class (global mean if unseen)."""
    fallback = fit_images.mean(axis=0)
    means = {group: fit_images[fit_groups == group].mean(axis=0) for group in np.unique(fit_groups)}
    return np.stack([means.get(group, fallback) for group in query_groups])


def mean_entropy(logs: np.ndarray, task_type: str = "multiclass") -> float:
    """Mean entropy (nats) of the predicted distributions, from :func:`output_features` "log" features.

    Multiclass: entropy of the softmax; multilabel: summed binary entropies of the attributes.
    Less confident models reveal more through their outputs even when honest, so the
    detection benchmark can normalise the leakage score by it.
    """
    if task_type == "multilabel":
        p = 1.0 / (1.0 + np.exp(-logs))
        q = np.clip(p, 1e-12, 1.0 - 1e-12)
        return float(np.mean(np.sum(-(q * np.log(q) + (1 - q) * np.log(1 - q)), axis=1)))
    shifted = logs - logs.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(np.mean(-np.sum(np.exp(log_p) * log_p, axis=1)))


def leakage_audit(
    outputs: np.ndarray,
    images: np.ndarray,
    *,
    output_kind: str = "logits",
    task_type: str = "multiclass",
    settings: LeakageSettings | None = None,
    seed: int = 0,
    measures: bool = True,
) -> dict[str, Any]:
    """Score how much better than the label-only baseline a client-side decoder does.

    ``outputs`` (N, K) are the model's raw outputs on ``images`` (N, C, H, W) in [0, 1]
    (the images as the user sees them, before any pixel-range scaling). Returns a dict
    with ``score`` (PSNR gain in dB), the PSNRs, SSIMs and reconstruction risks of both
    decoders, and the sample counts (``measures=False`` skips SSIM and R, which cost most
    of the time).
    """
    from edgeguard.metrics import MahalanobisReference, psnr, reconstruction_risk, ssim

    settings = settings or LeakageSettings()
    images = np.asarray(images, dtype=np.float64)
    n_fit, n_eval = settings.fit_samples, settings.eval_samples
    if len(outputs) != len(images):
        raise DataError(f"expected one output per image, got {len(outputs)} outputs and {len(images)} images")
    if len(images) < n_fit + n_eval:
        raise DataError(
            f"expected at least {n_fit + n_eval} probe samples for the leakage audit "
            f"({n_fit} to fit, {n_eval} to score), got {len(images)}"
        )
    order = np.random.default_rng(seed).permutation(len(images))[: n_fit + n_eval]
    fit, held = order[:n_fit], order[n_fit:]
    features = output_features(outputs, output_kind, task_type, settings.features)
    logs = output_features(outputs, output_kind, task_type, "log")
    groups = _predicted_groups(logs, task_type)
    fit_features, held_features = features[fit], features[held]
    if settings.standardise:
        centre = fit_features.mean(axis=0)
        scale = fit_features.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        fit_features = (fit_features - centre) / scale
        held_features = (held_features - centre) / scale
    fit_images, held_images = images[fit], images[held]
    if settings.decoder == "knn":
        decoded = knn_reconstruct(fit_features, fit_images, held_features, settings.neighbours)
    elif settings.decoder == "krr":
        gamma = settings.kernel_gamma / fit_features.shape[1]
        decoded = kernel_ridge_reconstruct(fit_features, fit_images, held_features, gamma, settings.ridge_alpha)
    else:
        decoded = ridge_reconstruct(fit_features, fit_images, held_features, settings.ridge_alpha)
    baseline = label_only_reconstruct(groups[fit], fit_images, groups[held])
    result: dict[str, Any] = {
        "decoder": settings.decoder,
        "features": settings.features,
        "psnr_decoder_db": psnr(held_images, decoded),
        "psnr_label_only_db": psnr(held_images, baseline),
    }
    result["score"] = result["psnr_decoder_db"] - result["psnr_label_only_db"]
    result["mean_entropy"] = mean_entropy(logs[order], task_type)
    if measures and min(images.shape[-2:]) >= 11:
        result["ssim_decoder"] = ssim(held_images, decoded)
        result["ssim_label_only"] = ssim(held_images, baseline)
    if measures and np.prod(images.shape[1:]) <= 4096:  # the pseudo-inverse of a larger covariance is too slow here
        reference = MahalanobisReference.fit(fit_images)
        result["risk_decoder"] = reconstruction_risk(held_images, decoded, reference)
        result["risk_label_only"] = reconstruction_risk(held_images, baseline, reference)
        result["risk_ratio"] = result["risk_decoder"] / max(result["risk_label_only"], 1e-12)
    result["fit_samples"], result["eval_samples"] = n_fit, n_eval
    return result
