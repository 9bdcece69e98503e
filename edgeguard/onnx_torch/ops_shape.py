"""Reductions, shape arithmetic, indexing and constants of the interpreter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgeguard.onnx_torch.ops_conv import torch_pads
from edgeguard.onnx_torch.registry import (
    ints,
    norm_axis,
    onnx_op,
)

__all__ = ["constant_value"]

# ------------------------------------------------------------------------ reduce


@onnx_op(
    "ReduceMean", "ReduceSum",
    attrs={"axes": None, "keepdims": 1, "noop_with_empty_axes": 0},
    nondiff=(1,),
)  # fmt: skip
def _reduce(n, x, axes=None):
    axes = list(n.attrs["axes"] or []) or ints(axes)  # attribute (<18) or input (>=18)
    if not axes:
        if n.attrs["noop_with_empty_axes"]:
            return x
        axes = list(range(x.dim()))
    keep = bool(n.attrs["keepdims"])
    if n.op == "ReduceMean":
        return torch.mean(x, dim=axes, keepdim=keep)
    return torch.sum(x, dim=axes, keepdim=keep).to(x.dtype)


# ------------------------------------------------------------- shapes & indexing


@onnx_op("Flatten", attrs={"axis": 1})
def _flatten(n, x):
    axis = norm_axis(n.attrs["axis"], x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@onnx_op("Reshape", attrs={"allowzero": 0}, nondiff=(1,))
def _reshape(n, x, shape):
    shape = ints(shape)
    if not n.attrs["allowzero"]:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@onnx_op("Transpose", attrs={"perm": None})
def _transpose(n, x):
    perm = n.attrs["perm"]
    return x.permute(*(reversed(range(x.dim())) if perm is None else perm))


@onnx_op("Concat", attrs={"axis": None})
def _concat(n, *xs):
    return torch.cat(xs, dim=n.attrs["axis"])


@onnx_op("Shape", attrs={"start": 0, "end": None}, nondiff=(0,))
def _shape(n, x):
    dims = list(x.shape)[n.attrs["start"] : n.attrs["end"]]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@onnx_op("Gather", attrs={"axis": 0}, nondiff=(1,))
def _gather(n, x, indices):
    axis = norm_axis(n.attrs["axis"], x.dim())
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


@onnx_op("Unsqueeze", nondiff=(1,))
def _unsqueeze(n, x, axes):
    axes = ints(axes)
    rank = x.dim() + len(axes)
    for axis in sorted(norm_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@onnx_op("Squeeze", nondiff=(1,))
def _squeeze(n, x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(norm_axis(a, x.dim()) for a in ints(axes)))


@onnx_op("Slice", nondiff=(1, 2, 3, 4))
def _slice(n, x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, x.dim())
        size = x.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
            index = [slice(None)] * axis + [slice(start, end, step)]
            x = x[tuple(index)]
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
            idx = torch.arange(start, end, step, device=x.device)
            x = x.index_select(axis, idx)
    return x


def _check_pad(n):
    modes = ("constant", "reflect", "edge", "wrap") if n.opset >= 19 else ("constant", "reflect", "edge")
    if n.attrs["mode"] not in modes:
        raise n.fail(f"Pad mode one of {modes}", repr(n.attrs["mode"]))


def _index_pad(x, axis, head, tail, mode):
    """Reflect / edge / wrap padding of one axis by gathering indices."""
    if head < 0:
        x, head = x.narrow(axis, -head, x.shape[axis] + head), 0
    if tail < 0:
        x, tail = x.narrow(axis, 0, x.shape[axis] + tail), 0
    size = x.shape[axis]
    if head == tail == 0:
        return x
    idx = torch.arange(-head, size + tail, device=x.device)
    if mode == "edge" or (mode == "reflect" and size == 1):
        idx = idx.clamp(0, size - 1)
    elif mode == "wrap":
        idx = idx % size
    else:  # reflect, mirrored around the first and last elements
        period = 2 * (size - 1)
        idx = idx % period
        idx = torch.where(idx >= size, period - idx, idx)
    return x.index_select(axis, idx)


@onnx_op("Pad", attrs={"mode": "constant"}, nondiff=(1, 2, 3), check=_check_pad)
def _pad(n, x, pads, value=None, axes=None):
    pads = ints(pads)
    axes = [norm_axis(a, x.dim()) for a in ints(axes)] if axes is not None else list(range(x.dim()))
    heads = dict(zip(axes, pads[: len(axes)]))
    tails = dict(zip(axes, pads[len(axes) :]))
    mode = n.attrs["mode"]
    if mode == "constant":
        fill = value.reshape(-1)[0].item() if value is not None and value.numel() else 0
        dims = range(x.dim())
        return F.pad(x, torch_pads([heads.get(d, 0) for d in dims], [tails.get(d, 0) for d in dims]), value=fill)
    for axis in axes:
        x = _index_pad(x, axis, heads[axis], tails[axis], mode)
    return x


@onnx_op("Expand", nondiff=(1,))
def _expand(n, x, shape):
    return x.expand(torch.broadcast_shapes(x.shape, tuple(ints(shape))))


# ------------------------------------------------------------------- constants


def _check_constant(n):
    given = [k for k, v in n.attrs.items() if v is not None]
    if len(given) != 1:
        raise n.fail("exactly one value attribute", f"{given}")


@onnx_op(
    "Constant",
    attrs=dict.fromkeys(("value", "value_float", "value_floats", "value_int", "value_ints")),
    check=_check_constant,
)
def constant_value(n):
    a = n.attrs
    if a["value"] is not None:
        return a["value"]
    if a["value_float"] is not None or a["value_floats"] is not None:
        v = a["value_float"] if a["value_float"] is not None else a["value_floats"]
        return torch.tensor(v, dtype=torch.float32)
    v = a["value_int"] if a["value_int"] is not None else a["value_ints"]
    return torch.tensor(v, dtype=torch.int64)


@onnx_op("ConstantOfShape", attrs={"value": None}, nondiff=(0,))
def _constant_of_shape(n, shape):
    value = n.attrs["value"]
    if value is None:
        value = torch.zeros(1)
    return torch.full(ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype, device=shape.device)


@onnx_op("Range", nondiff=(0, 1, 2))
def _range(n, start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)
