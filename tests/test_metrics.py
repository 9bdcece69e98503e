"""Leakage metrics checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeguard.errors import InvalidInputError
from edgeguard.metrics import (
    MahalanobisReference,
    gaussian_window,
    psnr,
    psnr_per_image,
    reconstruction_risk,
    ssim,
    ssim_per_image,
)


def _ssim_by_loop(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Direct per-window SSIM (Wang et al. 2004), one window at a time: the oracle."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mu_a, mu_b = (w * a).sum(), (w * b).sum()
            var_a = (w * (a - mu_a) ** 2).sum()
            var_b = (w * (b - mu_b) ** 2).sum()
            cov = (w * (a - mu_a) * (b - mu_b)).sum()
            values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(14, 14), (11, 11), (16, 13)], ids=["14x14", "11x11-one-window", "16x13"])
def test_ssim_matches_per_window_loop(rng, shape):
    x = rng.random(shape)
    y = np.clip(x + rng.normal(0, 0.2, shape), 0, 1)
    assert ssim(x, y) == pytest.approx(_ssim_by_loop(x, y), abs=1e-10)


def test_ssim_averages_channels_and_images(rng):
    x = rng.random((3, 2, 12, 12))
    y = rng.random((3, 2, 12, 12))
    per_image = ssim_per_image(x, y)
    expected = [np.mean([_ssim_by_loop(x[n, c], y[n, c]) for c in range(2)]) for n in range(3)]
    np.testing.assert_allclose(per_image, expected, atol=1e-10)
    assert ssim(x, y) == pytest.approx(np.mean(expected))


def test_ssim_matches_scikit_image(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is an optional second oracle")
    x = rng.random((28, 28))
    y = np.clip(x * 0.7 + rng.random((28, 28)) * 0.3, 0, 1)
    reference = skimage_metrics.structural_similarity(
        x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(x, y) == pytest.approx(reference, abs=1e-6)


def test_one_gaussian_window_for_both_ssims(rng):
    """The window is scipy's Gaussian, normalised; the torch SSIM (converters) uses the same one."""
    from scipy.signal.windows import gaussian

    window = gaussian_window(11, 1.5)
    np.testing.assert_allclose(window, gaussian(11, 1.5) / gaussian(11, 1.5).sum(), rtol=0, atol=1e-15)
    with pytest.raises(InvalidInputError, match="sigma > 0"):
        gaussian_window(11, 0.0)
    torch = pytest.importorskip("torch", reason="the converters' torch SSIM needs torch")
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is an optional second oracle")
    from converters.losses import ssim as torch_ssim

    x = rng.random((28, 28))
    y = np.clip(x * 0.6 + rng.random((28, 28)) * 0.4, 0, 1)
    reference = skimage_metrics.structural_similarity(
        x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    ours = float(torch_ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]))
    assert ours == pytest.approx(reference, abs=1e-6) and ssim(x, y) == pytest.approx(ours, abs=1e-12)


def test_ssim_identical_is_one_and_rejects_small_images(rng):
    x = rng.random((2, 1, 20, 20))
    assert ssim(x, x) == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="at least 11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])


@pytest.mark.parametrize(
    "mse, expected_db",
    [(1.0, 0.0), (0.01, 20.0), (0.001, 30.0), (0.25, 10 * math.log10(4))],
    ids=["mse1", "mse0.01", "mse0.001", "mse0.25"],
)
def test_psnr_on_hand_made_pairs(mse, expected_db):
    x = np.zeros((1, 1, 4, 4))
    xhat = np.full_like(x, math.sqrt(mse))
    assert psnr(x, xhat) == pytest.approx(expected_db)


def test_psnr_is_mean_of_per_image_values_and_inf_when_equal():
    x = np.zeros((2, 1, 2, 2))
    xhat = np.stack([np.full((1, 2, 2), 0.1), np.full((1, 2, 2), 0.01)])
    np.testing.assert_allclose(psnr_per_image(x, xhat), [20.0, 40.0])
    assert psnr(x, xhat) == pytest.approx(30.0)
    assert psnr_per_image(x, x)[0] == math.inf
    assert psnr(x, xhat, data_range=255.0) == pytest.approx(30.0 + 20 * math.log10(255.0))


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(InvalidInputError, match="same shape"):
        psnr(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 5)))


@pytest.fixture(scope="module")
def correlated_images(rng):
    """Images with a low-rank pixel covariance (like real data), 8x8 pixels."""
    basis = rng.normal(size=(10, 64))
    codes = rng.normal(size=(600, 10))
    images = 0.5 + 0.05 * codes @ basis
    return images.reshape(600, 1, 8, 8)


def test_risk_is_one_when_reconstruction_is_the_mean(correlated_images):
    train, test = correlated_images[:500], correlated_images[500:]
    mean = np.broadcast_to(train.mean(axis=0), test.shape)
    assert reconstruction_risk(test, mean, train) == pytest.approx(1.0, abs=1e-6)


def test_risk_grows_as_reconstruction_approaches_input(correlated_images):
    train, test = correlated_images[:500], correlated_images[500:]
    mean = train.mean(axis=0)
    risks = [reconstruction_risk(test, (1 - t) * mean + t * test, train) for t in (0.0, 0.5, 0.9, 0.99)]
    # xhat = (1-t) mu + t x  =>  MD(x, xhat) = (1-t) MD(x, mu)  =>  R = 1 / (1-t) exactly.
    np.testing.assert_allclose(risks, [1.0, 2.0, 10.0, 100.0], rtol=1e-6)
    assert all(a < b for a, b in zip(risks, risks[1:]))


def test_risk_matches_direct_mahalanobis_formula(correlated_images, rng):
    train, test = correlated_images[:500], correlated_images[500:520]
    xhat = test + rng.normal(0, 0.02, test.shape)
    flat_train = train.reshape(500, -1)
    precision = np.linalg.pinv(np.cov(flat_train.T))
    mu = flat_train.mean(axis=0)

    def md(a, b):
        return math.sqrt((a - b) @ precision @ (a - b))

    expected = np.mean([md(x.ravel(), mu) / md(x.ravel(), xh.ravel()) for x, xh in zip(test, xhat)])
    reference = MahalanobisReference.fit(train)
    assert reconstruction_risk(test, xhat, reference) == pytest.approx(expected, rel=1e-6)
    assert reconstruction_risk(test, xhat, train) == pytest.approx(expected, rel=1e-6)


def test_risk_rejects_wrong_pixel_count(correlated_images):
    reference = MahalanobisReference.fit(correlated_images[:100])
    with pytest.raises(InvalidInputError, match="64 pixels"):
        reconstruction_risk(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 4)), reference)


def test_risk_ranks_real_reconstructions_like_psnr(fmnist_train_small, fmnist_test_small):
    """On Fashion-MNIST, a closer reconstruction must score a higher R than the label-only baseline.

    With numpy's default pseudo-inverse cutoff this failed: near-constant border pixels
    dominated the distance and a blurred copy of x scored below the per-class mean image.
    """
    from scipy.ndimage import gaussian_filter

    train, test = fmnist_train_small, fmnist_test_small.head(200)
    reference = MahalanobisReference.fit(train.x)
    class_means = np.stack([train.x[train.y == c].mean(axis=0) for c in range(10)])
    label_only = class_means[test.y]
    # A decoder's typical output: a blurred copy with a small floor everywhere (sigmoid never reaches 0).
    blurred = gaussian_filter(test.x, sigma=(0, 0, 1.0, 1.0)) * 0.98 + 0.01
    assert psnr(test.x, blurred) > psnr(test.x, label_only) + 5.0
    risk_label_only = reconstruction_risk(test.x, label_only, reference)
    risk_blurred = reconstruction_risk(test.x, blurred, reference)
    assert 1.0 < risk_label_only < risk_blurred
    # The failure the cutoff prevents: with (almost) no cutoff the ranking inverts.
    unregularised = MahalanobisReference.fit(train.x, rcond=0.0)
    assert reconstruction_risk(test.x, blurred, unregularised) < 1.0
    mean_image = np.broadcast_to(train.x.mean(axis=0), test.x.shape)
    assert reconstruction_risk(test.x, mean_image, reference) == pytest.approx(1.0, abs=1e-6)
