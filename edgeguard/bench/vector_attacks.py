"""The post-hoc attackers of the vector bench: decoders fitted from a release to the features it came from.

What the attacker reads (:func:`attack_features`): a label release (argmax index or one-hot)
as its one-hot row; probabilities and scores as the values and their row-centred logs
(``log(max(p, floor))``, floor = half a rounding step when the release is rounded, which
recovers logits up to one shift per row); logits as released.

The attackers (:data:`VECTOR_ATTACKERS`), each fitted on the attacker's own rows released
through a freshly built pipeline of the same filter spec (fresh noise for random filters),
then run on the victim's release of the evaluation rows:

- ``ridge``: linear ridge regression (scikit-learn) on the standardised release features;
- ``knn``: the mean of the 10 nearest attacker rows in standardised release-feature space;
- ``mlp``: an MLP regressor (scikit-learn, two hidden layers of 64, seeded, early stopping);
- ``server``: the server's decoder (``--decoder``, when given), fed the release mapped to its
  input kind (:mod:`edgeguard.bench.mapping`), its outputs mapped to standardised features by
  one least-squares affine map per feature fitted on the attacker's rows (the server knows
  its decoder's units; the bench does not, so it lets the attacker calibrate them).

Scores (:func:`score`), on standardised features (the probe's z-scores, as the vet's audit
target :func:`edgeguard.vetting.targets.audit_target`): the MSE gain over the label-only
baseline (the per-class mean of the attacker's rows, by the released top-1 class of the raw
output) in dB, and R^2 per feature (:func:`edgeguard.metrics.per_feature_r2`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.bench.mapping import one_hot
from edgeguard.filters import OutputDomain
from edgeguard.metrics import per_feature_r2

__all__ = ["VECTOR_ATTACKERS", "attack_features", "fit_attackers", "score", "AttackerScore", "NEIGHBOURS"]

#: k of the k-NN attacker.
NEIGHBOURS = 10

#: Every post-hoc attacker of the vector bench, named next to every number it produces.
VECTOR_ATTACKERS = {
    "ridge": "linear ridge regression (alpha 1) from the standardised release features",
    "knn": f"mean of the {NEIGHBOURS} nearest attacker rows in standardised release-feature space",
    "mlp": "MLP regressor (scikit-learn, 2 hidden layers of 64, seeded, early stopping) on the release features",
    "server": "the server's decoder (--decoder) on the mapped release, calibrated per feature by least squares",
}

_FLOOR = 1e-12


def attack_features(release: np.ndarray, domain: OutputDomain, num_classes: int) -> np.ndarray:
    """What the attacker regresses from: float64 (N, D) features of a release (module docstring)."""
    release = np.asarray(release)
    if release.ndim == 1 or domain.terminal:
        return one_hot(release.astype(np.int64), num_classes).astype(np.float64)
    rows = release.astype(np.float64)
    if domain.kind == "labels":
        return one_hot(rows.argmax(axis=1), num_classes).astype(np.float64)
    if domain.kind in ("probabilities", "scores"):
        floor = 0.5 * 10.0 ** (-domain.decimals) if domain.decimals is not None else _FLOOR
        logs = np.log(np.maximum(rows, floor))
        logs -= logs.mean(axis=1, keepdims=True)
        return np.hstack([rows, logs])
    return rows


def _standardise(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    centre, scale = fit.mean(axis=0), fit.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return [(a - centre) / scale for a in (fit, *others)]


@dataclass(frozen=True)
class AttackerScore:
    """One attacker's leakage on the evaluation rows: gain over label-only (dB), mean R^2 and R^2 per feature."""

    gain_db: float
    mean_r2: float
    r2_per_feature: list[float | None]
    mse: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "gain_db": self.gain_db,
            "mean_r2": self.mean_r2,
            "mse": self.mse,
            "r2_per_feature": self.r2_per_feature,
        }


def score(decoded: np.ndarray, truth: np.ndarray, label_only: np.ndarray) -> AttackerScore:
    """``decoded`` against the standardised ``truth``: gain over ``label_only`` in dB, R^2 per feature."""
    decoded = np.asarray(decoded, dtype=np.float64).reshape(truth.shape)
    mse = float(np.mean((decoded - truth) ** 2))
    mse_label = float(np.mean((label_only - truth) ** 2))
    r2 = per_feature_r2(decoded, label_only, truth)["r2_per_feature"]
    finite = [v for v in r2 if v is not None]
    return AttackerScore(
        gain_db=float(10.0 * np.log10(max(mse_label, _FLOOR) / max(mse, _FLOOR))),
        mean_r2=float(np.mean(finite)) if finite else float("nan"),
        r2_per_feature=r2,
        mse=mse,
    )


def fit_attackers(
    train_features: np.ndarray,
    train_truth: np.ndarray,
    eval_features: np.ndarray,
    *,
    seed: int,
    server: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Attacker name -> its reconstruction of the evaluation rows (standardised features).

    ``server``: returns the server decoder's outputs on the attacker's and the evaluation
    releases (train, eval); None when no decoder was given.
    """
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor

    fit, query = _standardise(train_features, eval_features)
    decoded: dict[str, np.ndarray] = {}
    decoded["ridge"] = Ridge(alpha=1.0).fit(fit, train_truth).predict(query)
    k = min(NEIGHBOURS, len(fit))
    decoded["knn"] = KNeighborsRegressor(n_neighbors=k).fit(fit, train_truth).predict(query)
    mlp = MLPRegressor(
        hidden_layer_sizes=(64, 64),
        max_iter=300,
        early_stopping=len(fit) >= 50,
        random_state=seed % (2**32),
        learning_rate_init=1e-3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on tiny sets: the score says how well it did
        decoded["mlp"] = mlp.fit(fit, train_truth).predict(query)
    if server is not None:
        train_out, eval_out = server()
        decoded["server"] = _calibrated(train_out, train_truth, eval_out)
    return {
        name: np.asarray(value, dtype=np.float64).reshape(len(eval_features), -1) for name, value in decoded.items()
    }


def _calibrated(train_out: np.ndarray, train_truth: np.ndarray, eval_out: np.ndarray) -> np.ndarray:
    """One least-squares affine map per feature from the decoder's outputs to the standardised truth."""
    a = np.asarray(train_out, dtype=np.float64).reshape(len(train_out), -1)
    b = np.asarray(eval_out, dtype=np.float64).reshape(len(eval_out), -1)
    centre = a.mean(axis=0)
    spread = ((a - centre) ** 2).sum(axis=0)
    slope = np.where(
        spread > 1e-12,
        ((a - centre) * (train_truth - train_truth.mean(axis=0))).sum(axis=0) / np.maximum(spread, 1e-12),
        0.0,
    )
    return train_truth.mean(axis=0) + slope * (b - centre)
