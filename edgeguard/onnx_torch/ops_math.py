"""Elementwise, math and linear-algebra ops of the interpreter."""

from __future__ import annotations

import onnx
import onnx.external_data_helper
import onnx.numpy_helper
import torch
import torch.nn.functional as F

from edgeguard.onnx_torch.registry import DTYPE_NAMES, DTYPES, onnx_op

__all__: list[str] = []  # ops register themselves in registry.OPS

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


@onnx_op(*_BINARY)
def _binary(n, a, b):
    return _BINARY[n.op](a, b)


@onnx_op(*_UNARY)
def _unary(n, x):
    return _UNARY[n.op](x)


@onnx_op("Identity")
def _identity(n, x):
    return x


@onnx_op("Dropout", attrs={"seed": 0}, nondiff=(1, 2))
def _dropout(n, x, ratio=None, training_mode=None):
    if len(n.outputs) > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


@onnx_op("LeakyRelu", attrs={"alpha": 0.01})
def _leaky_relu(n, x):
    return F.leaky_relu(x, n.attrs["alpha"])


@onnx_op("Softmax", "LogSoftmax", attrs={"axis": -1})
def _softmax(n, x):
    fn = torch.softmax if n.op == "Softmax" else torch.log_softmax
    return fn(x, n.attrs["axis"])


@onnx_op("Pow", nondiff=(1,))
def _pow(n, x, y):
    return torch.pow(x, y).to(x.dtype)


@onnx_op("Max", "Min")
def _max_min(n, *xs):
    fn = torch.maximum if n.op == "Max" else torch.minimum
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


@onnx_op("Clip", nondiff=(1, 2))
def _clip(n, x, lo=None, hi=None):
    if lo is None and hi is None:
        return x
    return torch.clamp(x, lo, hi)


@onnx_op("Equal", nondiff=(0, 1))
def _equal(n, a, b):
    return torch.eq(a, b)


@onnx_op("Where", nondiff=(0,))
def _where(n, cond, x, y):
    return torch.where(cond.bool(), x, y)


def _check_cast(n):
    to = n.attrs["to"]
    if to not in DTYPES:
        name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() else str(to)
        raise n.fail(f"Cast 'to' one of {DTYPE_NAMES}", name)


@onnx_op("Cast", attrs={"to": None, "saturate": 1}, check=_check_cast)
def _cast(n, x):
    return x.to(DTYPES[n.attrs["to"]])


@onnx_op("CastLike", attrs={"saturate": 1}, nondiff=(1,))
def _cast_like(n, x, like):
    return x.to(like.dtype)


# ------------------------------------------------------------------ linear algebra


@onnx_op("MatMul")
def _matmul(n, a, b):
    return torch.matmul(a, b)


@onnx_op("Gemm", attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
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



# ----------------------------------------- more layers both torch exporters emit (vet v2)


@onnx_op("Mod", attrs={"fmod": 0}, nondiff=(0, 1))
def _mod(n, a, b):
    if n.attrs["fmod"] or a.dtype.is_floating_point:
        return torch.fmod(a, b) if n.attrs["fmod"] else torch.remainder(a, b)
    return torch.remainder(a, b)  # integer Mod: the result has the sign of the divisor


@onnx_op("Greater", "Less", "GreaterOrEqual", "LessOrEqual", nondiff=(0, 1))
def _compare(n, a, b):
    return {"Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le}[n.op](a, b)


@onnx_op("Elu", attrs={"alpha": 1.0})
def _elu(n, x):
    return F.elu(x, n.attrs["alpha"])


@onnx_op("HardSigmoid", attrs={"alpha": 0.2, "beta": 0.5})
def _hard_sigmoid(n, x):
    return torch.clamp(n.attrs["alpha"] * x + n.attrs["beta"], 0.0, 1.0)


@onnx_op("HardSwish")
def _hard_swish(n, x):
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@onnx_op("Softplus")
def _softplus(n, x):
    return F.softplus(x)


@onnx_op("Mish")
def _mish(n, x):
    return x * torch.tanh(F.softplus(x))
