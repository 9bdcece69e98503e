"""Hostile-input builders shared by the fuzzer and ``tests/test_hardening.py`` (one place).

Graph pieces a provider who read edgeguard's source would ship (a Loop with a huge trip
count, ops whose output size is computed at run time), external-data traps planted next
to a model (FIFOs, links leaving the folder, hard links, directories), and malformed
probe-set headers (IDX, PNG, .npz).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RUNTIME_SIZED_OPS",
    "EXTERNAL_TRAPS",
    "loop_node",
    "runtime_sized_nodes",
    "plant_external_trap",
    "npz_bytes",
    "idx_header",
    "png_header",
]

#: Ops :func:`runtime_sized_nodes` builds (their output size comes from a tensor input).
RUNTIME_SIZED_OPS = ("ConstantOfShape", "Expand", "Tile", "Range")
#: External-data traps :func:`plant_external_trap` plants: location -> what it is.
EXTERNAL_TRAPS = {
    "fifo.bin": "a FIFO (reading blocks forever)",
    "link-outside.bin": "a symlink to a secret outside the model's folder",
    "link-zero.bin": "a symlink to /dev/zero (endless)",
    "hard.bin": "a hard link to a secret outside the model's folder",
    "dir.bin": "a directory",
    "link-dir/secret.bin": "a file inside a symlinked directory outside the folder",
}


def loop_node(trip_count: str, condition: str, value: str, output: str) -> Any:
    """A ``Loop`` node passing ``value`` through an identity body ``trip_count`` times (a constant can say 2^62)."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["v_in"], ["v_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],
    )
    return helper.make_node("Loop", [trip_count, condition, value], [output], body=body)


def runtime_sized_nodes(
    op: str, value: str, size: str, output: str, *, prefix: str = "", zero: str = "zero", delta: str = "one"
) -> list[Any]:
    """Nodes ``value -> output`` through ``op`` (one of :data:`RUNTIME_SIZED_OPS`) sized by the tensor ``size``.

    ``Range`` counts from the scalar ``zero`` to the max of ``value`` by ``delta`` (a tiny delta
    is a huge allocation). Intermediate names start with ``prefix``.
    """
    from onnx import helper

    if op == "ConstantOfShape":
        return [
            helper.make_node("ConstantOfShape", [size], [prefix + "z"]),
            helper.make_node("Add", [value, prefix + "z"], [output]),
        ]
    if op in ("Expand", "Tile"):
        return [helper.make_node(op, [value, size], [output])]
    if op == "Range":
        return [
            helper.make_node("ReduceMax", [value], [prefix + "m"], keepdims=0),
            helper.make_node("Range", [zero, prefix + "m", delta], [prefix + "r"]),
            helper.make_node("ReduceSum", [prefix + "r"], [prefix + "rs"], keepdims=0),
            helper.make_node("Add", [value, prefix + "rs"], [output]),
        ]
    raise KeyError(f"expected one of {RUNTIME_SIZED_OPS}, got {op!r}")


def plant_external_trap(folder: Path, location: str, secret: Path) -> None:
    """Plant the trap :data:`EXTERNAL_TRAPS` names ``location`` in ``folder`` (``secret`` lies outside it)."""
    target = folder / location
    if location == "dir.bin":
        target.mkdir(exist_ok=True)
        return
    if location == "link-dir/secret.bin":
        if not (folder / "link-dir").exists():
            os.symlink(secret.parent, folder / "link-dir")
        return
    if target.exists() or target.is_symlink():
        return
    if location == "fifo.bin":
        os.mkfifo(target)
    elif location == "link-outside.bin":
        os.symlink(secret, target)
    elif location == "link-zero.bin":
        os.symlink("/dev/zero", target)
    elif location == "hard.bin":
        os.link(secret, target)
    else:
        raise KeyError(f"expected one of {sorted(EXTERNAL_TRAPS)}, got {location!r}")


def npz_bytes(**arrays: Any) -> bytes:
    """The bytes of ``np.savez(**arrays)``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx_header(code: int, dims: list[int]) -> bytes:
    """An IDX header: type ``code`` (0x08 = uint8) and big-endian dims (any 32-bit value, e.g. 0xFFFFFFFF)."""
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d & 0xFFFFFFFF) for d in dims)


def png_header(width: int, height: int, depth: int = 8, color: int = 0) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (a decompression bomb for large sides)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b"")
    )
