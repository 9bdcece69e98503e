"""Precision tricks: re-evaluate the graph in float64 and compare with float32 onnxruntime.

An honest classifier computes a smooth function of its input: evaluated with every float
tensor promoted to float64 (weights, constants, casts, inputs), it agrees with the float32
run up to float32 rounding error. Graph edits that rely on float32 arithmetic do not:
a magic-number rounding ``(v + 1.5*2^23) - 1.5*2^23`` is the identity in float64, a cast
to float16 becomes a cast to float64, and a switch that fires on the 8-bit pixel grid
through such a rounding fires on every image. On the probe's clean images and on
off-grid copies, the two runs then disagree by a whole lattice step, far beyond float error.

The float64 run uses onnxruntime on the promoted graph when it has float64 kernels for
every op, else ``onnx.reference`` (pure numpy, slower: a few dozen rows suffice). On large
inputs the rows re-evaluated per view are capped (:func:`rows_per_view`: at most
:data:`ROW_VALUE_BUDGET` input values per view, never fewer than :data:`MIN_ROWS` rows): the
tricks this check catches act on every row (a lattice snap, a float16 cast), so a few rows
show them, and ``onnx.reference`` takes about a second per 224x224 RGB row. The cap is
recorded in the result (``row_cap``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PrecisionResult",
    "promote_to_float64",
    "precision_check",
    "rows_per_view",
    "DEFAULT_TOLERANCE",
    "HARD_TOLERANCE",
    "ROW_VALUE_BUDGET",
    "MIN_ROWS",
]

_FLOAT, _DOUBLE, _FLOAT16, _BFLOAT16 = 1, 11, 10, 16
_PROMOTE = {_FLOAT, _FLOAT16, _BFLOAT16}
#: Largest float32-vs-float64 difference (relative to the output scale) an honest graph shows here.
DEFAULT_TOLERANCE = 1e-4
#: Beyond this the outputs depend on float32 rounding itself: a hard failure (vicious).
HARD_TOLERANCE = 1e-2
#: Input values re-evaluated per view at most (48 rows of 64x64 RGB; 28x28 grey and vectors are never capped).
ROW_VALUE_BUDGET = 48 * 3 * 64 * 64
#: ... but never fewer rows per view than this.
MIN_ROWS = 8


def rows_per_view(rows: int, values_per_row: int) -> tuple[int, str]:
    """(rows re-evaluated per view, why fewer than ``rows`` were: '' when not capped)."""
    cap = max(MIN_ROWS, ROW_VALUE_BUDGET // max(1, int(values_per_row)))
    if rows <= cap:
        return rows, ""
    return cap, (
        f"capped at {cap} rows per view (asked {rows}): inputs of {values_per_row} values, at most "
        f"{ROW_VALUE_BUDGET} values per view (never under {MIN_ROWS} rows)"
    )


@dataclass
class PrecisionResult:
    """Float32 onnxruntime vs the float64 re-evaluation, on clean and off-grid rows."""

    ran: bool
    engine: str = ""
    rows: int = 0
    max_difference: float = float("nan")  # relative to the output scale
    scale: float = float("nan")
    reason: str = ""
    seconds: float = 0.0
    per_view: dict[str, float] = field(default_factory=dict)
    row_cap: str = ""  # why fewer rows than asked were re-evaluated ('' = not capped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "engine": self.engine,
            "rows": self.rows,
            "max_difference": self.max_difference,
            "output_scale": self.scale,
            "per_view": dict(self.per_view),
            "reason": self.reason,
            "row_cap": self.row_cap,
            "seconds": self.seconds,
        }


def _promote_tensor(tensor: Any) -> None:
    from onnx import numpy_helper

    if tensor.data_type in _PROMOTE and not tensor.external_data:
        array = numpy_helper.to_array(tensor).astype(np.float64)
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _promote_type(type_proto: Any) -> None:
    if type_proto.HasField("tensor_type") and type_proto.tensor_type.elem_type in _PROMOTE:
        type_proto.tensor_type.elem_type = _DOUBLE


def _promote_nodes(nodes: Any) -> None:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name in ("to", "dtype") and attribute.type == 2 and attribute.i in _PROMOTE:
                attribute.i = _DOUBLE  # Cast / EyeLike / RandomX to a float type -> float64
            if attribute.HasField("t"):
                _promote_tensor(attribute.t)
            for tensor in attribute.tensors:
                _promote_tensor(tensor)
            if attribute.HasField("g"):
                _promote_graph(attribute.g)
            for graph in attribute.graphs:
                _promote_graph(graph)


def _promote_graph(graph: Any) -> None:
    for tensor in graph.initializer:
        _promote_tensor(tensor)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        _promote_type(value.type)
    _promote_nodes(graph.node)


def promote_to_float64(model: Any) -> Any:
    """A copy of ``model`` with every float32/float16/bfloat16 tensor, cast and constant made float64."""
    import onnx

    promoted = onnx.ModelProto()
    promoted.CopyFrom(model)
    del promoted.graph.value_info[:]  # re-inferred by the runtime; stale float32 annotations would clash
    _promote_graph(promoted.graph)
    for function in promoted.functions:
        _promote_nodes(function.node)
    return promoted


def _float64_runner(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    promoted = promote_to_float64(model)
    name = next(v.name for v in promoted.graph.input if v.name not in {i.name for i in promoted.graph.initializer})
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fused float32 kernels
        session = ort.InferenceSession(promoted.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return (lambda x: session.run(None, {name: _promote_input(x)})[0]), "onnxruntime-float64"
    except Exception:  # no float64 kernel for some op: fall back to the reference evaluator
        pass
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(promoted)
    return (lambda x: evaluator.run(None, {name: _promote_input(x)})[0]), "onnx.reference-float64"


def _promote_input(x: np.ndarray) -> np.ndarray:
    """Float inputs become float64 (the promoted graph's input); integer inputs (uint8 images) stay as they are."""
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x


def precision_check(
    model: Any,
    views: dict[str, np.ndarray],
    run_float32: Callable[[np.ndarray], np.ndarray],
    *,
    rows: int = 48,
    seed: int = 0,
) -> PrecisionResult:
    """Max |float32 - float64| of the outputs over ``rows`` inputs of each view, relative to the output scale.

    ``views`` maps a name ("clean", "off-grid", ...) to model inputs (as the model takes them);
    ``run_float32`` runs the model as shipped (onnxruntime, float32).
    """
    started = time.perf_counter()
    try:
        run64, engine = _float64_runner(model)
    except Exception as error:  # the promoted graph cannot be evaluated at all
        return PrecisionResult(False, reason=f"the float64 re-evaluation could not load the graph: {_first_line(error)}")
    rng = np.random.default_rng([seed, 64])
    worst, scale, total, per_view = 0.0, 0.0, 0, {}
    for view, inputs in views.items():
        pick = rng.choice(len(inputs), min(rows, len(inputs)), replace=False)
        batch = np.ascontiguousarray(inputs[pick])
        low = np.asarray(run_float32(batch), dtype=np.float64)
        try:
            high = np.concatenate([np.asarray(run64(batch[i : i + 16]), dtype=np.float64) for i in range(0, len(batch), 16)])
        except Exception as error:  # onnx.reference raises plain exceptions for unsupported cases
            return PrecisionResult(
                False, engine=engine, reason=f"the float64 re-evaluation failed: {_first_line(error)}",
                seconds=time.perf_counter() - started,
            )
        if high.shape != low.shape:
            return PrecisionResult(
                False, engine=engine, reason=f"the float64 re-evaluation gave shape {high.shape}, expected {low.shape}",
                seconds=time.perf_counter() - started,
            )
        view_scale = float(np.max(np.abs(low))) if low.size else 0.0
        scale = max(scale, view_scale)
        difference = np.abs(high - low)
        per_view[view] = float(np.nanmax(difference)) if np.all(np.isfinite(high)) else float("inf")
        total += len(batch)
    scale = max(scale, 1.0)
    worst = max(per_view.values()) / scale if per_view else 0.0
    return PrecisionResult(
        True, engine=engine, rows=total, max_difference=worst, scale=scale,
        per_view={k: v / scale for k, v in per_view.items()}, seconds=time.perf_counter() - started,
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
