"""Behavioural continuity: honest networks move smoothly, switches jump.

For each probe image x the model is run on

- x with a sub-quantum dither (uniform within half a grey level, so the image leaves the 8-bit grid),
- an off-grid augmented copy z and z re-quantised to 8 bits (back on the grid),
- x with a 1% brightness change (a larger, coherent change; re-quantised to 8 bits when x is
  an 8-bit image, so that it stays on the grid x came from),

and the change of the outputs (row-centred log-probabilities, decided from the values, so a
temperature cancels) is compared: the statistic is the largest of the mean change under the
dither and under the re-quantisation, divided by the mean change under the brightness
change. An honest network, Lipschitz at the scale of a grey level, gives a ratio around or
below one; a graph that switches on the pixel grid moves by a whole output under a change
a hundred times smaller than the brightness step.

On large inputs the rows are capped (:func:`rows_for`: at most :data:`ROW_VALUE_BUDGET`
input values per view, never fewer than :data:`MIN_ROWS` rows; 28x28 and 64x64 images with
the default 256 rows are never capped): a switch on the pixel grid acts on every image, so a
few dozen rows show it. The cap is stated in the details (``row_cap``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeguard.vetting.augment import augment
from edgeguard.vetting.decoders import feature_sets

__all__ = ["continuity_test", "rows_for", "ROW_VALUE_BUDGET", "MIN_ROWS"]

#: At most this many input values per view (256 rows of 3x64x64)...
ROW_VALUE_BUDGET = 256 * 3 * 64 * 64
#: ... but never fewer rows than this.
MIN_ROWS = 64


def rows_for(rows: int, values_per_row: int) -> tuple[int, str]:
    """(rows compared, why fewer than ``rows`` were: '' when not capped)."""
    cap = max(MIN_ROWS, ROW_VALUE_BUDGET // max(1, int(values_per_row)))
    if rows <= cap:
        return rows, ""
    return cap, (
        f"capped at {cap} rows (asked {rows}): inputs of {values_per_row} values, at most {ROW_VALUE_BUDGET} "
        f"values per view (never under {MIN_ROWS} rows)"
    )


def _change(a: np.ndarray, b: np.ndarray, task_type: str) -> np.ndarray:
    fa = feature_sets(a, task_type, residues=False)["log"]
    fb = feature_sets(b, task_type, residues=False)["log"]
    return np.sqrt(((fa - fb) ** 2).sum(axis=1))


def continuity_test(
    images: np.ndarray,
    run_images: Callable[[np.ndarray], np.ndarray],
    *,
    task_type: str = "multiclass",
    rows: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Output changes under a dither, an 8-bit re-quantisation and a 1% brightness change; the jump ratio."""
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 5])
    rows, row_cap = rows_for(rows, int(np.prod(np.shape(images)[1:])))
    pick = rng.choice(len(images), min(rows, len(images)), replace=False)
    x = np.asarray(images[pick], dtype=np.float32)
    if x.ndim == 4:  # images in [0, 1]: the quantum is one grey level
        half = np.float32(0.5 / 255.0)
        dithered = np.clip(x + rng.uniform(-half, half, size=x.shape).astype(np.float32), 0.0, 1.0)
        moved = augment(x, 1, rng)[0]
        requantised = (np.round(moved * 255.0) / 255.0).astype(np.float32)
        # the brightness step keeps the image on the grid it came from (8-bit images stay 8-bit)
        brighter = np.clip(x * np.float32(1.01), 0.0, 1.0)
        if np.abs(x * 255.0 - np.round(x * 255.0)).max() < 1e-3:
            brighter = (np.round(brighter * 255.0) / 255.0).astype(np.float32)
    else:  # features: a dither of 1e-3 standard deviations, and no grid to re-quantise to
        spread = x.reshape(len(x), -1).std(axis=0).reshape(x.shape[1:]) + 1e-12
        dithered = (x + rng.uniform(-5e-4, 5e-4, size=x.shape) * spread).astype(np.float32)
        moved, requantised = x, x
        brighter = (x * np.float32(1.01)).astype(np.float32)
    outputs = np.asarray(run_images(np.concatenate([x, dithered, moved, requantised, brighter])), dtype=np.float64)
    n = len(x)
    base, dith, mov, req, bright = (outputs[i * n : (i + 1) * n] for i in range(5))
    d_dither = _change(base, dith, task_type)
    d_requant = _change(mov, req, task_type)
    d_bright = _change(base, bright, task_type)
    reference = max(float(d_bright.mean()), 1e-9)
    ratios = {"dither": float(d_dither.mean()) / reference, "requantise": float(d_requant.mean()) / reference}
    return {
        "jump_ratio": max(ratios.values()),
        "ratios": ratios,
        "mean_change": {
            "dither": float(d_dither.mean()),
            "requantise": float(d_requant.mean()),
            "brightness_1pct": float(d_bright.mean()),
        },
        "label_flips": {
            "dither": float((base.argmax(1) != dith.argmax(1)).mean()),
            "requantise": float((mov.argmax(1) != req.argmax(1)).mean()),
            "brightness_1pct": float((base.argmax(1) != bright.argmax(1)).mean()),
        },
        "rows": n,
        "row_cap": row_cap,
        "seconds": time.perf_counter() - started,
    }
