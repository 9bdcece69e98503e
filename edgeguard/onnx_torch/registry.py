"""The interpreter's registry: parsed nodes, the ``@onnx_op`` decorator and the op table, tensor helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx
import onnx.external_data_helper
import onnx.numpy_helper
import torch

from edgeguard.errors import ModelLoadError, UnsupportedOpError

__all__ = ["OPS", "Node", "Op", "onnx_op", "to_tensor", "ints", "norm_axis", "MIN_OPSET", "MAX_OPSET", "DTYPES", "DTYPE_NAMES", "DEFAULT_DOMAINS", "HINT"]

MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_DOMAINS = ("", "ai.onnx")
HINT = "re-export the model with opset 13-21 using standard layers, or open an issue"

DTYPES: dict[int, torch.dtype] = {
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
DTYPE_NAMES = ", ".join(onnx.TensorProto.DataType.Name(t) for t in DTYPES)


# --------------------------------------------------------------------------- nodes


class Node:
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
        return UnsupportedOpError(f"expected {expected}, got {got} ({self.op} node '{self.name}'); {HINT}")


class Op:
    __slots__ = ("fn", "attrs", "nondiff", "check")

    def __init__(self, fn, attrs, nondiff, check) -> None:
        self.fn, self.attrs, self.nondiff, self.check = fn, attrs, nondiff, check


#: op type -> implementation; filled by the @onnx_op decorator below.
OPS: dict[str, Op] = {}


def onnx_op(
    *names: str,
    attrs: dict[str, Any] | None = None,
    nondiff: Sequence[int] = (),
    check: Callable[[Node], None] | None = None,
):
    """Register ``fn(node, *inputs)`` for ``names``.

    ``attrs`` lists the accepted attributes with their defaults (``None``: no default),
    ``nondiff`` the input positions that are never differentiated (shapes, axes...),
    ``check`` validates attribute values at construction time.
    """

    def register(fn):
        for name in names:
            OPS[name] = Op(fn, dict(attrs or {}), frozenset(nondiff), check)
        return fn

    return register


def to_tensor(proto: onnx.TensorProto, what: str) -> torch.Tensor:
    if proto.data_type not in DTYPES:
        raise UnsupportedOpError(
            f"expected tensor element type one of {DTYPE_NAMES}, got "
            f"{onnx.TensorProto.DataType.Name(proto.data_type)} ({what}); {HINT}"
        )
    if onnx.external_data_helper.uses_external_data(proto):
        raise ModelLoadError(
            f"expected tensor data loaded in the model, got external data for {what}; "
            "pass the model file path so its external data can be loaded"
        )
    array = onnx.numpy_helper.to_array(proto)
    return torch.from_numpy(array.copy()).to(DTYPES[proto.data_type])


def ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
