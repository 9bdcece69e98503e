"""What the leakage audit reconstructs: the audit TARGET for each kind of input.

The audit regresses a target computed from each probe item and scores the decoder
against the label-only baseline (the class's mean target) by the mean squared error:
``gain_db = 10 log10(MSE_label_only / MSE_decoder)``. The target is chosen so that its
size does not grow with the input:

- small images (at most ``max_values`` values, e.g. 28x28 or 64x64 grey): the pixels
  themselves, in [0, 1]; ``gain_db`` is then the PSNR gain over label-only;
- larger images (e.g. 224x224 RGB): a 32x32 area-averaged thumbnail per channel, still in
  [0, 1] (its PSNR gain: what a decoder learns about the picture at that scale);
- vectors (N, F) and sequences (N, T, F): the standardised features (z-scores with the
  probe's mean and standard deviation), mapped by ONE affine map into [0, 1] for the
  decoders (which clip to [0, 1]; the map leaves a margin of 3 standard deviations past
  the probe's extremes, so the truths lie inside and clipping only lowers errors). ``gain_db`` is the MSE gain over the per-class mean in dB (the affine map
  cancels in the ratio); :func:`per_feature_r2` adds R^2 per feature, for the decoder
  and for the label-only baseline. PSNR figures are not meaningful for vectors.

Augmentation (free extra queries): images use :mod:`edgeguard.vetting.augment`; vectors
get Gaussian noise of ``3 x AugmentSettings.noise`` per-feature standard deviations and
the same mixup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.metrics.quality import per_feature_r2
from edgeguard.vetting.augment import AugmentSettings, augment

__all__ = ["AuditTarget", "audit_target", "per_feature_r2", "thumbnail", "DEFAULT_MAX_VALUES", "THUMBNAIL_SIDE"]

#: Largest target per sample regressed as is; bigger images are thumbnailed.
DEFAULT_MAX_VALUES = 4096
#: Side of the thumbnail that stands for a large image.
THUMBNAIL_SIDE = 32
#: Vector augmentation noise, in per-feature standard deviations, per unit of AugmentSettings.noise.
_VECTOR_NOISE_FACTOR = 3.0


def _area_matrix(size: int, side: int) -> np.ndarray:
    """(side, size) weights averaging each output cell's share of the input (exact area resampling)."""
    edges = np.linspace(0.0, size, side + 1)
    matrix = np.zeros((side, size), dtype=np.float32)
    for i in range(side):
        low, high = edges[i], edges[i + 1]
        for j in range(int(np.floor(low)), min(int(np.ceil(high)), size)):
            matrix[i, j] = max(0.0, min(high, j + 1) - max(low, j))
        matrix[i] /= matrix[i].sum()
    return matrix


def thumbnail(images: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """Area-averaged (N, C, side, side) thumbnails of (N, C, H, W) images (values stay in their range)."""
    images = np.asarray(images, dtype=np.float32)
    rows = _area_matrix(images.shape[2], side)
    cols = _area_matrix(images.shape[3], side)
    return np.einsum("ih,nchw,jw->ncij", rows, images, cols, optimize=True)


@dataclass(frozen=True)
class AuditTarget:
    """How probe items become the audit's regression target (see the module docstring).

    ``kind``: "pixels", "thumbnail" or "standardised"; ``name`` says it in words for
    the report; ``values`` is the target's size per sample.
    """

    kind: str
    name: str
    values: int
    side: int = 0  # thumbnail side
    mean: np.ndarray | None = None  # per-feature mean of the probe (standardised)
    std: np.ndarray | None = None  # per-feature standard deviation of the probe (standardised)
    bound: float = 1.0  # |z| mapped to the edges of [0, 1] (standardised)

    @property
    def is_vector(self) -> bool:
        return self.kind == "standardised"

    def encode(self, items: np.ndarray) -> np.ndarray:
        """Targets (N, values), float64 in [0, 1] (vectors: ``0.5 + z / (2 bound)``, one affine map for all items)."""
        items = np.asarray(items)
        n = len(items)
        if self.kind == "pixels":
            return items.reshape(n, -1).astype(np.float64)
        if self.kind == "thumbnail":
            return thumbnail(items, self.side).reshape(n, -1).astype(np.float64)
        z = (items.reshape(n, -1).astype(np.float64) - self.mean) / self.std
        return 0.5 + z / (2.0 * self.bound)

    def augment(
        self, items: np.ndarray, copies: int, rng: np.random.Generator, settings: AugmentSettings | None = None
    ) -> np.ndarray:
        """``copies`` augmented versions of each item: (copies, N, ...) float32."""
        if not self.is_vector:
            return augment(items, copies, rng, settings)
        settings = settings or AugmentSettings()
        items = np.asarray(items, dtype=np.float32)
        n = len(items)
        flat = items.reshape(n, -1)
        std = self.std.astype(np.float32)
        out = np.empty((copies, n, flat.shape[1]), dtype=np.float32)
        for c in range(copies):
            noise = rng.standard_normal(flat.shape).astype(np.float32) * (settings.noise * _VECTOR_NOISE_FACTOR) * std
            weight = rng.uniform(0.0, settings.mixup, size=(n, 1)).astype(np.float32)
            partner = flat[rng.permutation(n)]
            out[c] = (1.0 - weight) * flat + weight * partner + noise
        return out.reshape((copies,) + items.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "values": self.values}


def audit_target(items: np.ndarray, *, max_values: int = DEFAULT_MAX_VALUES) -> AuditTarget:
    """The target for these probe items: pixels, a thumbnail (large images), or standardised features.

    ``items`` are (N, C, H, W) images in [0, 1], or (N, F) / (N, T, F) features.
    """
    items = np.asarray(items)
    if items.ndim == 4:
        c, h, w = items.shape[1:]
        if c * h * w <= max_values:
            return AuditTarget("pixels", f"pixels ({c}x{h}x{w})", c * h * w)
        side = THUMBNAIL_SIDE
        return AuditTarget("thumbnail", f"{side}x{side} thumbnail of the {c}x{h}x{w} image", c * side * side, side=side)
    flat = items.reshape(len(items), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature: nothing to reconstruct, z = 0
    shape = "x".join(map(str, items.shape[1:]))
    # augmented copies are convex mixes plus a little noise: they stay within the probe's |z| plus a margin
    bound = float(np.abs((flat - mean) / std).max()) + 3.0 if flat.size else 1.0
    return AuditTarget("standardised", f"standardised features ({shape})", flat.shape[1], mean=mean, std=std, bound=bound)
