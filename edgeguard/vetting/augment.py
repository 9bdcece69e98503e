"""In-domain augmentation of probe images: free extra queries for the leakage audit.

The user runs the model locally, so every query is free. The leakage audit fits its
decoder on randomly shifted, cropped, rescaled, noised and mixed-up copies of the probe
images (no labels needed) and scores it on fresh copies, so a model that memorised the
public test split cannot recognise the probe. The randomness comes from the OS (a new
draw per run) unless a seed is given; the seed used is recorded in the report.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from edgeguard.errors import ConfigError

__all__ = ["AugmentSettings", "augment", "draw_seed"]


@dataclass(frozen=True)
class AugmentSettings:
    """Strength of the augmentations (kept mild: the copies must stay in-domain)."""

    max_shift: int = 2  # pixels, both axes (a random crop of the zero-padded image)
    scale: tuple[float, float] = (0.85, 1.1)  # brightness factor
    noise: float = 0.03  # largest standard deviation of the additive Gaussian noise
    mixup: float = 0.15  # largest weight of a second random probe image (mixup)

    def __post_init__(self) -> None:
        if self.max_shift < 0 or self.noise < 0 or not 0 <= self.mixup < 0.5:
            raise ConfigError(
                f"expected max_shift >= 0, noise >= 0 and mixup in [0, 0.5), got "
                f"{self.max_shift}, {self.noise}, {self.mixup}"
            )


def draw_seed() -> int:
    """A fresh 63-bit seed from the OS CSPRNG."""
    return secrets.randbits(63)


def _shifted(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, s: int) -> np.ndarray:
    """Each image cropped from its zero-padded copy at (dy, dx): the same pixels as fancy indexing,
    by one slice per distinct shift (a few dozen copies instead of a gather over every pixel)."""
    if not s:
        return images.copy()
    height, width = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
    out = np.empty_like(images)
    for shift in np.unique(dy * (2 * s + 1) + dx):
        a, b = divmod(int(shift), 2 * s + 1)
        index = np.flatnonzero((dy == a) & (dx == b))
        out[index] = padded[index, :, a : a + height, b : b + width]
    return out


def augment(
    images: np.ndarray, copies: int, rng: np.random.Generator, settings: AugmentSettings | None = None
) -> np.ndarray:
    """``copies`` augmented versions of each image: shape (copies, N, C, H, W), float32 in [0, 1].

    Each copy: a random shift (crop of the zero-padded image), a brightness factor, mixup with
    a random probe image, Gaussian noise, clipped to [0, 1]; computed in place (a few
    temporaries of one copy's size, whatever the image size).
    """
    settings = settings or AugmentSettings()
    images = np.asarray(images, dtype=np.float32)
    n = images.shape[0]
    s = settings.max_shift
    out = np.empty((copies,) + images.shape, dtype=np.float32)
    for c in range(copies):
        dy = rng.integers(0, 2 * s + 1, size=n) if s else np.zeros(n, dtype=int)
        dx = rng.integers(0, 2 * s + 1, size=n) if s else np.zeros(n, dtype=int)
        mixed = _shifted(images, dy, dx, s)
        factor = rng.uniform(*settings.scale, size=(n, 1, 1, 1)).astype(np.float32)
        weight = rng.uniform(0.0, settings.mixup, size=(n, 1, 1, 1)).astype(np.float32)
        mixed *= (1.0 - weight) * factor
        partner = images[rng.integers(0, n, size=n)]
        partner *= weight
        mixed += partner
        del partner
        sigma = rng.uniform(0.0, settings.noise, size=(n, 1, 1, 1)).astype(np.float32)
        noise = rng.standard_normal(images.shape, dtype=np.float32)
        noise *= sigma
        mixed += noise
        del noise
        np.clip(mixed, 0.0, 1.0, out=out[c])
    return out
