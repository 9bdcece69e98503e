"""The leakage audit's large-input path: its cost grows gently with the input size.

Inputs of at most :data:`LARGE_INPUT_VALUES` values per item (28x28 grey, 64x64 RGB, any
vector) keep the exact audit of :mod:`edgeguard.vetting.audit`, value for value. Larger images
(e.g. 224x224 RGB) take this path, stated in the leakage test's details (:func:`describe`):

- each augmented view is built in chunks of :data:`CHUNK_ROWS` images, and each chunk is
  augmented, queried and encoded to its (fixed-size) thumbnail target at once, then dropped:
  the full-size copies are augmented once per audited model and never held all together;
- only the rows the audit reads are queried: every scored row, and of the fitting copies the
  rows its seeded ``max_fit`` draw keeps (the others were drawn and never read before either):
  the statistics are the ones a query of every row would give;
- each image is augmented by :func:`augment_rows` with its own generator, seeded by
  ``(augment_seed, copy, image)``: the same shifts, brightness, mixup and noise *strengths* as
  :class:`~edgeguard.vetting.augment.AugmentSettings`, the noise drawn from 8-bit uniform
  integers (uniform, zero mean, the same per-image standard deviation as the Gaussian of the
  small path) instead of Gaussian draws (several times cheaper per value);
- the decoders' principal basis of the (wide) thumbnail targets is computed from the fitting
  rows' Gram matrix (rows x rows) instead of the full covariance (values x values): the same
  leading components (exact in arithmetic; the fitting rows are fewer than the target's values),
  up to signs and rounding.

Everything is seeded and deterministic; no time-based cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeguard.vetting.augment import AugmentSettings

__all__ = ["LARGE_INPUT_VALUES", "CHUNK_ROWS", "is_large", "augment_rows", "gram_basis", "describe"]

#: Inputs with more values per item than this (3x64x64) take the large-input path.
LARGE_INPUT_VALUES = 3 * 64 * 64
#: Images augmented, queried and encoded together on the large-input path.
CHUNK_ROWS = 64
#: Standard deviation of (k - 127.5) for k uniform on 0..255: the integer noise is scaled by its inverse.
_UNIFORM_STD = float(np.sqrt((256.0**2 - 1.0) / 12.0))


def is_large(items: np.ndarray) -> bool:
    """Whether these probe items (N, ...) are images that take the large-input path."""
    items = np.asarray(items)
    return items.ndim == 4 and int(np.prod(items.shape[1:])) > LARGE_INPUT_VALUES


def augment_rows(
    items: np.ndarray, index: np.ndarray, seed: Sequence[int], on_grid: bool, settings: AugmentSettings | None = None
) -> np.ndarray:
    """One augmented copy of ``items[index]`` (N, C, H, W) float32 in [0, 1] (on the 8-bit grid when ``on_grid``),
    each image from its own generator seeded by ``(*seed, image index)`` (so any subset of rows is exactly what the
    whole copy holds there): a random shift (zeros shifted in), a brightness factor, mixup with a random probe image
    (of the whole probe), uniform noise of a random standard deviation up to ``settings.noise``, clipped."""
    settings = settings or AugmentSettings()
    height, width = items.shape[2], items.shape[3]
    s = settings.max_shift
    out = np.zeros((len(index),) + items.shape[1:], dtype=np.float32)
    for row, i in enumerate(np.asarray(index, dtype=np.int64)):
        rng = np.random.default_rng([*seed, int(i)])
        a, b = (int(v) for v in rng.integers(-s, s + 1, size=2)) if s else (0, 0)
        factor, weight, sigma = rng.uniform(
            [settings.scale[0], 0.0, 0.0], [settings.scale[1], settings.mixup, settings.noise]
        ).astype(np.float32)
        partner = int(rng.integers(0, len(items)))
        image = out[row]  # the image moved by (a, b), zeros shifted in: slices, no padded copy
        image[:, max(0, -a) : height - max(0, a), max(0, -b) : width - max(0, b)] = items[
            i, :, max(0, a) : height - max(0, -a), max(0, b) : width - max(0, -b)
        ]
        image *= (1.0 - weight) * factor
        image += weight * items[partner].astype(np.float32)
        noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8).astype(np.float32)
        noise -= 127.5
        noise *= sigma / _UNIFORM_STD
        image += noise
    np.clip(out, 0.0, 1.0, out=out)
    if on_grid:
        out *= 255.0
        np.round(out, out=out)
        out /= 255.0
    return out


def gram_basis(fit_images: np.ndarray, components: int = 48, rows: int = 1000) -> np.ndarray:
    """The leading principal directions (values x components) of the first ``rows`` fitting images, from their
    Gram matrix: the same directions as :func:`edgeguard.vetting.decoders.principal_basis`, at a cost that grows
    with the rows, not the target's width."""
    flat = fit_images.reshape(len(fit_images), -1)[:rows]
    centred = flat - flat.mean(axis=0)
    values, vectors = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(values)[::-1][: min(components, len(values))]
    scale = np.sqrt(np.maximum(values[order], 0.0))
    keep = scale > scale[0] * 1e-10 if len(scale) and scale[0] > 0 else np.zeros(len(order), bool)
    basis = np.zeros((flat.shape[1], components))
    basis[:, : int(keep.sum())] = (centred.T @ vectors[:, order[keep]]) / scale[keep]
    return basis


def describe(items: np.ndarray) -> str:
    """The large-input path in words, for the leakage test's details."""
    shape = "x".join(map(str, np.asarray(items).shape[1:]))
    return (
        f"large input ({shape}: more than {LARGE_INPUT_VALUES} values): views augmented, queried and encoded in "
        f"chunks of {CHUNK_ROWS} images (seeded per copy and image; only the rows the audit reads), uniform 8-bit integer noise of the same standard "
        "deviation as the Gaussian, decoders' principal basis from the fitting rows' Gram matrix "
        "(edgeguard.vetting.large_inputs)"
    )
