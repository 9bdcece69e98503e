"""Functional leakage metrics: how well a reconstruction ``xhat`` matches a private input ``x``.

All functions take numpy arrays of images, ``(N, C, H, W)`` or a single ``(C, H, W)`` /
``(H, W)`` image, with pixels in ``[0, data_range]`` (edgeguard uses ``[0, 1]``), and
return Python floats averaged over the samples. They need numpy only, so the client
never needs torch to measure leakage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeguard.errors import InvalidInputError

__all__ = [
    "psnr",
    "ssim",
    "ssim_per_image",
    "gaussian_window",
    "psnr_per_image",
    "reconstruction_risk",
    "MahalanobisReference",
    "DEFAULT_RISK_RCOND",
    "per_feature_r2",
]


def _as_batch(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InvalidInputError(f"expected {name} of shape (N, C, H, W), (C, H, W) or (H, W), got {x.shape}")
    return x


def _pair(x: np.ndarray, xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, xhat = _as_batch(x, "x"), _as_batch(xhat, "xhat")
    if x.shape != xhat.shape:
        raise InvalidInputError(f"expected x and xhat of the same shape, got {x.shape} and {xhat.shape}")
    return x, xhat


def psnr_per_image(x: np.ndarray, xhat: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """PSNR of each image in dB, shape (N,): ``10 log10(data_range^2 / MSE)``; inf when equal."""
    x, xhat = _pair(x, xhat)
    mse = ((x - xhat) ** 2).reshape(len(x), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def psnr(x: np.ndarray, xhat: np.ndarray, data_range: float = 1.0) -> float:
    """Mean over images of the per-image PSNR in dB (higher = closer; range [0, inf])."""
    return float(np.mean(psnr_per_image(x, xhat, data_range)))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian window of SSIM (float64, sums to 1); the 2-D window is its outer product.

    The one definition of the window: :func:`ssim_per_image` here and the differentiable
    torch SSIM the converters train with (``converters.losses.ssim``) both use it.
    """
    if int(size) != size or size < 1 or not sigma > 0:
        raise InvalidInputError(f"expected a window size >= 1 and sigma > 0, got size {size!r}, sigma {sigma!r}")
    offsets = np.arange(int(size), dtype=np.float64) - (int(size) - 1) / 2.0
    window = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return window / window.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering over the last two axes, keeping only full windows."""
    size = len(window)
    rows = np.lib.stride_tricks.sliding_window_view(images, size, axis=-2) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=-1) @ window


def ssim_per_image(
    x: np.ndarray,
    xhat: np.ndarray,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """SSIM of each image, shape (N,), range [-1, 1] (1 = identical).

    Gaussian window ``window_size`` x ``window_size`` with std ``sigma``, constants
    ``(k1 L)^2`` and ``(k2 L)^2`` with ``L = data_range``; the SSIM map is computed over
    every full window (no padding) and averaged over windows and channels.
    """
    x, xhat = _pair(x, xhat)
    if min(x.shape[-2:]) < window_size:
        raise InvalidInputError(
            f"expected images of at least {window_size}x{window_size} pixels for SSIM, got {x.shape[-2:]}"
        )
    window = gaussian_window(window_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(xhat, window)
    var_x = _filter_valid(x * x, window) - mu_x**2
    var_y = _filter_valid(xhat * xhat, window) - mu_y**2
    cov = _filter_valid(x * xhat, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(len(x), -1).mean(axis=1)


def ssim(x: np.ndarray, xhat: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM over images (range [-1, 1]; 1 = identical). See :func:`ssim_per_image`."""
    return float(np.mean(ssim_per_image(x, xhat, data_range)))


#: Eigen-directions of the pixel covariance with variance below this fraction of the largest
#: one are left out of the pseudo-inverse. numpy's default cutoff (~1e-13) keeps directions
#: such as near-constant border pixels (variance ~1e-7 on Fashion-MNIST), which then dominate
#: every distance: a 17 dB reconstruction scored R = 0.06, below the label-only baseline.
DEFAULT_RISK_RCOND = 1e-3


@dataclass(frozen=True)
class MahalanobisReference:
    """Pixel mean ``mu`` and pseudo-inverse covariance ``S+`` estimated on reference images.

    The paper estimates both on the training images. Build once, reuse for many
    :func:`reconstruction_risk` calls: the pseudo-inverse of a 784x784 covariance is
    the expensive part. ``rcond``: eigenvalues below ``rcond * largest`` are dropped
    from ``S+`` (see :data:`DEFAULT_RISK_RCOND`).
    """

    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D), pseudo-inverse of the covariance

    @classmethod
    def fit(cls, images: np.ndarray, rcond: float = DEFAULT_RISK_RCOND) -> "MahalanobisReference":
        flat = _as_batch(images, "reference images").reshape(len(images), -1)
        if len(flat) < 2:
            raise InvalidInputError(f"expected at least 2 reference images, got {len(flat)}")
        if not 0.0 <= rcond < 1.0:
            raise InvalidInputError(f"expected rcond in [0, 1), got {rcond}")
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(flat, rowvar=False))
        keep = eigenvalues > max(rcond, 1e-12) * eigenvalues.max()
        kept = eigenvectors[:, keep]
        return cls(mean=flat.mean(axis=0), precision=(kept / eigenvalues[keep]) @ kept.T)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise Mahalanobis distance between flattened (N, D) arrays ``a`` and ``b``."""
        delta = a - b
        squared = np.einsum("nd,nd->n", delta @ self.precision, delta)
        return np.sqrt(np.maximum(squared, 0.0))


def reconstruction_risk(
    x: np.ndarray,
    xhat: np.ndarray,
    reference: np.ndarray | MahalanobisReference,
    eps: float = 1e-12,
) -> float:
    """The paper's reconstruction risk R = mean_i MD(x_i, mu) / MD(x_i, xhat_i).

    ``reference`` is a set of images (usually training images) or a prepared
    :class:`MahalanobisReference`. R = 1 when ``xhat`` is the data mean (no leakage);
    R grows without bound as ``xhat`` approaches ``x`` (the denominator is floored at
    ``eps``). Range (0, inf); values above 1 mean the reconstruction beats the mean.
    """
    x, xhat = _pair(x, xhat)
    if not isinstance(reference, MahalanobisReference):
        reference = MahalanobisReference.fit(reference)
    flat_x, flat_xhat = x.reshape(len(x), -1), xhat.reshape(len(xhat), -1)
    if flat_x.shape[1] != reference.mean.shape[0]:
        raise InvalidInputError(
            f"expected images with {reference.mean.shape[0]} pixels like the reference, got {flat_x.shape[1]}"
        )
    to_mean = reference.distance(flat_x, np.broadcast_to(reference.mean, flat_x.shape))
    to_reconstruction = np.maximum(reference.distance(flat_x, flat_xhat), eps)
    return float(np.mean(to_mean / to_reconstruction))


def per_feature_r2(decoded: np.ndarray, baseline: np.ndarray, truth: np.ndarray) -> dict[str, list[float | None]]:
    """R^2 per target value of the decoder and of the label-only baseline (1 - SSE / total sum of squares).

    For vector inputs only (each target value is one standardised feature); a feature
    that does not vary among the scored items gets None (JSON has no NaN).
    """
    truth = np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    safe = np.where(total > 1e-12, total, np.nan)

    def r2(predicted: np.ndarray) -> list[float | None]:
        sse = ((np.asarray(predicted, dtype=np.float64).reshape(truth.shape) - truth) ** 2).sum(axis=0)
        return [float(v) if np.isfinite(v) else None for v in 1.0 - sse / safe]

    return {"r2_per_feature": r2(decoded), "r2_per_feature_label_only": r2(baseline)}
