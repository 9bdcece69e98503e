"""A static, machine-independent estimate of what training the honest twin costs.

The default twin is the vetted graph re-initialised and trained for ``steps`` mini-batches
of ``batch_size`` (:mod:`edgeguard.vetting.reference`). Its cost is estimated from the graph
alone: the multiply-accumulates (MACs) of one sample through every Conv, ConvTranspose,
Gemm and MatMul node, with the shapes from ONNX shape inference, times ``steps x
batch_size x 3`` (forward, and a backward pass of about twice the forward). The estimate
depends on the graph and the settings only, never on the machine or its load, so the
verdict it leads to (a twin trained, or refused for its cost) is the same everywhere.

MACs per sample:

- Conv: ``prod(output shape) x prod(weight shape[1:])`` (output channels x positions x
  input channels per group x kernel);
- ConvTranspose: ``prod(input shape) x prod(weight shape[1:])``;
- Gemm and MatMul: ``prod(output shape) x K`` (the shared inner dimension).

Other nodes (activations, pooling, normalisation) are not counted: they cost little next
to these on the architectures vetted. A weight node whose shapes shape inference cannot
resolve makes the estimate unknown, which the twin treats as over budget (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TwinCost", "macs_per_sample", "twin_cost", "FORWARD_BACKWARD"]

#: One training step costs about this many forward passes (forward + backward of ~2x the forward).
FORWARD_BACKWARD = 3
_COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class TwinCost:
    """The twin's training cost estimate: MACs of one sample's forward pass, and in all (GMAC)."""

    macs_per_sample: float | None  # None: shape inference could not resolve a counted node
    steps: int
    batch_size: int
    unresolved: tuple[str, ...] = ()  # the counted nodes whose shapes are unknown

    @property
    def gmac(self) -> float | None:
        if self.macs_per_sample is None:
            return None
        return self.macs_per_sample * self.steps * self.batch_size * FORWARD_BACKWARD / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs_per_sample": self.macs_per_sample,
            "training_gmac": self.gmac,
            "formula": f"MACs per sample x {self.steps} steps x batch {self.batch_size} x {FORWARD_BACKWARD} "
            "(forward + backward)",
            **({"unresolved_nodes": list(self.unresolved)} if self.unresolved else {}),
        }


def _dims(value_info: Any) -> list[int] | None:
    if not value_info.type.HasField("tensor_type") or not value_info.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            return None
        dims.append(int(dim.dim_value))
    return dims


def _with_sample_shape(model: Any, sample_shape: tuple[int, ...] | None) -> tuple[Any, int]:
    """A copy of ``model`` whose data input has every dimension fixed, and that input's batch size."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initialisers = {t.name for t in model.graph.initializer}
    batch = 1
    for graph_input in model.graph.input:
        if graph_input.name in initialisers or not graph_input.type.HasField("tensor_type"):
            continue
        shape = graph_input.type.tensor_type.shape
        dims = list(shape.dim)
        sample = list(sample_shape) if sample_shape is not None and len(sample_shape) == len(dims) - 1 else None
        for position, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            value = 1 if position == 0 else (sample[position - 1] if sample is not None else 1)
            dim.Clear()
            dim.dim_value = int(value)
        if dims and dims[0].dim_value > 0:
            batch = int(dims[0].dim_value)
        break  # the prepared graph has one data input
    return model, batch


def macs_per_sample(model: Any, sample_shape: tuple[int, ...] | None = None) -> tuple[float | None, tuple[str, ...]]:
    """MACs of one sample's forward pass through ``model`` (an onnx.ModelProto), and the unresolved nodes.

    ``sample_shape`` fills the input's unknown non-batch dimensions; an unknown batch becomes 1,
    a fixed batch divides the total.
    """
    import onnx

    fixed, batch = _with_sample_shape(model, sample_shape)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph shape inference rejects: nothing is resolved
        inferred = fixed
    graph = inferred.graph
    shapes: dict[str, list[int] | None] = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        shapes[info.name] = _dims(info)
    for tensor in graph.initializer:
        shapes[tensor.name] = [int(d) for d in tensor.dims]
    total = 0.0
    unresolved = []
    for node in graph.node:
        if node.op_type not in _COUNTED:
            continue
        ins = [shapes.get(name) for name in node.input[:2]] if len(node.input) >= 2 else [None, None]
        out = shapes.get(node.output[0])
        a, b = ins
        macs: float | None = None
        if node.op_type == "Conv" and out is not None and b is not None:
            macs = float(np.prod(out)) * float(np.prod(b[1:]))
        elif node.op_type == "ConvTranspose" and a is not None and b is not None:
            macs = float(np.prod(a)) * float(np.prod(b[1:]))
        elif node.op_type == "Gemm" and out is not None and a is not None:
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            macs = float(np.prod(out)) * float(a[0] if trans_a else a[-1])
        elif node.op_type == "MatMul" and out is not None and a is not None:
            macs = float(np.prod(out)) * float(a[-1])
        if macs is None:
            unresolved.append(node.name or f"{node.op_type}->{node.output[0]}")
        else:
            total += macs
    if unresolved:
        return None, tuple(unresolved)
    return total / max(1, batch), ()


def twin_cost(model: Any, sample_shape: tuple[int, ...] | None, steps: int, batch_size: int) -> TwinCost:
    """The training cost estimate of the twin of ``model`` (see the module docstring)."""
    macs, unresolved = macs_per_sample(model, sample_shape)
    return TwinCost(macs, steps, batch_size, unresolved)
