"""The precision check's row cap on large inputs still catches the cheapest float32 trick.

A 224x224 RGB classifier (average pool + linear) whose logits are snapped to a lattice by a
float32 magic number (``(v + 1.5*2^23) - 1.5*2^23``, no rounding op) with a code below the
step: re-evaluated in float64 on the capped number of rows, it is still far past the hard
limit, while the same graph without the snap agrees with float32 (the control). Oracle: the
float64 run is onnx.reference on the promoted graph, independent of onnxruntime's float32 run.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeguard.vetting.precision import (
    DEFAULT_TOLERANCE,
    HARD_TOLERANCE,
    MIN_ROWS,
    ROW_VALUE_BUDGET,
    precision_check,
    rows_per_view,
)

SHAPE = (3, 224, 224)
MAGIC = 1.5 * 2**23


def _classifier(snap: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 10)).astype(np.float32) * 8, "w"),
        numpy_helper.from_array(np.float32(2.0), "step"),
        numpy_helper.from_array(np.float32(MAGIC), "magic"),
        numpy_helper.from_array(rng.uniform(0, 0.1, size=(3, 10)).astype(np.float32), "small"),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["logits"]),
    ]
    tail = "logits"
    if snap:  # the lattice snap by a magic number, and a code below the step
        nodes += [
            helper.make_node("Div", ["logits", "step"], ["units"]),
            helper.make_node("Add", ["units", "magic"], ["big"]),
            helper.make_node("Sub", ["big", "magic"], ["snapped_units"]),
            helper.make_node("Mul", ["snapped_units", "step"], ["snapped"]),
            helper.make_node("MatMul", ["f", "small"], ["code"]),
            helper.make_node("Add", ["snapped", "code"], ["tail"]),
        ]
        tail = "tail"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info(tail, TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_rows_are_capped_only_on_large_inputs():
    assert rows_per_view(48, 28 * 28) == (48, "")  # the calibrated 28x28 grey case is never capped
    assert rows_per_view(48, 3 * 64 * 64) == (48, "")
    rows, why = rows_per_view(48, int(np.prod(SHAPE)))
    assert rows == max(MIN_ROWS, ROW_VALUE_BUDGET // int(np.prod(SHAPE))) == MIN_ROWS
    assert "capped at 8 rows per view (asked 48)" in why and "150528 values" in why


@pytest.mark.parametrize("snap", [False, True], ids=["honest-control", "magic-number-snap"])
def test_capped_rows_still_catch_a_magic_number_snap(snap):
    model = _classifier(snap)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows, _ = rows_per_view(48, int(np.prod(SHAPE)))
    rng = np.random.default_rng(1)
    clean = (np.round(rng.uniform(size=(rows, *SHAPE)) * 255) / 255).astype(np.float32)
    views = {
        "clean": clean,
        "off-grid": np.clip(clean + rng.uniform(-1e-3, 1e-3, clean.shape), 0, 1).astype(np.float32),
    }
    result = precision_check(model, views, lambda x: session.run(None, {"x": x})[0], rows=rows, seed=0)
    assert result.ran and result.rows == 2 * rows and result.engine.endswith("float64")
    if snap:
        assert result.max_difference > HARD_TOLERANCE
    else:
        assert result.max_difference < DEFAULT_TOLERANCE
