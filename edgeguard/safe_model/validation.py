"""SafeModel's input validation: dtype, shape, batch size and input range, with a fix in every message.

The model's input is a float32 vector (N, F), sequence (N, T, F), image (N, C, H, W) /
(N, H, W, C), or a uint8 image (:mod:`edgeguard.model.signature`); every message says
"expected X, got Y" and the fix for that kind of input. A graph with a fixed batch size takes
any batch: SafeModel cuts it (:func:`edgeguard.model.signature.fixed_batches`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import InvalidInputError

__all__ = ["InputValidator", "shape_message", "dtype_message", "range_message"]

@dataclass(frozen=True)
class InputValidator:
    """SafeModel's check of a batch before it runs: samples of ``sample_shape`` and ``dtype`` with values
    in ``[low, high]`` (``-inf, inf``: any finite value; uint8: no range check), in batches the vet allows.
    (The graph's own input, as read from the file, is :class:`edgeguard.model.signature.InputSpec`.)

    ``max_bits`` is ``high``'s float32 bit pattern when the range is ``[0, high]`` (one unsigned
    reduction then checks the range, NaN and inf at once), else None.
    """

    sample_shape: tuple[int, ...]
    low: float
    high: float
    fixed_batch: int | None = None  # the graph's fixed batch size, None when dynamic (informational)
    max_rows: int = sys.maxsize  # with a vet report: the largest batch size the vet checked
    allow_float64: bool = False
    dtype: str = "float32"  # "float32" | "uint8"
    kind: str = "image"  # "image" | "vector" | "sequence"
    layout: str | None = "NCHW"  # images: "NCHW" | "NHWC"
    max_bits: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        low, high = self.low, self.high
        max_bits = (
            int(np.array(high, dtype=np.float32).view(np.uint32))
            if self.dtype == "float32" and low == 0.0 and 0 < high < math.inf and float(np.float32(high)) == high
            else None
        )
        object.__setattr__(self, "max_bits", max_bits)

    @property
    def unchecked(self) -> bool:
        """Integer (uint8) inputs: the dtype bounds the values, no range check."""
        return self.dtype != "float32"

    def validate(self, x: Any, *, check_range: bool = True) -> tuple[np.ndarray, bool]:
        """(the batch as a contiguous array of the model's dtype, whether ``x`` was one sample).

        ``check_range=False``: leave the value range (and NaN, inf) to the fused graph, which
        checks it anyway and releases its sentinel on failure (SafeModel then calls this with
        the check on, to write the error). Dtype, shape and batch size are always checked here.
        """
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
        if x.dtype != self.dtype:
            if x.dtype == np.float64 and self.allow_float64 and self.dtype == "float32":
                x = x.astype(np.float32)
            else:
                raise InvalidInputError(self.dtype_message(x.dtype))
        shape = x.shape
        if len(shape) == len(self.sample_shape) + 1 and shape[1:] == self.sample_shape:
            single = False
        elif shape == self.sample_shape:
            x, single = x[None], True
        else:
            raise InvalidInputError(self.shape_message(shape))
        rows = x.shape[0]
        if rows == 0:
            raise InvalidInputError("expected at least one sample, got an empty batch (N = 0)")
        if rows > self.max_rows:
            raise InvalidInputError(
                f"expected batches of at most {self.max_rows} rows (the largest batch size the vet checked for "
                f"consistency), got {rows}; split the batch into chunks of {self.max_rows}"
            )
        if check_range and not self.in_range(x):
            raise InvalidInputError(self.range_message(x))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x, single

    def in_range(self, x: np.ndarray) -> bool:
        """Every value of ``x`` (the model's dtype) lies in ``[low, high]``: no NaN, no inf."""
        if self.unchecked:
            in_range = True
        elif self.max_bits is not None:
            # One reduction for a [0, high] range: read as unsigned integers, every float32 in [+0, high]
            # is <= high's bit pattern, while negatives (sign bit), NaN and inf are all above it.
            # (-0.0 fails here and passes the exact check below.)
            in_range = x.view(np.uint32).max() <= self.max_bits or (self.low <= x.min() and x.max() <= self.high)
        elif math.isinf(self.low) and math.isinf(self.high):
            in_range = bool(np.isfinite(x).all())  # features without a declared range: finite values
        else:
            in_range = self.low <= x.min() and x.max() <= self.high  # False for NaN as well
        return bool(in_range)

    def dtype_message(self, dtype: np.dtype) -> str:
        return dtype_message(dtype, self.dtype, self.kind, self.low, self.high)

    def shape_message(self, shape: tuple[int, ...]) -> str:
        return shape_message(shape, self.sample_shape, self.kind, self.layout)

    def range_message(self, x: np.ndarray) -> str:
        return range_message(x, self.low, self.high, self.kind)


def describe_sample(kind: str, layout: str | None) -> str:
    if kind == "vector":
        return "feature vectors"
    if kind == "sequence":
        return "sequences (T steps of F features)"
    return f"images ({layout or 'NCHW'})"


def shape_message(shape: tuple[int, ...], sample: tuple[int, ...], kind: str, layout: str | None) -> str:
    """Why an array of ``shape`` is not a batch (N, *sample) nor one sample, and the fix."""
    shape = tuple(shape)
    expected = f"a batch (N, {', '.join(map(str, sample))}) or one sample {sample} of {describe_sample(kind, layout)}"
    if kind == "vector":
        (features,) = sample
        if len(shape) == 2 and shape[1] != features:
            hint = f"the model takes {features} features per row, got {shape[1]}; select the model's columns, in its order"
        elif len(shape) == 1 and shape[0] % features == 0 and shape[0] > features:
            hint = f"reshape to rows of {features} with x.reshape(-1, {features})"
        else:
            hint = f"give rows of {features} features"
        return f"expected {expected}, got shape {shape}; {hint}"
    if kind == "sequence":
        return f"expected {expected}, got shape {shape}; give windows of {sample[0]} steps of {sample[1]} features"
    if layout == "NHWC":
        height, width, channels = sample
        if len(shape) == 4 and shape[1] == channels and tuple(shape[2:]) == (height, width):
            hint = "the channels look first, the model takes them last: use x.transpose(0, 2, 3, 1)"
        elif tuple(shape) == (height, width) and channels == 1:
            hint = "add the channel axis with x[..., None] (one sample)"
        else:
            hint = f"resize the images to {height}x{width} with {channels} channel(s), channels last"
        return f"expected {expected}, got shape {shape}; {hint}"
    channels, height, width = sample
    if tuple(shape) == sample[1:]:
        hint = "add the channel axis with x[None] (one sample)"
    elif len(shape) == 3 and tuple(shape[1:]) == sample[1:] and channels == 1:
        hint = "add the channel axis with x[:, None] (a batch of single-channel images)"
    elif len(shape) == 4 and shape[-1] == channels and tuple(shape[1:3]) == sample[1:]:
        hint = "the channels look last: use x.transpose(0, 3, 1, 2)"
    elif len(shape) == 3 and shape[-1] == channels and tuple(shape[:2]) == sample[1:]:
        hint = "the channels look last: use x.transpose(2, 0, 1)"
    else:
        hint = f"resize the images to {height}x{width} with {channels} channel(s)"
    return f"expected {expected}, got shape {shape}; {hint}"


def dtype_message(dtype: np.dtype, wanted: str, kind: str, low: float | None, high: float | None) -> str:
    """Why ``dtype`` is refused for a model taking ``wanted`` ("float32" | "uint8") inputs."""
    if wanted == "uint8":
        hint = (
            "convert 8-bit images with x.astype(np.uint8) (values 0..255; the model scales them itself)"
            if dtype.kind in "iuf"
            else "convert with x.astype(np.uint8)"
        )
        return f"expected uint8 pixels (the model's input type), got {dtype}; {hint}"
    what = "pixels" if kind == "image" else "features"
    if dtype.kind in "iub" and kind == "image" and (low, high) == (0.0, 1.0):
        hint = f"convert with x.astype(np.float32) / 255 for 8-bit images (the model expects [{low:g}, {high:g}])"
    elif dtype == np.float64:
        hint = "convert with x.astype(np.float32), or build SafeModel(..., allow_float64=True)"
    else:
        hint = "convert with x.astype(np.float32)"
    return f"expected float32 {what}, got {dtype}; {hint}"


def range_message(x: np.ndarray, low: float | None, high: float | None, kind: str) -> str:
    """Why the values of ``x`` are refused (NaN, inf, or outside the declared input range)."""
    what = "pixel values" if kind == "image" else "feature values"
    nan = int(np.isnan(x).sum())
    if nan:
        return f"expected finite {what}, got {nan} NaN value(s); replace or drop them before predict"
    inf = int(np.isinf(x).sum())
    if inf:
        return f"expected finite {what}, got {inf} infinite value(s); replace or drop them before predict"
    got_low, got_high = float(x.min()), float(x.max())
    if kind == "image" and got_low >= 0 and 1 < got_high <= 255 and (low, high) == (0.0, 1.0):
        hint = "scale 8-bit images with x / 255"
    else:
        hint = f"rescale the inputs to [{low:g}, {high:g}]"
    declared = "pixel_range" if kind == "image" else "input range"
    return (
        f"expected {what} in [{low:g}, {high:g}] (the model's declared {declared}), got values in "
        f"[{got_low:g}, {got_high:g}]; {hint}"
    )
