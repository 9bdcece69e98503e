"""Differentiable losses of Algorithm 1: SSIM, the reconstruction loss L_R and the task loss L_C.

:func:`ssim` follows exactly the definition of :func:`edgeguard.metrics.ssim_per_image`
(the same window, :func:`edgeguard.metrics.gaussian_window`: 11x11, sigma 1.5; K1 = 0.01,
K2 = 0.03, valid windows only, mean over windows and channels), so what the server
optimises is what the client measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional

from edgeguard.errors import InvalidInputError
from edgeguard.metrics import gaussian_window

__all__ = ["ssim", "reconstruction_loss", "task_loss", "positive_weights"]


def _filter_valid(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over H and W, per channel, keeping only full windows."""
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return functional.conv2d(functional.conv2d(images, rows, groups=channels), cols, groups=channels)


def ssim(
    x: torch.Tensor,
    xhat: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM between image batches (N, C, H, W); ``reduction`` "mean" (scalar) or "none" (per image)."""
    if x.shape != xhat.shape or x.ndim != 4:
        raise InvalidInputError(
            f"expected two (N, C, H, W) batches of the same shape, got {tuple(x.shape)} and {tuple(xhat.shape)}"
        )
    kernel = torch.from_numpy(gaussian_window(window_size, sigma)).to(dtype=x.dtype, device=x.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    stacked = _filter_valid(torch.cat([x, xhat, x * x, xhat * xhat, x * xhat], dim=1), kernel)
    mu_x, mu_y, xx, yy, xy = stacked.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_image = ssim_map.flatten(1).mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image


def reconstruction_loss(
    xhat: torch.Tensor, x: torch.Tensor, alpha_mse: float = 5.0, alpha_ssim: float = 1.0, huber_delta: float = 1.0
) -> torch.Tensor:
    """L_R = a_mse * Huber_delta(xhat, x) + a_ssim * (1 - SSIM(xhat, x)), means over the batch."""
    loss = alpha_mse * functional.huber_loss(xhat, x, delta=huber_delta)
    if alpha_ssim:
        loss = loss + alpha_ssim * (1.0 - ssim(x, xhat))
    return loss


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute ``#neg / #pos`` for class-weighted BCE (an attribute never positive gets weight 1)."""
    positives = labels.sum(dim=0)
    negatives = labels.shape[0] - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1.0), torch.ones_like(positives))


def task_loss(scores: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_C: cross-entropy for int class labels, class-weighted BCE-with-logits for 0/1 attributes."""
    if labels.ndim == 1:
        return functional.cross_entropy(scores, labels)
    return functional.binary_cross_entropy_with_logits(scores, labels, pos_weight=pos_weight)
