"""Reconstruction baselines: what a client-side attacker recovers from released outputs without training.

The vet's leakage statistic (:mod:`edgeguard.vetting.leakage`) and the bench's attacker
ladder (:mod:`edgeguard.bench`) score decoders against the same baselines, defined here once:

- :func:`label_only_reconstruct`: the mean fitting image of the query's class (what the
  label alone reveals; every gain is measured over it);
- :func:`knn_reconstruct`, :func:`kernel_ridge_reconstruct`, :func:`ridge_reconstruct`:
  closed-form decoders from output features to pixels (scikit-learn).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "label_only_reconstruct",
    "predicted_groups",
    "knn_reconstruct",
    "kernel_ridge_reconstruct",
    "ridge_reconstruct",
]


def knn_reconstruct(
    fit_features: np.ndarray, fit_images: np.ndarray, query_features: np.ndarray, neighbours: int = 10
) -> np.ndarray:
    """Mean image of the ``neighbours`` nearest fitting samples in feature space (scikit-learn)."""
    from sklearn.neighbors import KNeighborsRegressor

    k = min(neighbours, len(fit_features))
    flat = fit_images.reshape(len(fit_images), -1)
    model = KNeighborsRegressor(n_neighbors=k).fit(fit_features, flat)
    return model.predict(query_features).reshape((len(query_features),) + fit_images.shape[1:])


def kernel_ridge_reconstruct(
    fit_features: np.ndarray,
    fit_images: np.ndarray,
    query_features: np.ndarray,
    gamma: float,
    alpha: float = 1.0,
) -> np.ndarray:
    """Kernel ridge regression (scikit-learn, RBF kernel ``exp(-gamma |a - b|^2)``) to pixels, clipped to [0, 1].

    The mean fitting image is the intercept.
    """
    from sklearn.kernel_ridge import KernelRidge

    flat = fit_images.reshape(len(fit_images), -1)
    mean = flat.mean(axis=0)
    model = KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma).fit(fit_features, flat - mean)
    decoded = model.predict(query_features) + mean
    return np.clip(decoded, 0.0, 1.0).reshape((len(query_features),) + fit_images.shape[1:])


def ridge_reconstruct(
    fit_features: np.ndarray, fit_images: np.ndarray, query_features: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    """Linear ridge regression (scikit-learn) from features to pixels, clipped to [0, 1]."""
    from sklearn.linear_model import Ridge

    flat = fit_images.reshape(len(fit_images), -1)
    model = Ridge(alpha=alpha).fit(fit_features, flat)
    return np.clip(model.predict(query_features), 0.0, 1.0).reshape((len(query_features),) + fit_images.shape[1:])


def predicted_groups(features: np.ndarray, task_type: str) -> np.ndarray:
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
