"""File I/O for model files: open regular files only, read them whole, parse the protobuf."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError, UnsafeModelError
from edgeguard.model.limits import MAX_MODEL_BYTES

__all__ = ["open_regular", "read_all", "read_model_bytes", "parse_model", "first_undecodable_text"]


def open_regular(path: Path, what: str, *, single_link: bool = False) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only once it is known to be a regular file (``stat`` first: a FIFO, a
    device or a hard link is refused without being opened), then check the open file again."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise ModelLoadError(f"expected {what} at {path}, but there is none; check the path") from None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"expected a readable {what} at {path}, got {type(error).__name__}: {error}") from None
    _check_regular(before, path, what, single_link)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ModelLoadError(f"expected {what} at {path}, but there is none; check the path") from None
    except OSError as error:
        raise ModelLoadError(f"expected a readable {what} at {path}, got {type(error).__name__}: {error}") from None
    try:
        info = os.fstat(fd)
        _check_regular(info, path, what, single_link)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeModelError(f"expected {path} to stay the same file while it is opened, got it replaced")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def _check_regular(info: os.stat_result, path: Path, what: str, single_link: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeModelError(
            f"expected {what} to be a regular file, got {_file_kind(info.st_mode)} at {path}; "
            "refusing to read it (a FIFO can block forever, a device can be endless)"
        )
    if single_link and info.st_nlink > 1:
        raise UnsafeModelError(
            f"expected {what} to have one link, got {info.st_nlink} hard links at {path}; a hard link can "
            "expose a file from outside the folder: copy it (cp) to break the link"
        )


def read_all(fd: int, size: int, path: Path) -> bytes:
    try:
        return _read_chunks(fd, size, path)
    except MemoryError:
        raise ModelTooLargeError(
            f"expected enough memory to read {size} bytes from {path}, got a MemoryError; "
            "the model is too large for this device"
        ) from None


def _read_chunks(fd: int, size: int, path: Path) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size or os.read(fd, 1):
        raise ModelLoadError(f"expected {size} bytes in {path}, got {len(data)} or more: the file changed while read")
    return data


def read_model_bytes(path: Path) -> bytes:
    if path.is_dir():  # a wrong path, not an attack
        raise ModelLoadError(f"expected an ONNX file at {path}, got a directory; pass the .onnx file inside it")
    fd, info = open_regular(path, "an ONNX file")
    try:
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelTooLargeError(
                f"expected an ONNX file under 2 GiB (protobuf's limit), got {info.st_size} bytes at {path}; "
                "large weights belong in external data files"
            )
        return read_all(fd, info.st_size, path)
    finally:
        os.close(fd)


def parse_model(data: bytes, path: Path) -> Any:
    import onnx

    if not data:
        raise ModelLoadError(f"expected a valid ONNX protobuf in {path}, got an empty file; fetch it again")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError family, RecursionError on deep nesting
        raise ModelLoadError(
            f"expected a valid ONNX protobuf in {path}, got {type(error).__name__}: {str(error)[:200]}; "
            "the file is not an ONNX model (truncated download?)"
        ) from None
    if not proto.HasField("graph"):
        raise ModelLoadError(f"expected an ONNX model with a graph in {path}, got none; fetch it again")
    where = first_undecodable_text(proto)
    if where is not None:
        raise ModelLoadError(
            f"expected UTF-8 text in every name of the ONNX model in {path}, got undecodable bytes in {where}; "
            "the file is corrupt (a flipped bit?): fetch it again"
        )
    return proto


def first_undecodable_text(proto: Any) -> str | None:
    """Where a name or metadata string of ``proto`` is not valid UTF-8 (None when all are).

    protobuf hands such proto2 strings over as ``bytes``; onnx's helpers would later raise
    UnicodeDecodeError on them (and onnxruntime would print them), so the loader refuses them.
    """

    def graph(g: Any, where: str, depth: int = 0) -> str | None:
        if depth > 64:
            return None  # the tensor walk refuses such nesting with its own message
        texts = [("graph name", g.name)]
        for kind in ("input", "output", "value_info"):
            texts += [(f"graph {kind} name", v.name) for v in getattr(g, kind)]
        texts += [("initializer name", t.name) for t in g.initializer]
        for text_where, text in texts:
            if isinstance(text, bytes):
                return f"a {text_where}{where}"
        for node in g.node:
            found = nodes([node], where, depth)
            if found:
                return found
        return None

    def nodes(items: Any, where: str, depth: int) -> str | None:
        for node in items:
            fields = [node.name, node.op_type, node.domain, *node.input, *node.output]
            fields += [attribute.name for attribute in node.attribute]
            if any(isinstance(text, bytes) for text in fields):
                return f"node #{list(items).index(node)} ({'op ' + node.op_type if isinstance(node.op_type, str) else 'its op type'}){where}"
            for attribute in node.attribute:
                subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
                for sub in subgraphs:
                    found = graph(sub, f" inside {node.op_type!s}", depth + 1)
                    if found:
                        return found
        return None

    for entry in proto.metadata_props:
        if isinstance(entry.key, bytes) or isinstance(entry.value, bytes):
            return "the metadata_props"
    for opset in proto.opset_import:
        if isinstance(opset.domain, bytes):
            return "an opset domain"
    found = graph(proto.graph, "")
    if found:
        return found
    for function in proto.functions:
        texts = [function.name, function.domain, *function.input, *function.output]
        if any(isinstance(text, bytes) for text in texts):
            return "a model-local function's signature"
        found = nodes(function.node, " in a model-local function", 0)
        if found:
            return found
    return None


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"
