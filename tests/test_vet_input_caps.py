"""Caps on what grows with the input size in the continuity and consistency checks (issue 19, item 5).

Stated in the details, deterministic, never below a floor, and absent for 28x28 and 64x64
images and feature vectors (the calibrated FMNIST verdicts are unchanged).
"""

from __future__ import annotations

import numpy as np
import onnx
from _vet_models import linear_classifier, save, write_probe
from onnx import TensorProto, helper, numpy_helper

from edgeguard.vetting import vet
from edgeguard.vetting.consistency import DEFAULT_BATCH_SIZES, MIN_LARGEST_BATCH, batch_sizes_for
from edgeguard.vetting.continuity import MIN_ROWS, ROW_VALUE_BUDGET, rows_for
from edgeguard.vetting.running import CHUNK, CHUNK_VALUES, chunk_rows

LARGE = (3, 224, 224)
TESTS = ("consistency", "continuity")


def test_no_cap_for_small_inputs():
    for shape in ((1, 28, 28), (3, 64, 64), (30,), (784,)):
        values = int(np.prod(shape))
        assert rows_for(256, values) == (256, "")
        assert batch_sizes_for(DEFAULT_BATCH_SIZES, chunk_rows(shape), values) == (DEFAULT_BATCH_SIZES, "")


def test_caps_on_a_224x224_rgb_input_and_their_floors():
    values = int(np.prod(LARGE))
    rows, why = rows_for(256, values)
    assert rows == max(MIN_ROWS, ROW_VALUE_BUDGET // values) == MIN_ROWS
    assert f"capped at {MIN_ROWS} rows (asked 256)" in why and str(values) in why
    chunk = chunk_rows(LARGE)
    assert chunk == CHUNK_VALUES // values < CHUNK
    sizes, why = batch_sizes_for(DEFAULT_BATCH_SIZES, chunk, values)
    assert max(sizes) == chunk and set(sizes) == {s for s in DEFAULT_BATCH_SIZES if s <= chunk} | {chunk}
    assert f"capped at {chunk}" in why and "asked up to 512" in why
    # giant inputs: never under the floors
    assert rows_for(256, 10**8)[0] == MIN_ROWS
    assert max(batch_sizes_for(DEFAULT_BATCH_SIZES, 1, 10**8)[0]) == MIN_LARGEST_BATCH


def _large_classifier() -> onnx.ModelProto:
    """224x224 RGB -> GlobalAveragePool -> Flatten -> MatMul: 3 classes."""
    w = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32) * 8
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *LARGE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"input_shape": "[3, 224, 224]", "class_names": '["a", "b", "c"]'})
    return model


def test_the_caps_are_stated_in_the_details_of_a_large_input_vet(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(90, *LARGE)) * 255).astype(np.uint8)
    probe = tmp_path / "probe.npz"
    np.savez(probe, x=x, y=np.arange(90) % 3)
    report = vet(save(_large_classifier(), tmp_path / "m.onnx"), probe, tests=TESTS, twin=False)
    continuity = report.tests["continuity"].details
    consistency = report.tests["consistency"].details
    assert continuity["rows"] == MIN_ROWS and "capped at" in continuity["row_cap"]
    assert consistency["max_batch_checked"] == chunk_rows(LARGE) and "capped at" in consistency["batch_cap"]
    assert report.checked["max_batch"] == chunk_rows(LARGE)


def test_no_cap_is_stated_for_a_small_input_vet(tmp_path):
    report = vet(save(linear_classifier(), tmp_path / "m.onnx"), write_probe(tmp_path / "p.npz", 600), tests=TESTS,
                 twin=False)
    continuity = report.tests["continuity"].details
    consistency = report.tests["consistency"].details
    assert continuity["rows"] == 256 and continuity["row_cap"] == ""
    assert consistency["batch_sizes"] == list(DEFAULT_BATCH_SIZES) and consistency["batch_cap"] == ""
