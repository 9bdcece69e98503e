"""A small, strict, differentiable ONNX-to-torch interpreter.

``to_torch(model)`` turns an ONNX classifier into an :class:`OnnxModule` (a
``torch.nn.Module``) that runs the graph node by node with torch operations, so
gradients flow through it and its weights can be fine-tuned.

Scope
    * Default-domain ONNX (``''`` / ``'ai.onnx'``) at opset 13 to 21, the operators in
      :data:`SUPPORTED_OPS` (CNN / ResNet / MLP classifiers as exported by both
      ``torch.onnx.export`` exporters), with 1 to 3 spatial dims for Conv and pools.
    * No control flow, no subgraphs, no local functions, no custom domains, no
      sparse tensors; tensor element types: float16/32/64, int8/16/32/64, uint8, bool.

Guarantees
    * Strict: the whole graph is checked by :func:`to_torch`, before any forward. The
      first unsupported operator, domain, opset or attribute value raises
      :class:`~edgeguard.errors.UnsupportedOpError` ("expected X, got Y" and what to do);
      an unreadable or invalid model raises :class:`~edgeguard.errors.ModelLoadError`.
      External data must lie inside the model's folder
      (:class:`~edgeguard.errors.UnsafeModelError` otherwise).
    * Every floating-point initializer is a trainable ``nn.Parameter``, unless it is only
      consumed as a non-differentiable input (shapes, axes, pads, starts, Clip bounds,
      Pow exponents, BatchNormalization running mean/var...), in which case it is a
      buffer, like integer initializers and the values of Constant nodes (computed once).
      ``module.parameter_onnx_names`` / ``module.buffer_onnx_names`` map the registered
      (sanitised) names back to the ONNX names.
    * BatchNormalization always uses its running statistics (inference mode), even under
      ``module.train()``; its scale and bias are trainable, its statistics never get
      gradients. Dropout is the identity.
    * Shape arithmetic (Shape, Gather, Concat... on int64) runs on torch tensors and
      reads values back with ``.tolist()``: fine in eager mode, not meant for tracing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import onnx
import onnx.external_data_helper
import onnx.numpy_helper
import torch
import torch.nn.functional as F

from edgeguard.errors import EdgeguardError, ModelLoadError, UnsupportedOpError
from edgeguard.model import load_proto

__all__ = ["SUPPORTED_OPS", "OnnxModule", "to_torch"]

MIN_OPSET, MAX_OPSET = 13, 21
_DEFAULT_DOMAINS = ("", "ai.onnx")
_HINT = "re-export the model with opset 13-21 using standard layers, or open an issue"

_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}
_DTYPE_NAMES = ", ".join(onnx.TensorProto.DataType.Name(t) for t in _DTYPES)


# --------------------------------------------------------------------------- nodes


class _Node:
    """One ONNX node with its attributes parsed and defaulted."""

    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "opset")

    def __init__(self, proto: onnx.NodeProto, index: int, opset: int) -> None:
        self.op = proto.op_type
        self.name = proto.name or f"#{index}"
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.opset = opset
        self.attrs: dict[str, Any] = {}

    def fail(self, expected: str, got: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"expected {expected}, got {got} ({self.op} node '{self.name}'); {_HINT}")


class _Op:
    __slots__ = ("fn", "attrs", "nondiff", "check")

    def __init__(self, fn, attrs, nondiff, check) -> None:
        self.fn, self.attrs, self.nondiff, self.check = fn, attrs, nondiff, check


#: op type -> implementation; filled by the @_op decorator below.
_OPS: dict[str, _Op] = {}


def _op(
    *names: str,
    attrs: dict[str, Any] | None = None,
    nondiff: Sequence[int] = (),
    check: Callable[[_Node], None] | None = None,
):
    """Register ``fn(node, *inputs)`` for ``names``.

    ``attrs`` lists the accepted attributes with their defaults (``None``: no default),
    ``nondiff`` the input positions that are never differentiated (shapes, axes...),
    ``check`` validates attribute values at construction time.
    """

    def register(fn):
        for name in names:
            _OPS[name] = _Op(fn, dict(attrs or {}), frozenset(nondiff), check)
        return fn

    return register


def _to_tensor(proto: onnx.TensorProto, what: str) -> torch.Tensor:
    if proto.data_type not in _DTYPES:
        raise UnsupportedOpError(
            f"expected tensor element type one of {_DTYPE_NAMES}, got "
            f"{onnx.TensorProto.DataType.Name(proto.data_type)} ({what}); {_HINT}"
        )
    if onnx.external_data_helper.uses_external_data(proto):
        raise ModelLoadError(
            f"expected tensor data loaded in the model, got external data for {what}; "
            "pass the model file path so its external data can be loaded"
        )
    array = onnx.numpy_helper.to_array(proto)
    return torch.from_numpy(array.copy()).to(_DTYPES[proto.data_type])


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------- elementwise & math


def _div(a, b):
    if a.dtype.is_floating_point or b.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div}
_UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Neg": torch.neg,
    "Abs": torch.abs, "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log,
    "Erf": torch.erf,
}  # fmt: skip


@_op(*_BINARY)
def _binary(n, a, b):
    return _BINARY[n.op](a, b)


@_op(*_UNARY)
def _unary(n, x):
    return _UNARY[n.op](x)


@_op("Identity")
def _identity(n, x):
    return x


@_op("Dropout", attrs={"seed": 0}, nondiff=(1, 2))
def _dropout(n, x, ratio=None, training_mode=None):
    if len(n.outputs) > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


@_op("LeakyRelu", attrs={"alpha": 0.01})
def _leaky_relu(n, x):
    return F.leaky_relu(x, n.attrs["alpha"])


@_op("Softmax", "LogSoftmax", attrs={"axis": -1})
def _softmax(n, x):
    fn = torch.softmax if n.op == "Softmax" else torch.log_softmax
    return fn(x, n.attrs["axis"])


@_op("Pow", nondiff=(1,))
def _pow(n, x, y):
    return torch.pow(x, y).to(x.dtype)


@_op("Max", "Min")
def _max_min(n, *xs):
    fn = torch.maximum if n.op == "Max" else torch.minimum
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


@_op("Clip", nondiff=(1, 2))
def _clip(n, x, lo=None, hi=None):
    if lo is None and hi is None:
        return x
    return torch.clamp(x, lo, hi)


@_op("Equal", nondiff=(0, 1))
def _equal(n, a, b):
    return torch.eq(a, b)


@_op("Where", nondiff=(0,))
def _where(n, cond, x, y):
    return torch.where(cond.bool(), x, y)


def _check_cast(n):
    to = n.attrs["to"]
    if to not in _DTYPES:
        name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() else str(to)
        raise n.fail(f"Cast 'to' one of {_DTYPE_NAMES}", name)


@_op("Cast", attrs={"to": None, "saturate": 1}, check=_check_cast)
def _cast(n, x):
    return x.to(_DTYPES[n.attrs["to"]])


@_op("CastLike", attrs={"saturate": 1}, nondiff=(1,))
def _cast_like(n, x, like):
    return x.to(like.dtype)


# ------------------------------------------------------------------ linear algebra


@_op("MatMul")
def _matmul(n, a, b):
    return torch.matmul(a, b)


@_op("Gemm", attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
def _gemm(n, a, b, c=None):
    at = n.attrs
    a = a.transpose(0, 1) if at["transA"] else a
    b = b.transpose(0, 1) if at["transB"] else b
    y = a @ b
    if at["alpha"] != 1.0:
        y = y * at["alpha"]
    if c is not None:
        y = y + (c if at["beta"] == 1.0 else c * at["beta"])
    return y


# -------------------------------------------------------------- conv, norm, pools

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
_CONV_ATTRS = {
    "auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
    "pads": None, "strides": None,
}  # fmt: skip
_POOL_ATTRS = {
    "auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None,
    "pads": None, "strides": None,
}  # fmt: skip


def _spatial(n, key, count, default):
    value = n.attrs[key]
    return [default] * count if value is None else list(value)


def _same_pads(sizes, kernel, strides, dilations, upper):
    heads, tails = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        heads.append(small if upper else big)
        tails.append(big if upper else small)
    return heads, tails


def _pads(n, sizes, kernel, strides, dilations):
    """(heads, tails) explicit pads of the spatial dims, resolving auto_pad."""
    auto = n.attrs["auto_pad"]
    if auto.startswith("SAME"):
        return _same_pads(sizes, kernel, strides, dilations, auto == "SAME_UPPER")
    pads = _spatial(n, "pads", 2 * len(sizes), 0)
    if auto == "VALID":
        pads = [0] * (2 * len(sizes))
    return pads[: len(sizes)], pads[len(sizes) :]


def _torch_pads(heads, tails):
    """ONNX (heads, tails) of the trailing dims -> F.pad's last-dim-first layout."""
    out: list[int] = []
    for h, t in zip(reversed(heads), reversed(tails)):
        out += [h, t]
    return out


def _by_rank(n, dims, *fns):
    """The 1d/2d/3d variant of a torch function (runtime guard for weights computed in-graph)."""
    if not 1 <= dims <= len(fns):
        raise n.fail("1 to 3 spatial dimensions", f"{dims}")
    return fns[dims - 1]


def _check_spatial(n):
    kernel = n.attrs["kernel_shape"]
    if kernel is not None and not 1 <= len(kernel) <= 3:
        raise n.fail("1 to 3 spatial dimensions", f"{len(kernel)}")


def _check_conv(n):
    _check_spatial(n)
    if n.attrs["auto_pad"] not in _AUTO_PADS:
        raise n.fail(f"auto_pad one of {_AUTO_PADS}", repr(n.attrs["auto_pad"]))


@_op("Conv", attrs=_CONV_ATTRS, check=_check_conv)
def _conv(n, x, w, b=None):
    dims = w.dim() - 2
    strides = _spatial(n, "strides", dims, 1)
    dilations = _spatial(n, "dilations", dims, 1)
    heads, tails = _pads(n, x.shape[2:], w.shape[2:], strides, dilations)
    padding = heads
    if heads != tails:
        x, padding = F.pad(x, _torch_pads(heads, tails)), [0] * dims
    conv = _by_rank(n, dims, F.conv1d, F.conv2d, F.conv3d)
    return conv(x, w, b, strides, padding, dilations, n.attrs["group"])


def _check_conv_transpose(n):
    _check_spatial(n)
    if n.attrs["auto_pad"] not in ("NOTSET", "VALID"):
        raise n.fail("ConvTranspose auto_pad 'NOTSET' or 'VALID'", repr(n.attrs["auto_pad"]))


@_op(
    "ConvTranspose",
    attrs={**_CONV_ATTRS, "output_padding": None},
    check=_check_conv_transpose,
)
def _conv_transpose(n, x, w, b=None):
    dims = w.dim() - 2
    strides = _spatial(n, "strides", dims, 1)
    dilations = _spatial(n, "dilations", dims, 1)
    out_pad = _spatial(n, "output_padding", dims, 0)
    heads, tails = _pads(n, [0] * dims, w.shape[2:], strides, dilations)  # NOTSET / VALID only
    conv = _by_rank(n, dims, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    y = conv(x, w, b, strides, 0, out_pad, n.attrs["group"], dilations)
    for i, (h, t) in enumerate(zip(heads, tails)):  # ONNX pads crop the full output
        y = y.narrow(2 + i, h, y.shape[2 + i] - h - t)
    return y


def _check_batch_norm(n):
    if n.attrs["training_mode"] != 0 or len(n.outputs) > 1:
        raise n.fail(
            "BatchNormalization in inference mode (training_mode=0, 1 output)",
            f"training_mode={n.attrs['training_mode']} with {len(n.outputs)} outputs; export the model in eval mode",
        )


@_op(
    "BatchNormalization",
    attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0},
    nondiff=(3, 4),
    check=_check_batch_norm,
)
def _batch_norm(n, x, scale, bias, mean, var):
    mean, var = mean.detach().to(x.dtype), var.detach().to(x.dtype)
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, n.attrs["epsilon"])


def _check_pool(n):
    _check_conv(n)
    if n.attrs["kernel_shape"] is None:
        raise n.fail("a kernel_shape attribute", "none")
    if n.attrs["ceil_mode"] and n.attrs["auto_pad"] != "NOTSET":
        raise n.fail("ceil_mode=0 when auto_pad is set", f"auto_pad={n.attrs['auto_pad']!r}")
    if len(n.outputs) > 1:
        raise n.fail("MaxPool with 1 output", "an Indices output")


def _pool_geometry(n, sizes):
    """kernel, strides, dilations, explicit pads (heads, tails), the extra tail needed
    for ceil-mode windows to fit, and the output sizes, per the ONNX spec."""
    kernel = list(n.attrs["kernel_shape"])
    strides = _spatial(n, "strides", len(kernel), 1)
    dilations = _spatial(n, "dilations", len(kernel), 1)
    heads, tails = _pads(n, sizes, kernel, strides, dilations)
    outs, extras = [], []
    for size, k, s, d, h, t in zip(sizes, kernel, strides, dilations, heads, tails):
        span = size + h + t - (k - 1) * d - 1
        out = (-(-span // s) if n.attrs["ceil_mode"] else span // s) + 1
        if n.attrs["ceil_mode"] and (out - 1) * s >= size + h:
            out -= 1  # windows starting in the right padding are dropped
        outs.append(out)
        extras.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size - h - t))
    return kernel, strides, dilations, heads, tails, extras, outs


def _crop(y, outs):
    for i, o in enumerate(outs):
        y = y.narrow(2 + i, 0, o)
    return y


@_op("MaxPool", attrs={**_POOL_ATTRS, "storage_order": 0}, check=_check_pool)
def _max_pool(n, x):
    kernel, strides, dilations, heads, tails, extras, outs = _pool_geometry(n, x.shape[2:])
    tails = [t + e for t, e in zip(tails, extras)]
    x = F.pad(x, _torch_pads(heads, tails), value=-math.inf)
    pool = _by_rank(n, len(kernel), F.max_pool1d, F.max_pool2d, F.max_pool3d)
    return _crop(pool(x, kernel, strides, 0, dilations), outs)


@_op("AveragePool", attrs={**_POOL_ATTRS, "count_include_pad": 0}, check=_check_pool)
def _average_pool(n, x):
    """Window sums / window element counts, both by convolution with a ones kernel."""
    sizes = list(x.shape[2:])
    kernel, strides, dilations, heads, tails, extras, outs = _pool_geometry(n, sizes)
    dims = len(kernel)
    conv = _by_rank(n, dims, F.conv1d, F.conv2d, F.conv3d)
    ones = torch.ones([1, 1, *kernel], dtype=x.dtype, device=x.device)
    all_tails = [t + e for t, e in zip(tails, extras)]
    flat = F.pad(x.reshape(-1, 1, *sizes), _torch_pads(heads, all_tails))
    sums = conv(flat, ones, None, strides, 0, dilations)
    # counted: the real elements, the explicit pads if count_include_pad, never the
    # extra tail that only exists so that ceil-mode windows fit
    mask = torch.ones([1, 1, *sizes], dtype=x.dtype, device=x.device)
    mask = F.pad(mask, _torch_pads(heads, tails), value=float(n.attrs["count_include_pad"]))
    mask = F.pad(mask, _torch_pads([0] * dims, extras))
    counts = conv(mask, ones, None, strides, 0, dilations)
    y = _crop(sums / counts, outs)
    return y.reshape(*x.shape[:2], *y.shape[2:])


@_op("GlobalAveragePool")
def _global_average_pool(n, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


# ------------------------------------------------------------------------ reduce


@_op(
    "ReduceMean", "ReduceSum",
    attrs={"axes": None, "keepdims": 1, "noop_with_empty_axes": 0},
    nondiff=(1,),
)  # fmt: skip
def _reduce(n, x, axes=None):
    axes = list(n.attrs["axes"] or []) or _ints(axes)  # attribute (<18) or input (>=18)
    if not axes:
        if n.attrs["noop_with_empty_axes"]:
            return x
        axes = list(range(x.dim()))
    keep = bool(n.attrs["keepdims"])
    if n.op == "ReduceMean":
        return torch.mean(x, dim=axes, keepdim=keep)
    return torch.sum(x, dim=axes, keepdim=keep).to(x.dtype)


# ------------------------------------------------------------- shapes & indexing


@_op("Flatten", attrs={"axis": 1})
def _flatten(n, x):
    axis = _axis(n.attrs["axis"], x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_op("Reshape", attrs={"allowzero": 0}, nondiff=(1,))
def _reshape(n, x, shape):
    shape = _ints(shape)
    if not n.attrs["allowzero"]:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@_op("Transpose", attrs={"perm": None})
def _transpose(n, x):
    perm = n.attrs["perm"]
    return x.permute(*(reversed(range(x.dim())) if perm is None else perm))


@_op("Concat", attrs={"axis": None})
def _concat(n, *xs):
    return torch.cat(xs, dim=n.attrs["axis"])


@_op("Shape", attrs={"start": 0, "end": None}, nondiff=(0,))
def _shape(n, x):
    dims = list(x.shape)[n.attrs["start"] : n.attrs["end"]]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@_op("Gather", attrs={"axis": 0}, nondiff=(1,))
def _gather(n, x, indices):
    axis = _axis(n.attrs["axis"], x.dim())
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


@_op("Unsqueeze", nondiff=(1,))
def _unsqueeze(n, x, axes):
    axes = _ints(axes)
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@_op("Squeeze", nondiff=(1,))
def _squeeze(n, x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in _ints(axes)))


@_op("Slice", nondiff=(1, 2, 3, 4))
def _slice(n, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
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


@_op("Pad", attrs={"mode": "constant"}, nondiff=(1, 2, 3), check=_check_pad)
def _pad(n, x, pads, value=None, axes=None):
    pads = _ints(pads)
    axes = [_axis(a, x.dim()) for a in _ints(axes)] if axes is not None else list(range(x.dim()))
    heads = dict(zip(axes, pads[: len(axes)]))
    tails = dict(zip(axes, pads[len(axes) :]))
    mode = n.attrs["mode"]
    if mode == "constant":
        fill = value.reshape(-1)[0].item() if value is not None and value.numel() else 0
        dims = range(x.dim())
        return F.pad(x, _torch_pads([heads.get(d, 0) for d in dims], [tails.get(d, 0) for d in dims]), value=fill)
    for axis in axes:
        x = _index_pad(x, axis, heads[axis], tails[axis], mode)
    return x


@_op("Expand", nondiff=(1,))
def _expand(n, x, shape):
    return x.expand(torch.broadcast_shapes(x.shape, tuple(_ints(shape))))


# ------------------------------------------------------------------- constants


def _check_constant(n):
    given = [k for k, v in n.attrs.items() if v is not None]
    if len(given) != 1:
        raise n.fail("exactly one value attribute", f"{given}")


@_op(
    "Constant",
    attrs=dict.fromkeys(("value", "value_float", "value_floats", "value_int", "value_ints")),
    check=_check_constant,
)
def _constant(n):
    a = n.attrs
    if a["value"] is not None:
        return a["value"]
    if a["value_float"] is not None or a["value_floats"] is not None:
        v = a["value_float"] if a["value_float"] is not None else a["value_floats"]
        return torch.tensor(v, dtype=torch.float32)
    v = a["value_int"] if a["value_int"] is not None else a["value_ints"]
    return torch.tensor(v, dtype=torch.int64)


@_op("ConstantOfShape", attrs={"value": None}, nondiff=(0,))
def _constant_of_shape(n, shape):
    value = n.attrs["value"]
    if value is None:
        value = torch.zeros(1)
    return torch.full(_ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype, device=shape.device)


@_op("Range", nondiff=(0, 1, 2))
def _range(n, start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


# ----------------------------------------- more layers both torch exporters emit (vet v2)


@_op("Mod", attrs={"fmod": 0}, nondiff=(0, 1))
def _mod(n, a, b):
    if n.attrs["fmod"] or a.dtype.is_floating_point:
        return torch.fmod(a, b) if n.attrs["fmod"] else torch.remainder(a, b)
    return torch.remainder(a, b)  # integer Mod: the result has the sign of the divisor


@_op("Greater", "Less", "GreaterOrEqual", "LessOrEqual", nondiff=(0, 1))
def _compare(n, a, b):
    return {"Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le}[n.op](a, b)


@_op("Elu", attrs={"alpha": 1.0})
def _elu(n, x):
    return F.elu(x, n.attrs["alpha"])


@_op("HardSigmoid", attrs={"alpha": 0.2, "beta": 0.5})
def _hard_sigmoid(n, x):
    return torch.clamp(n.attrs["alpha"] * x + n.attrs["beta"], 0.0, 1.0)


@_op("HardSwish")
def _hard_swish(n, x):
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@_op("Softplus")
def _softplus(n, x):
    return F.softplus(x)


@_op("Mish")
def _mish(n, x):
    return x * torch.tanh(F.softplus(x))


def _check_layer_norm(n):
    if n.attrs["stash_type"] != 1:
        raise n.fail("LayerNormalization stash_type 1 (float)", repr(n.attrs["stash_type"]))


@_op("LayerNormalization", attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1}, check=_check_layer_norm)
def _layer_norm(n, x, scale, bias=None):
    axis = _axis(n.attrs["axis"], x.dim())
    dims = list(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + n.attrs["epsilon"]) * scale
    return y + bias if bias is not None else y


@_op("InstanceNormalization", attrs={"epsilon": 1e-5})
def _instance_norm(n, x, scale, bias):
    dims = list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + n.attrs["epsilon"]) * scale.reshape(shape) + bias.reshape(shape)


def _check_depth_to_space(n):
    if n.attrs["mode"] not in ("DCR", "CRD"):
        raise n.fail("DepthToSpace mode DCR or CRD", repr(n.attrs["mode"]))


@_op("DepthToSpace", attrs={"blocksize": None, "mode": "DCR"}, check=_check_depth_to_space)
def _depth_to_space(n, x):
    b, c, h, w = x.shape
    k = n.attrs["blocksize"]
    if n.attrs["mode"] == "DCR":
        y = x.reshape(b, k, k, c // (k * k), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(b, c // (k * k), k, k, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // (k * k), h * k, w * k)


_RESIZE_SUPPORTED = {
    ("nearest", "asymmetric", "floor"),
    ("linear", "half_pixel", None),
    ("linear", "pytorch_half_pixel", None),
    ("linear", "align_corners", None),
}


def _check_resize(n):
    mode, transform = n.attrs["mode"], n.attrs["coordinate_transformation_mode"]
    key = (mode, transform, n.attrs["nearest_mode"] if mode == "nearest" else None)
    if key not in _RESIZE_SUPPORTED or n.attrs["antialias"] or n.attrs["exclude_outside"]:
        raise n.fail(
            "Resize nearest (asymmetric, floor) or linear (half_pixel, pytorch_half_pixel, align_corners), "
            "no antialias", f"mode {mode!r}, coordinate_transformation_mode {transform!r}"
        )
    if n.attrs["keep_aspect_ratio_policy"] != "stretch":
        raise n.fail("Resize keep_aspect_ratio_policy 'stretch'", repr(n.attrs["keep_aspect_ratio_policy"]))


@_op(
    "Resize",
    attrs={
        "mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_floor",
        "cubic_coeff_a": -0.75, "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0, "axes": None,
        "keep_aspect_ratio_policy": "stretch",
    },
    nondiff=(1, 2, 3),
    check=_check_resize,
)  # fmt: skip
def _resize(n, x, roi=None, scales=None, sizes=None):
    """Spatial Resize of an (N, C, ...) tensor, as nn.Upsample / F.interpolate export it."""
    if n.attrs["axes"] is not None:
        raise n.fail("Resize without the axes attribute", repr(n.attrs["axes"]))
    spatial = x.dim() - 2
    if sizes is not None and sizes.numel():
        size = _ints(sizes)[-spatial:]
        factors = None
    else:
        values = [float(v) for v in scales.reshape(-1).tolist()]
        if values[:2] != [1.0, 1.0]:
            raise n.fail("Resize scales of 1 on the batch and channel axes", repr(values[:2]))
        size, factors = None, values[2:]
    if n.attrs["mode"] == "nearest":
        if factors is not None:
            size = [int(math.floor(d * f)) for d, f in zip(x.shape[2:], factors)]
        return F.interpolate(x, size=size, mode="nearest")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
    align = n.attrs["coordinate_transformation_mode"] == "align_corners"
    if factors is not None:
        return F.interpolate(x, scale_factor=factors, mode=mode, align_corners=align, recompute_scale_factor=False)
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


#: Operator types of the default ONNX domain that :func:`to_torch` supports.
SUPPORTED_OPS: frozenset[str] = frozenset(_OPS)


# ----------------------------------------------------------------------- module


def _sanitise(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "_"
    base = "_" + base if base[0].isdigit() else base
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    return out


class OnnxModule(torch.nn.Module):
    """An ONNX graph run with torch operations; build it with :func:`to_torch`.

    ``forward(*inputs)`` takes one tensor per entry of ``input_names`` and returns a
    tensor (one graph output) or a tuple in the order of ``output_names``.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        opset = _default_opset(model)
        if graph.sparse_initializer:
            raise UnsupportedOpError(f"expected dense initializers, got sparse ones; {_HINT}")
        inits = {t.name: t for t in graph.initializer}
        dims = {name: list(t.dims) for name, t in inits.items()}
        self._nodes = [_parse_node(p, i, opset, dims) for i, p in enumerate(graph.node)]
        self.input_names = [i.name for i in graph.input if i.name not in inits]
        self.output_names = [o.name for o in graph.output]
        self.parameter_onnx_names: dict[str, str] = {}
        self.buffer_onnx_names: dict[str, str] = {}
        self._slots: dict[str, str] = {}  # onnx name -> registered attribute name
        taken = set(dir(self))
        diff = _differentiable_values(self._nodes, self.output_names)
        for name, proto in inits.items():
            tensor = _to_tensor(proto, f"initializer '{name}'")
            slot = _sanitise(name, taken)
            taken.add(slot)
            self._slots[name] = slot
            if tensor.is_floating_point() and name in diff:
                self.register_parameter(slot, torch.nn.Parameter(tensor))
                self.parameter_onnx_names[slot] = name
            else:
                self.register_buffer(slot, tensor)
                self.buffer_onnx_names[slot] = name
        for node in self._nodes:  # Constant nodes: evaluated once, kept as buffers
            if node.op == "Constant":
                slot = _sanitise(node.outputs[0], taken)
                taken.add(slot)
                self._slots[node.outputs[0]] = slot
                self.register_buffer(slot, _constant(node), persistent=False)
        self._nodes = [node for node in self._nodes if node.op != "Constant"]

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} input tensor(s) {self.input_names}, got {len(inputs)}")
        env: dict[str, torch.Tensor] = {k: getattr(self, v) for k, v in self._slots.items()}
        env.update(zip(self.input_names, inputs))
        for node in self._nodes:
            args = [env[name] if name else None for name in node.inputs]
            while args and args[-1] is None:
                args.pop()
            try:
                out = _OPS[node.op].fn(node, *args)
            except Exception as exc:
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"while running ONNX {node.op} node '{node.name}'")
                raise
            outs = out if isinstance(out, tuple) else (out,)
            env.update((name, t) for name, t in zip(node.outputs, outs) if name)
        results = tuple(env[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._nodes)}"


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions or not MIN_OPSET <= versions[0] <= MAX_OPSET:
        got = versions[0] if versions else "none"
        raise UnsupportedOpError(
            f"expected a default-domain opset between {MIN_OPSET} and {MAX_OPSET}, got "
            f"{got}; re-export the model (e.g. torch.onnx.export(..., opset_version=17)) "
            "or convert it with onnx.version_converter.convert_version"
        )
    return versions[0]


def _parse_node(proto: onnx.NodeProto, index: int, opset: int, dims: dict[str, list[int]]) -> _Node:
    """Validate one node (domain, op, attributes) and parse its attributes.

    ``dims`` holds the initializer shapes, to read a Conv kernel's rank from its weight.
    """
    node = _Node(proto, index, opset)
    if proto.domain not in _DEFAULT_DOMAINS:
        raise UnsupportedOpError(
            f"expected ops of the default ONNX domain 'ai.onnx', got '{node.op}' from "
            f"domain '{proto.domain}' (node '{node.name}'); custom ops, ONNX-ML ops and "
            f"model-local functions are not supported; {_HINT}"
        )
    spec = _OPS.get(node.op)
    if spec is None:
        raise UnsupportedOpError(
            f"expected one of the supported ops ({', '.join(sorted(_OPS))}), got "
            f"'{node.op}' (domain 'ai.onnx', node '{node.name}'); {_HINT}"
        )
    node.attrs = dict(spec.attrs)
    for attr in proto.attribute:
        if attr.name not in spec.attrs:
            raise node.fail(f"{node.op} attributes among {sorted(spec.attrs)}", f"'{attr.name}'")
        if attr.type in (
            onnx.AttributeProto.GRAPH,
            onnx.AttributeProto.GRAPHS,
            onnx.AttributeProto.SPARSE_TENSOR,
            onnx.AttributeProto.STRINGS,
        ):
            kind = onnx.AttributeProto.AttributeType.Name(attr.type)
            raise node.fail(f"a plain attribute for '{attr.name}'", kind)
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, onnx.TensorProto):
            value = _to_tensor(value, f"attribute '{attr.name}' of node '{node.name}'")
        elif isinstance(value, list):
            value = [int(v) if isinstance(v, int) else v for v in value]
        node.attrs[attr.name] = value
    if node.op in ("Conv", "ConvTranspose") and node.attrs["kernel_shape"] is None and node.inputs[1] in dims:
        node.attrs["kernel_shape"] = dims[node.inputs[1]][2:]
    if spec.check is not None:
        spec.check(node)
    return node


def _differentiable_values(nodes: list[_Node], outputs: list[str]) -> set[str]:
    """Names consumed in at least one differentiable input slot (Identity passes through)."""
    diff = set(outputs)
    for node in reversed(nodes):
        if node.op == "Identity" and node.outputs[0] not in diff:
            continue
        nondiff = _OPS[node.op].nondiff
        diff.update(name for i, name in enumerate(node.inputs) if name and i not in nondiff)
    return diff


# ----------------------------------------------------------------------- loading


def _load(model: onnx.ModelProto | str | os.PathLike | bytes) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        try:
            return onnx.load_from_string(model)
        except Exception as exc:
            raise ModelLoadError(f"expected serialized ONNX bytes, got bytes that fail to parse: {exc}") from exc
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"expected an onnx.ModelProto, a path or bytes, got {type(model).__name__}")
    try:  # the project's loader: refuses external data outside the model's folder
        return load_proto(model)
    except EdgeguardError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"expected a readable ONNX model at {os.fspath(model)!r}: {exc}") from exc


def to_torch(model: onnx.ModelProto | str | os.PathLike | bytes) -> OnnxModule:
    """Build an :class:`OnnxModule` from a ModelProto, a file path or serialized bytes.

    Raises ModelLoadError (unreadable / invalid model), UnsupportedOpError (opset, op,
    domain or attribute outside the supported scope) or UnsafeModelError (external data
    outside the model folder), all before any forward pass.
    """
    proto = _load(model)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"expected a valid ONNX model, got one that fails onnx.checker: {exc}") from exc
    return OnnxModule(proto)
