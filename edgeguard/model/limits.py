"""The ONE limits table for model files, and the byte size of an ONNX element type.

Every size check (the loader, the static audit, the vet, SafeModel) reads its bounds
here; raise them per call (``max_tensor_bytes=`` / ``max_total_bytes=``), never by
editing a second copy.
"""

from __future__ import annotations

from typing import Any

from edgeguard.errors import ModelLoadError

__all__ = [
    "DEFAULT_MAX_TENSOR_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "MAX_MODEL_BYTES",
    "MAX_CLASSES",
    "MAX_SIDE",
    "MAX_PIXELS",
    "MAX_METADATA_CHARS",
    "itemsize",
    "itemsize_bound",
    "elements",
]

#: Largest single tensor accepted (declared or stored), 1 GiB.
DEFAULT_MAX_TENSOR_BYTES = 1 << 30
#: Largest sum of stored tensor bytes (the protobuf itself is capped at 2 GiB), 4 GiB.
DEFAULT_MAX_TOTAL_BYTES = 4 << 30
#: Largest model file read (protobuf's own limit).
MAX_MODEL_BYTES = (2 << 30) - 1
#: Longest external-data location, and longest component of it (bytes).
MAX_LOCATION_CHARS = 1024
MAX_COMPONENT_BYTES = 255
#: The external_data keys ONNX defines.
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
#: Bound on a constant shape's output per element (int64/double worst case).
BYTES_PER_ELEMENT = 8
#: Tile repeats / Resize scale product / Pad widths accepted as constants.
MAX_REPEATS = 1 << 12
#: Longest Range accepted with constant bounds.
MAX_RANGE = 1 << 24
#: Most classes a model may declare, largest (C, H, W) side and pixel count, longest metadata value.
MAX_CLASSES = 100_000
MAX_SIDE = 1 << 14
MAX_PIXELS = 1 << 26
MAX_METADATA_CHARS = 1 << 20


def itemsize(data_type: int) -> int | None:
    """Bytes per element of an ONNX tensor type: None for strings and unknown types, 0 for 4-bit types."""
    import onnx

    if data_type in (0, 8):  # UNDEFINED, STRING
        return None
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    except Exception:
        return None
    if data_type in (22, 23, 25, 26):  # 4-bit types (INT4, UINT4, FLOAT4E2M1 ...): half a byte
        return 0
    return dtype.itemsize


def itemsize_bound(data_type: int) -> int:
    """An upper bound on bytes per element for size findings: 1 for 4-bit types, 8 for strings and unknown types."""
    size = itemsize(data_type)
    return 8 if size is None else max(1, size)


def elements(dims: Any, what: str) -> int:
    """The element count of ``dims`` (ModelLoadError for a negative dim)."""
    count = 1
    for dim in dims:
        if dim < 0:
            raise ModelLoadError(f"expected non-negative dims, got {list(dims)} for {what}; the file is malformed")
        count *= int(dim)
    return count
