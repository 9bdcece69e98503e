"""The output side of the leakage audit: features an attacker cannot rescale away, and several decoders.

Features (all computed from the values, never from the metadata):

- ``log``: row-centred log-probabilities; whether a row is a probability vector is decided
  from the values (rows on the simplex), so a ``Softmax`` appended behind metadata that
  says "logits" changes nothing; one global scale from the fitting rows;
- ``logr``: the same, each class standardised on its own (median and interquartile range):
  a spike on the top class moves every row of that class alike, so neighbours stay neighbours;
- ``rest``: the same with the top class removed (its entry set to the mean of the others)
  and each class standardised on its own: a spike on the top class (``v + 40 softmax(50 v)``)
  can then neither swamp the scale nor hide the other classes;
- ``residue:<step>``: the raw outputs modulo a lattice step (``2^-k`` for k = 0..12, ``10^-k``
  for k = 1..3), as an angle on the circle (cos, sin): a code below a lattice (honest logits snapped to a grid plus a code under
  the grid step) is invisible to the features above and plain in these;
- ``lowbits``: the 8 low-order mantissa bits of the float32 outputs.

Decoders: kernel ridge regression (RBF, the kernel width chosen by cross-validation on the
fitting rows only, so inside each fold), k nearest neighbours, and a small MLP (on the
fitting images' principal components). The audit keeps the best of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "is_simplex",
    "centred_logs",
    "feature_sets",
    "normalise_global",
    "standardise_columns",
    "krr_cv_decode",
    "knn_decode",
    "mlp_decode",
    "principal_basis",
    "DECODER_NAMES",
    "RESIDUE_STEPS",
    "low_bit_entropy",
]

DECODER_NAMES = ("krr", "knn", "mlp")
#: Lattice steps whose residues the audit decodes from (binary and decimal lattices).
RESIDUE_STEPS = tuple(2.0**-k for k in range(13)) + (0.1, 0.01, 0.001)
_FLOOR = float(np.finfo(np.float32).tiny)
_GAMMAS = (0.25, 1.0, 4.0)  # RBF width candidates, per feature (divided by the feature count)


def is_simplex(outputs: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when every row is a probability vector (non-negative, sums to 1): decided from the values."""
    return bool(outputs.size and outputs.min() >= -1e-6 and np.max(np.abs(outputs.sum(axis=1) - 1.0)) <= tolerance)


def centred_logs(outputs: np.ndarray, task_type: str) -> np.ndarray:
    """Row-centred log-probabilities (probability rows, decided from the values) or logits; multilabel: log-odds."""
    if task_type == "multilabel":
        if outputs.min() >= 0.0 and outputs.max() <= 1.0:  # probabilities, from the values
            p = np.clip(outputs, _FLOOR, 1.0 - 1e-7)
            return np.log(p) - np.log1p(-p)
        return outputs
    logs = np.log(np.clip(outputs, _FLOOR, None)) if is_simplex(outputs) else outputs
    return logs - logs.mean(axis=1, keepdims=True)


def _without_top(logs: np.ndarray) -> np.ndarray:
    top = logs.argmax(axis=1)
    out = logs.copy()
    rows = np.arange(len(logs))
    out[rows, top] = np.nan
    mean = np.nanmean(out, axis=1, keepdims=True)
    out[rows, top] = mean[:, 0]
    return out - mean


def _residues(outputs: np.ndarray, step: float) -> np.ndarray:
    """The position of each output between two lattice points, on the circle (cos, sin of 2 pi u):
    a code placed just below or just above a lattice point stays one neighbourhood (no wrap at 0)."""
    angle = 2.0 * np.pi * (outputs / step)
    return np.hstack([np.cos(angle), np.sin(angle)])


def _low_bits(outputs: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(outputs, dtype=np.float32).view(np.uint32)
    return (bits & 0xFF).astype(np.float64) / 256.0


def low_bit_entropy(outputs: np.ndarray) -> float:
    """Mean entropy (bits, at most 8) of the 8 low-order mantissa bits of each output column."""
    bits = (np.ascontiguousarray(outputs, dtype=np.float32).view(np.uint32) & 0xFF).astype(np.int64)
    entropies = []
    for column in bits.T:
        counts = np.bincount(column, minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        entropies.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(entropies)) if entropies else 0.0


def feature_sets(outputs: np.ndarray, task_type: str = "multiclass", residues: bool = True) -> dict[str, np.ndarray]:
    """Every feature set of the audit for ``outputs`` (N, K), by name (float64 arrays (N, d))."""
    outputs = np.asarray(outputs, dtype=np.float64)
    logs = centred_logs(outputs, task_type)
    sets = {"log": logs, "logr": logs}  # "logr": each class standardised on its own (robustly) by the audit
    if task_type != "multilabel" and logs.shape[1] > 2:
        sets["rest"] = _without_top(logs)
    if residues:
        for step in RESIDUE_STEPS:
            sets[f"residue:{step:g}"] = _residues(outputs, step)
        sets["lowbits"] = _low_bits(outputs)
    return sets


def normalise_global(fit: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean removal and one global scale, both from the fitting rows."""
    centre = fit.mean(axis=0)
    fit, query = fit - centre, query - centre
    scale = float(np.sqrt(np.mean(fit * fit)))
    if scale > 1e-12:
        fit, query = fit / scale, query / scale
    return fit, query


def standardise_columns(fit: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature standardised on its own (mean, robust spread of the fitting rows)."""
    centre = np.median(fit, axis=0)
    spread = np.percentile(fit, 75, axis=0) - np.percentile(fit, 25, axis=0)
    spread = np.where(spread > 1e-12, spread / 1.349, 1.0)
    return (fit - centre) / spread, (query - centre) / spread


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _solve(kernel: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    from scipy.linalg import cho_factor, cho_solve

    regularised = kernel + alpha * np.eye(len(kernel))
    return cho_solve(cho_factor(regularised, lower=True, check_finite=False), targets, check_finite=False)


def principal_basis(fit_images: np.ndarray, components: int = 48, rows: int = 1000) -> np.ndarray:
    """The fitting images' leading principal directions (pixels x components), from their covariance."""
    flat = fit_images.reshape(len(fit_images), -1)[:rows]
    centred = flat - flat.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, ::-1][:, :components]


def krr_cv_decode(
    fit_x: np.ndarray,
    fit_images: np.ndarray,
    query_x: np.ndarray,
    alpha: float = 1.0,
    seed: int = 0,
    basis: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Kernel ridge (RBF) from features to pixels, the width picked by a split of the fitting rows.

    The selection scores each candidate on the fitting images' leading principal components
    (a cheap proxy of the pixel error); the chosen width is refitted on every fitting row.
    Returns the decoded query images (clipped to [0, 1]) and the chosen gamma.
    """
    flat = fit_images.reshape(len(fit_images), -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    d = max(1, fit_x.shape[1])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(fit_x))
    # the width is chosen on a subsample (800 fitting rows, 300 held out): the choice, not the fit, needs few rows
    held, kept = order[: min(len(order) // 5, 300)], order[len(order) // 5 :][:800]
    basis = principal_basis(fit_images[kept]) if basis is None else basis
    coded = centred @ basis[:, :32]
    best, best_error = _GAMMAS[0], np.inf
    distances_kept = _sq_distances(fit_x[kept], fit_x[kept])
    distances_held = _sq_distances(fit_x[held], fit_x[kept])
    for factor in _GAMMAS:
        gamma = factor / d
        weights = _solve(np.exp(-gamma * distances_kept), coded[kept], alpha)
        error = float(np.mean((np.exp(-gamma * distances_held) @ weights - coded[held]) ** 2))
        if error < best_error:
            best, best_error = factor, error
    gamma = best / d
    weights = _solve(np.exp(-gamma * _sq_distances(fit_x, fit_x)), centred, alpha)
    decoded = np.exp(-gamma * _sq_distances(query_x, fit_x)) @ weights + mean
    return np.clip(decoded, 0.0, 1.0).reshape((len(query_x),) + fit_images.shape[1:]), float(best)


def knn_decode(fit_x: np.ndarray, fit_images: np.ndarray, query_x: np.ndarray, neighbours: int = 10) -> np.ndarray:
    """Mean image of the ``neighbours`` nearest fitting rows (Euclidean)."""
    from scipy.sparse import csr_matrix

    k = min(neighbours, len(fit_x))
    flat = fit_images.reshape(len(fit_images), -1)
    nearest = np.argpartition(_sq_distances(query_x, fit_x), k - 1, axis=1)[:, :k]
    weights = csr_matrix(
        (np.full(nearest.size, 1.0 / k), nearest.reshape(-1), np.arange(0, nearest.size + 1, k)),
        shape=(len(query_x), len(fit_x)),
    )
    return np.asarray(weights @ flat).reshape((len(query_x),) + fit_images.shape[1:])


def mlp_decode(
    fit_x: np.ndarray, fit_images: np.ndarray, query_x: np.ndarray, seed: int = 0, basis: np.ndarray | None = None
) -> np.ndarray:
    """A small MLP (scikit-learn, one hidden layer of 64) to the fitting images' leading principal components."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    flat = fit_images.reshape(len(fit_images), -1)
    mean = flat.mean(axis=0)
    basis = principal_basis(fit_images) if basis is None else basis
    coded = (flat - mean) @ basis
    spread = coded.std(axis=0) + 1e-12
    model = MLPRegressor(hidden_layer_sizes=(64,), max_iter=100, learning_rate_init=3e-3, random_state=seed, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(fit_x, coded / spread)
    decoded = (model.predict(query_x).reshape(len(query_x), -1) * spread) @ basis.T + mean
    return np.clip(decoded, 0.0, 1.0).reshape((len(query_x),) + fit_images.shape[1:])


Decoder = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
