"""Declared and inferred value sizes, bounded before anything runs."""

from __future__ import annotations

from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError
from edgeguard.model.limits import itemsize

__all__ = ["check_value_shapes", "check_inferred_shapes"]


def check_value_shapes(model: Any, max_tensor_bytes: int) -> None:
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if len(dims) > 32:
            raise ModelLoadError(f"expected at most 32 dims, got {len(dims)} for graph value {value.name!r}")
        count = 1
        for dim in dims:
            if dim.HasField("dim_value"):
                if dim.dim_value < 0:
                    raise ModelLoadError(f"expected non-negative dims, got {dim.dim_value} for {value.name!r}")
                count *= dim.dim_value
        size = itemsize(tensor_type.elem_type) or 1
        if count * size > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected graph values of at most {max_tensor_bytes} bytes, got {count * size} declared for "
                f"{value.name!r}; the file's declared shapes are not those of an on-device classifier"
            )


def check_inferred_shapes(model: Any, max_tensor_bytes: int) -> None:
    """Bound every intermediate value whose size onnx's shape inference can tell (batch dims count as 1).

    Large float weights are left out of the copy that is inferred (only their dims matter).
    A model that onnx cannot infer is left to onnxruntime, which checks it again.
    """
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(model)
    for tensor in light.graph.initializer:
        if tensor.data_type in (1, 10, 11, 16) and len(tensor.raw_data) > 4096:
            tensor.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # onnx's inference fails on models onnxruntime may still accept
        return
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        count = 1
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                count *= dim.dim_value
        size = count * (itemsize(tensor_type.elem_type) or 1)
        if size > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected intermediate values of at most {max_tensor_bytes} bytes per sample, got {size} bytes "
                f"inferred for {value.name[:80]!r}; the graph would allocate that much on every call"
            )
