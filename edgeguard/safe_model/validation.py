"""SafeModel's input validation: dtype, shape, batch size and pixel range, with a fix in every message."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import InvalidInputError

__all__ = ["InputSpec"]

_FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class InputSpec:
    """What a model accepts: ``(C, H, W)`` samples of float32 in ``[low, high]``, in batches the graph and vet allow.

    ``max_bits`` is ``high``'s float32 bit pattern when the range is ``[0, high]`` (one unsigned
    reduction then checks the range, NaN and inf at once), else None.
    """

    sample_shape: tuple[int, ...]
    low: float
    high: float
    fixed_batch: int | None = None  # the graph's fixed batch size, None when dynamic
    max_rows: int = sys.maxsize  # with a vet report: the largest batch size the vet checked
    allow_float64: bool = False
    max_bits: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        low, high = self.low, self.high
        max_bits = (
            int(np.array(high, dtype=np.float32).view(np.uint32))
            if low == 0.0 and high > 0 and float(np.float32(high)) == high
            else None
        )
        object.__setattr__(self, "max_bits", max_bits)

    def validate(self, x: Any) -> tuple[np.ndarray, bool]:
        if type(x) is not np.ndarray and not isinstance(x, np.ndarray):
            raise InvalidInputError(
                f"expected a numpy array, got {type(x).__name__}; convert with np.asarray(x, dtype=np.float32)"
            )
        if type(x) is not np.ndarray:
            if isinstance(x, np.ma.MaskedArray):
                raise InvalidInputError(
                    "expected a plain numpy array, got a masked array (masked values would skip the input checks); "
                    "fill it first with x.filled(0.0)"
                )
            x = x.view(np.ndarray)  # a subclass's own min/max/astype must not take part in the checks
        if x.dtype is not _FLOAT32 and x.dtype != _FLOAT32:
            if x.dtype == np.float64 and self.allow_float64:
                x = x.astype(np.float32)
            else:
                raise InvalidInputError(self.dtype_message(x.dtype))
        shape = x.shape
        if len(shape) == 4 and shape[1:] == self.sample_shape:
            single = False
        elif shape == self.sample_shape:
            x, single = x[None], True
        else:
            raise InvalidInputError(self.shape_message(shape))
        rows = x.shape[0]
        if rows == 0:
            raise InvalidInputError("expected at least one sample, got an empty batch (N = 0)")
        if self.fixed_batch is not None and rows != self.fixed_batch:
            raise InvalidInputError(
                f"expected batches of exactly {self.fixed_batch} (the graph's fixed batch size), got {rows}; "
                "split the batch, or re-export the model with a dynamic batch axis"
            )
        if rows > self.max_rows:
            raise InvalidInputError(
                f"expected batches of at most {self.max_rows} rows (the largest batch size the vet checked for "
                f"consistency), got {rows}; split the batch into chunks of {self.max_rows}"
            )
        if self.max_bits is not None:
            # One reduction for a [0, high] range: read as unsigned integers, every float32 in [+0, high]
            # is <= high's bit pattern, while negatives (sign bit), NaN and inf are all above it.
            # (-0.0 fails here and passes the exact check below.)
            in_range = x.view(np.uint32).max() <= self.max_bits or (self.low <= x.min() and x.max() <= self.high)
        else:
            in_range = self.low <= x.min() and x.max() <= self.high  # False for NaN as well
        if not in_range:
            raise InvalidInputError(self.range_message(x))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x, single

    def dtype_message(self, dtype: np.dtype) -> str:
        low, high = self.low, self.high
        if dtype.kind in "iub":
            hint = f"convert with x.astype(np.float32) / 255 for 8-bit images (the model expects [{low:g}, {high:g}])"
        elif dtype == np.float64:
            hint = "convert with x.astype(np.float32), or build SafeModel(..., allow_float64=True)"
        else:
            hint = "convert with x.astype(np.float32)"
        return f"expected float32 pixels, got {dtype}; {hint}"

    def shape_message(self, shape: tuple[int, ...]) -> str:
        sample = self.sample_shape
        expected = f"a batch (N, {', '.join(map(str, sample))}) or one sample {sample}"
        channels = sample[0]
        if tuple(shape) == sample[1:]:
            hint = "add the channel axis with x[None] (one sample)"
        elif len(shape) == 3 and tuple(shape[1:]) == sample[1:] and channels == 1:
            hint = "add the channel axis with x[:, None] (a batch of single-channel images)"
        elif len(shape) == 4 and shape[-1] == channels and tuple(shape[1:3]) == sample[1:]:
            hint = "the channels look last: use x.transpose(0, 3, 1, 2)"
        elif len(shape) == 3 and shape[-1] == channels and tuple(shape[:2]) == sample[1:]:
            hint = "the channels look last: use x.transpose(2, 0, 1)"
        else:
            hint = f"resize the images to {sample[1]}x{sample[2]} with {channels} channel(s)"
        return f"expected {expected}, got shape {tuple(shape)}; {hint}"

    def range_message(self, x: np.ndarray) -> str:
        nan = int(np.isnan(x).sum())
        if nan:
            return f"expected finite pixel values, got {nan} NaN value(s); replace or drop them before predict"
        inf = int(np.isinf(x).sum())
        if inf:
            return f"expected finite pixel values, got {inf} infinite value(s); replace or drop them before predict"
        low, high = self.low, self.high
        got_low, got_high = float(x.min()), float(x.max())
        hint = (
            "scale 8-bit images with x / 255"
            if got_low >= 0 and 1 < got_high <= 255 and (low, high) == (0.0, 1.0)
            else f"rescale the images to [{low:g}, {high:g}]"
        )
        return (
            f"expected pixel values in [{low:g}, {high:g}] (the model's declared pixel_range), got values in "
            f"[{got_low:g}, {got_high:g}]; {hint}"
        )
