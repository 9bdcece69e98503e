"""Black-box leakage audit: how much more than the label do a model's outputs reveal?

The audit needs only the model (run locally, so queries are free) and unlabelled
in-domain images. It splits the probe images into folds; for each fold it fits a simple
client-side decoder (scikit-learn kernel ridge regression with an RBF kernel, k nearest
neighbours, or linear ridge) from outputs to pixels on augmented copies of the other
folds' images (:mod:`edgeguard.vetting.augment`), and scores it on fresh augmented copies
of the fold's images against the label-only baseline (the mean fitting image of the
image's class: the probe label, so the baseline depends neither on the model's mistakes
nor on any reparametrisation of its outputs; the predicted class when no labels are
given). The decoder itself never sees a label. The score is the gain in PSNR (dB) of the decoder over that baseline,
pooled over every scored image, with a bootstrap interval.

Canonical features (the statistic is exactly invariant to every reparametrisation that
keeps the information: a temperature, per-class constant shifts, logits vs softmax vs
log-softmax): row-centred log-probabilities (log-softmax minus its row mean, which equals
the centred logits for all those forms), then the fitting set's per-feature mean removed
and ONE global scale (the root mean square of the centred fitting features) divided out.
A temperature T multiplies every feature by 1/T and is divided out by the global scale; a
per-class shift is removed by the per-feature mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError, DataError
from edgeguard.metrics.baselines import (
    kernel_ridge_reconstruct,
    knn_reconstruct,
    label_only_reconstruct,
    predicted_groups,
    ridge_reconstruct,
)
from edgeguard.vetting.augment import AugmentSettings
from edgeguard.vetting.decoders import normalise_global
from edgeguard.vetting.targets import AuditTarget, audit_target, per_feature_r2

__all__ = [
    "LeakageSettings",
    "LeakageResult",
    "canonical_features",
    "output_features",
    "leakage_audit",
    "DECODERS",
]

#: Probabilities below this are clamped before taking logs (smallest normal float32).
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)

DECODERS = ("krr", "knn", "ridge")
#: Input values per block of rows augmented, run and reduced at a time in the audit.
_BLOCK_VALUES = 1 << 25
FEATURES = ("log", "probabilities", "both")


@dataclass(frozen=True)
class LeakageSettings:
    """Knobs of the leakage audit (the calibrated ones live in ``thresholds.json``).

    ``decoder``: "krr" (kernel ridge, RBF kernel of width ``kernel_gamma / K`` on the
    canonical features, penalty ``ridge_alpha``), "knn" (mean of the ``neighbours``
    nearest fitting images) or "ridge" (linear). ``features``: "log" (canonical,
    invariant; the default and the only calibrated choice), "probabilities" or "both".
    ``augmentations`` augmented copies of each fitting image are queried (plus the image
    itself); ``max_fit`` caps the decoder's fitting rows per fold (kernel ridge is cubic
    in it). ``fit_samples``/``eval_samples`` optionally cap the real probe images used.
    """

    decoder: str = "krr"
    kernel_gamma: float = 1.0
    ridge_alpha: float = 1.0
    neighbours: int = 10
    features: str = "log"
    folds: int = 2
    augmentations: int = 2
    max_fit: int = 2000
    bootstrap: int = 300
    min_samples: int = 200
    fit_samples: int | None = None
    eval_samples: int | None = None
    standardise: bool = True

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ConfigError(f"expected decoder in {DECODERS}, got {self.decoder!r}")
        if self.features not in FEATURES:
            raise ConfigError(f"expected features in {FEATURES}, got {self.features!r}")
        if self.folds < 2 or self.augmentations < 0 or self.neighbours < 1 or self.max_fit < 10:
            raise ConfigError(
                f"expected folds >= 2, augmentations >= 0, neighbours >= 1, max_fit >= 10, got "
                f"{self.folds}, {self.augmentations}, {self.neighbours}, {self.max_fit}"
            )
        if not (self.kernel_gamma > 0 and self.ridge_alpha > 0):
            raise ConfigError(
                f"expected kernel_gamma > 0 and ridge_alpha > 0, got {self.kernel_gamma} and {self.ridge_alpha}"
            )

    @property
    def samples_needed(self) -> int:
        """Fewest probe images the audit accepts."""
        return self.min_samples


@dataclass
class LeakageResult:
    """Outcome of :func:`leakage_audit` (``gain_db`` and its bootstrap interval are the statistic)."""

    gain_db: float
    ci_low_db: float
    ci_high_db: float
    psnr_decoder_db: float
    psnr_label_only_db: float
    decoder: str
    features: str
    samples: int
    fit_rows: int
    scored_rows: int
    augment_seed: int | None
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    #: per scored image: mean squared error of the decoder and of the baseline (not serialised)
    errors: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "gain_db": self.gain_db,
            "gain_ci95_db": [self.ci_low_db, self.ci_high_db],
            "psnr_decoder_db": self.psnr_decoder_db,
            "psnr_label_only_db": self.psnr_label_only_db,
            "decoder": self.decoder,
            "features": self.features,
            "samples": self.samples,
            "fit_rows": self.fit_rows,
            "scored_rows": self.scored_rows,
            "augment_seed": self.augment_seed,
            "seconds": self.seconds,
        }
        out.update(self.extra)
        return out


def canonical_features(outputs: np.ndarray, output_kind: str = "logits", task_type: str = "multiclass") -> np.ndarray:
    """Row-centred log-probabilities (multiclass) or per-attribute logits (multilabel), float64.

    For multiclass models this equals the centred logits whether the model outputs
    logits, log-probabilities (``output_kind="logits"``: log-softmax is a row shift) or
    probabilities (up to the float precision of the smallest probabilities).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2:
        raise DataError(f"expected model outputs of shape (N, K), got {outputs.shape}")
    if not np.all(np.isfinite(outputs)):
        raise DataError("expected finite model outputs, got NaN or inf; the model is broken for these inputs")
    if task_type == "multilabel":
        if output_kind == "probabilities":
            p = np.clip(outputs, PROBABILITY_FLOOR, 1.0 - 1e-7)
            return np.log(p) - np.log1p(-p)
        return outputs
    logs = np.log(np.clip(outputs, PROBABILITY_FLOOR, None)) if output_kind == "probabilities" else outputs
    return logs - logs.mean(axis=1, keepdims=True)


def output_features(
    outputs: np.ndarray, output_kind: str = "logits", task_type: str = "multiclass", features: str = "log"
) -> np.ndarray:
    """The decoder's input: ``"log"`` canonical features, ``"probabilities"`` or ``"both"``."""
    logs = canonical_features(outputs, output_kind, task_type)
    if features == "log":
        return logs
    if task_type == "multilabel":
        probabilities = 1.0 / (1.0 + np.exp(-logs))
    else:
        probabilities = np.exp(logs - logs.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    if features == "probabilities":
        return probabilities
    if features == "both":
        return np.hstack([logs, probabilities])
    raise ConfigError(f"expected features in {FEATURES}, got {features!r}")


def _gain(decoder_errors: np.ndarray, baseline_errors: np.ndarray) -> float:
    return float(10.0 * np.log10(max(baseline_errors.mean(), 1e-12) / max(decoder_errors.mean(), 1e-12)))


def bootstrap_interval(
    decoder_errors: np.ndarray, baseline_errors: np.ndarray, rng: np.random.Generator, rounds: int = 300
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the pooled PSNR gain (resampling scored images)."""
    if rounds < 1:
        value = _gain(decoder_errors, baseline_errors)
        return value, value
    index = rng.integers(0, len(decoder_errors), size=(rounds, len(decoder_errors)))
    gains = 10.0 * np.log10(
        np.maximum(baseline_errors[index].mean(axis=1), 1e-12) / np.maximum(decoder_errors[index].mean(axis=1), 1e-12)
    )
    low, high = np.percentile(gains, [2.5, 97.5])
    return float(low), float(high)


def paired_excess(
    mine: LeakageResult, references: list[LeakageResult], rng: np.random.Generator, rounds: int = 300
) -> tuple[float, float, float]:
    """Gain of ``mine`` minus the median gain of ``references`` on the same scored images, with a 95% interval."""
    if mine.errors is None or any(r.errors is None for r in references):
        raise DataError("expected leakage results with per-image errors (from leakage_audit on the same images)")
    n = len(mine.errors[0])
    if any(len(r.errors[0]) != n for r in references):
        raise DataError("expected the reference audits to score the same images as the model's audit")

    def excess(index: np.ndarray | slice) -> float:
        own = _gain(mine.errors[0][index], mine.errors[1][index])
        other = float(np.median([_gain(r.errors[0][index], r.errors[1][index]) for r in references]))
        return own - other

    point = excess(slice(None))
    draws = [excess(rng.integers(0, n, size=n)) for _ in range(max(rounds, 1))]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)


def _decode(settings: LeakageSettings, fit_x: np.ndarray, fit_images: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    if settings.decoder == "knn":
        return knn_reconstruct(fit_x, fit_images, query_x, settings.neighbours)
    if settings.decoder == "krr":
        return kernel_ridge_reconstruct(
            fit_x, fit_images, query_x, settings.kernel_gamma / fit_x.shape[1], settings.ridge_alpha
        )
    return ridge_reconstruct(fit_x, fit_images, query_x, settings.ridge_alpha)


def leakage_audit(
    images: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    *,
    output_kind: str = "logits",
    task_type: str = "multiclass",
    settings: LeakageSettings | None = None,
    seed: int = 0,
    augment_seed: int | None = None,
    augment_settings: AugmentSettings | None = None,
    labels: np.ndarray | None = None,
    target: AuditTarget | None = None,
    outputs_of_images: np.ndarray | None = None,
) -> LeakageResult:
    """Score how much better than the label-only baseline a client-side decoder reconstructs images.

    ``images`` (N, C, H, W) in [0, 1] are the probe images as the user sees them (no
    labels needed); ``run`` maps such images to the released outputs (N, K) of kind
    ``output_kind`` (the caller scales pixels, runs the model and applies any release
    filter). ``seed`` fixes the fold split, ``augment_seed`` the augmentations (the
    caller draws it from the OS by default); the same seeds give the same queried images,
    so audits of several models are paired. ``labels`` (N,) or (N, K) group the images for
    the label-only baseline (augmented copies keep their image's label). ``target``
    (:mod:`edgeguard.vetting.targets`; default :func:`audit_target` of ``images``) says what
    is regressed: pixels, a thumbnail of large images, or standardised features when
    ``images`` are (N, F) / (N, T, F) vectors (then ``gain_db`` is the MSE gain over the
    per-class mean and ``extra`` holds R^2 per feature). ``outputs_of_images``: ``run(images)``
    when the caller already has it (one model pass fewer).
    """
    started = time.perf_counter()
    settings = settings or LeakageSettings()
    images = np.asarray(images, dtype=np.float32)
    n = len(images)
    if n < settings.min_samples:
        raise DataError(f"expected at least {settings.min_samples} probe images for the leakage audit, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, settings.folds)
    rng = np.random.default_rng(augment_seed if augment_seed is not None else seed)
    target = target or audit_target(images)
    # the image itself, then copies: copy 1 of every image is scored, the others are fitted on.
    # One copy at a time (augmented, run, reduced to its target): memory stays at one copy.
    chunks, targets = [], []
    # Large inputs go in blocks of rows (about 2^25 values each; a 28x28 probe is one block), so
    # memory stays at a few blocks (mixup partners are then drawn within the block).
    block = max(1, _BLOCK_VALUES // max(1, int(np.prod(images.shape[1:]))))
    for copy in range(settings.augmentations + 2):
        outs, codes = [], []
        for start in range(0, n, block):
            rows = images[start : start + block]
            batch = rows if copy == 0 else target.augment(rows, 1, rng, augment_settings)[0]
            if copy == 0 and outputs_of_images is not None:
                outs.append(np.asarray(outputs_of_images[start : start + block], dtype=np.float64))
            else:
                outs.append(np.asarray(run(batch), dtype=np.float64))
            codes.append(target.encode(batch))
            del batch
        chunk = np.concatenate(outs)
        if chunk.ndim != 2 or len(chunk) != n:
            raise DataError(f"expected outputs of shape ({n}, K), got {chunk.shape}")
        chunks.append(chunk)
        targets.append(np.concatenate(codes))
    outputs = np.concatenate(chunks)
    queried = np.stack(targets)  # (A + 2, N, target values)
    features = output_features(outputs, output_kind, task_type, settings.features).reshape(
        queried.shape[0], n, -1
    )
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise DataError(f"expected one label per probe image, got {len(labels)} labels for {n} images")
        if labels.ndim == 2:
            _, per_image = np.unique(labels > 0.5, axis=0, return_inverse=True)
        else:
            per_image = labels
        groups = np.tile(np.asarray(per_image).reshape(1, n), (queried.shape[0], 1))
    else:
        groups = predicted_groups(canonical_features(outputs, output_kind, task_type), task_type).reshape(
            queried.shape[0], n
        )
    fit_copies = [0] + list(range(2, queried.shape[0]))  # the original and the fitting augmentations
    decoder_errors, baseline_errors = [], []
    scored_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # vectors: for R^2 per feature
    fit_rows = 0
    for k, scored in enumerate(folds):
        if settings.eval_samples is not None:
            scored = scored[: max(1, settings.eval_samples // settings.folds)]
        rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
        if settings.fit_samples is not None:
            rest = rest[: settings.fit_samples]
        fit_x = np.concatenate([features[c, rest] for c in fit_copies])
        fit_images = np.concatenate([queried[c, rest] for c in fit_copies])
        fit_groups = np.concatenate([groups[c, rest] for c in fit_copies])
        if len(fit_x) > settings.max_fit:
            keep = np.random.default_rng([seed, k]).choice(len(fit_x), settings.max_fit, replace=False)
            fit_x, fit_images, fit_groups = fit_x[keep], fit_images[keep], fit_groups[keep]
        fit_rows = max(fit_rows, len(fit_x))
        query_x = features[1, scored]
        truth = queried[1, scored].astype(np.float64)
        if settings.standardise:
            fit_x, query_x = normalise_global(fit_x, query_x)
        decoded = _decode(settings, fit_x, fit_images.astype(np.float64), query_x)
        baseline = label_only_reconstruct(fit_groups, fit_images.astype(np.float64), groups[1, scored])
        axes = tuple(range(1, truth.ndim))
        if target.is_vector:
            scored_parts.append((decoded, baseline, truth))
        decoder_errors.append(((decoded - truth) ** 2).mean(axis=axes))
        baseline_errors.append(((baseline - truth) ** 2).mean(axis=axes))
    dec, base = np.concatenate(decoder_errors), np.concatenate(baseline_errors)
    low, high = bootstrap_interval(dec, base, np.random.default_rng([seed, 7]), settings.bootstrap)
    extra: dict[str, Any] = {"target": target.name}
    if scored_parts:
        extra.update(per_feature_r2(*(np.concatenate(part) for part in zip(*scored_parts))))
    return LeakageResult(
        gain_db=_gain(dec, base),
        ci_low_db=low,
        ci_high_db=high,
        psnr_decoder_db=float(10.0 * np.log10(1.0 / max(dec.mean(), 1e-12))),
        psnr_label_only_db=float(10.0 * np.log10(1.0 / max(base.mean(), 1e-12))),
        decoder=settings.decoder,
        features=settings.features,
        samples=n,
        fit_rows=fit_rows,
        scored_rows=len(dec),
        augment_seed=augment_seed,
        seconds=time.perf_counter() - started,
        errors=(dec, base),
        extra=extra,
    )
