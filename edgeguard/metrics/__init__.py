"""Leakage metrics and reconstruction baselines (numpy and scikit-learn only, no torch).

- :mod:`~edgeguard.metrics.quality`: how well a reconstruction matches the private input:
  ``psnr``, ``ssim``, ``reconstruction_risk`` (the paper's R);
- :mod:`~edgeguard.metrics.baselines`: the label-only baseline and the closed-form decoders
  that the vet's statistic and the bench's ladder both measure against.
"""

from edgeguard.metrics.baselines import (
    kernel_ridge_reconstruct,
    knn_reconstruct,
    label_only_reconstruct,
    predicted_groups,
    ridge_reconstruct,
)
from edgeguard.metrics.quality import (
    DEFAULT_RISK_RCOND,
    MahalanobisReference,
    gaussian_window,
    per_feature_r2,
    psnr,
    psnr_per_image,
    reconstruction_risk,
    ssim,
    ssim_per_image,
)

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
    "label_only_reconstruct",
    "predicted_groups",
    "knn_reconstruct",
    "kernel_ridge_reconstruct",
    "ridge_reconstruct",
]
