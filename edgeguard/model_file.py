"""Reading an ONNX file: the ONE place a model is read, checked and hashed.

:func:`load_model` reads the model file once, parses it from that buffer and checks
every tensor-bearing field (initializers, sparse initializers, ``Constant``
``value``/``sparse_value`` attributes, the same inside If/Loop/Scan bodies, model-local
functions and training graphs) *before* onnxruntime sees anything:

- external data must be named by a relative location inside the model's folder, be a
  regular file (no FIFO, device, directory, symlink leaving the folder, hard link), and
  its ``offset``/``length`` must be non-negative integers inside the file;
- each external file is opened once, without blocking, checked with ``fstat`` and read
  into memory; those same bytes are hashed and copied into the proto, so
  :attr:`LoadedModel.serialized` names no file at all and onnxruntime never opens one;
- declared sizes (tensor dims, graph value shapes, constant shapes fed to shape-taking
  ops) are bounded before anything is allocated;
- control flow (If/Loop/Scan) and ops whose output size is computed at run time
  (ConstantOfShape, Expand, Tile, Range, Resize, ...) are refused unless
  ``allow_dynamic_ops=True`` (then SafeModel runs every call under a deadline).

The digest (:attr:`LoadedModel.sha256`) is ``sha256sum model.onnx`` for a single-file
model; each external file is folded in, sorted by location, as ``NUL location NUL bytes``.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError, UnsafeModelError

__all__ = [
    "LoadedModel",
    "load_model",
    "model_sha256",
    "iter_tensors",
    "unbounded_ops",
    "CONTROL_FLOW_OPS",
    "DYNAMIC_SIZE_OPS",
    "DEFAULT_MAX_TENSOR_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
]

#: Largest single tensor accepted (declared or stored), 1 GiB.
DEFAULT_MAX_TENSOR_BYTES = 1 << 30
#: Largest sum of stored tensor bytes (the protobuf itself is capped at 2 GiB), 4 GiB.
DEFAULT_MAX_TOTAL_BYTES = 4 << 30
#: Largest model file read (protobuf's own limit).
_MAX_MODEL_BYTES = (2 << 30) - 1
_MAX_LOCATION_CHARS = 1024
_MAX_COMPONENT_BYTES = 255
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}

#: Control flow: run time is data dependent (a Loop's trip count is an input).
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
#: Ops whose output size comes from a tensor input: position(s) of those inputs.
DYNAMIC_SIZE_OPS: dict[str, tuple[int, ...]] = {
    "ConstantOfShape": (0,),
    "Expand": (1,),
    "Tile": (1,),
    "Range": (0, 1, 2),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Pad": (1,),
    "OneHot": (1,),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "MaxUnpool": (2,),
    "DFT": (1,),
    "STFT": (1, 3),
    "SplitToSequence": (1,),
    "SequenceEmpty": (),
    "SequenceInsert": (),
    "ConcatFromSequence": (),
    "StringSplit": (),
}
#: Ops whose output size comes from an attribute (checked against the limits).
_ATTRIBUTE_SHAPE_OPS = {"RandomNormal": "shape", "RandomUniform": "shape"}
_BYTES_PER_ELEMENT = 8  # bound for a constant shape's output (int64/double worst case)
_MAX_REPEATS = 1 << 12  # Tile repeats / Resize scale product / Pad widths accepted as constants
_MAX_RANGE = 1 << 24


@dataclass(frozen=True)
class LoadedModel:
    """A checked ONNX model, read once: the proto, the bytes to give onnxruntime, the digest."""

    path: Path
    proto: Any  # onnx.ModelProto, external data copied in (no external references left)
    serialized: bytes  # proto.SerializeToString(): what onnxruntime parses
    sha256: str  # model bytes + every external file (sorted by location)
    info: Any  # ModelInfo, or None when require_info=False and the file declares no usable task
    external_files: tuple[str, ...] = field(default=())  # normalised locations, sorted
    dynamic_ops: tuple[str, ...] = field(default=())  # what allow_dynamic_ops let through

    @property
    def folder(self) -> Path:
        return self.path.parent


def load_model(
    path: str | os.PathLike,
    *,
    allow_dynamic_ops: bool = False,
    require_info: bool = True,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> LoadedModel:
    """Read, check and hash an ONNX file (see the module docstring for every check).

    Raises :class:`UnsafeModelError` for a file that must not be loaded (external data
    leaving its folder or not a regular file, refused ops), :class:`ModelTooLargeError`
    for declared sizes above the limits and :class:`ModelLoadError` for anything else
    that is malformed. ``require_info=False`` lets a file without a usable task
    declaration load (``.info`` is then None; the vet supplies it from options).
    """
    from edgeguard.model_info import ModelInfo

    path = Path(os.path.abspath(os.fspath(path)))
    data = _read_model_bytes(path)
    proto = _parse(data, path)
    digest = hashlib.sha256(data)
    del data
    folder = path.parent
    tensors = list(iter_tensors(proto))
    references = _check_tensors(tensors, max_tensor_bytes, max_total_bytes)
    _check_value_shapes(proto, max_tensor_bytes)
    problems = unbounded_ops(proto, max_tensor_bytes)
    if not problems:  # sizes fixed by the file: infer them all (a Conv padded by 2^14 is refused here)
        _check_inferred_shapes(proto, max_tensor_bytes)
    if problems and not allow_dynamic_ops:
        raise UnsafeModelError(
            f"expected a feed-forward graph whose sizes are fixed before it runs, got {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; such ops can loop or allocate without bound on a crafted input. Pass allow_dynamic_ops=True "
            "(SafeModel then enforces a per-call deadline) only for a provider you trust"
        )
    locations = _load_external(references, folder, digest, max_total_bytes)
    for tensor in tensors:  # nothing may point to a file any more
        if tensor.data_location == 1 or len(tensor.external_data):
            raise ModelLoadError(f"expected every external tensor to be loaded, got {tensor.name!r} still external")
    try:
        serialized = proto.SerializeToString()
    except Exception as error:  # protobuf refuses > 2 GiB
        raise ModelTooLargeError(
            f"expected a model under 2 GiB once its external data is loaded, got an error: {error}; "
            "edgeguard runs on-device classifiers, not models this large"
        ) from None
    info = None
    try:
        info = ModelInfo.from_model(proto)
    except ModelLoadError:
        if require_info:
            raise
    return LoadedModel(
        path=path,
        proto=proto,
        serialized=serialized,
        sha256=digest.hexdigest(),
        info=info,
        external_files=tuple(locations),
        dynamic_ops=tuple(problems),
    )


def model_sha256(path: str | os.PathLike) -> str:
    """The digest :func:`load_model` computes (model bytes + every external file)."""
    return load_model(path, allow_dynamic_ops=True, require_info=False).sha256


# -- reading -------------------------------------------------------------------------------


def _open_regular(path: Path, what: str, *, single_link: bool = False) -> tuple[int, os.stat_result]:
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


def _read_all(fd: int, size: int, path: Path) -> bytes:
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


def _read_model_bytes(path: Path) -> bytes:
    if path.is_dir():  # a wrong path, not an attack
        raise ModelLoadError(f"expected an ONNX file at {path}, got a directory; pass the .onnx file inside it")
    fd, info = _open_regular(path, "an ONNX file")
    try:
        if info.st_size > _MAX_MODEL_BYTES:
            raise ModelTooLargeError(
                f"expected an ONNX file under 2 GiB (protobuf's limit), got {info.st_size} bytes at {path}; "
                "large weights belong in external data files"
            )
        return _read_all(fd, info.st_size, path)
    finally:
        os.close(fd)


def _parse(data: bytes, path: Path) -> Any:
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
    return proto


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


# -- tensors -------------------------------------------------------------------------------


def iter_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto that can hold data: initializers, sparse initializers (values and
    indices), Constant/attribute tensors and sparse tensors, in the main graph, every
    subgraph, every model-local function and the training graphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for training in model.training_info:
        for name in ("initialization", "algorithm"):
            if training.HasField(name):
                yield from _graph_tensors(getattr(training, name))


def _graph_tensors(graph: Any, depth: int = 0) -> Iterator[Any]:
    if depth > 64:
        raise ModelLoadError("expected subgraphs nested at most 64 deep, got deeper; the file is malformed")
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, depth)


def _node_tensors(node: Any, depth: int = 0) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g, depth + 1)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph, depth + 1)


def _itemsize(data_type: int) -> int | None:
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


def _elements(dims: Any, what: str) -> int:
    count = 1
    for dim in dims:
        if dim < 0:
            raise ModelLoadError(f"expected non-negative dims, got {list(dims)} for {what}; the file is malformed")
        count *= int(dim)
    return count


@dataclass
class _Reference:
    tensor: Any
    location: str  # normalised, relative, '/'-separated
    offset: int
    length: int | None


def _check_tensors(tensors: list[Any], max_tensor_bytes: int, max_total_bytes: int) -> list[_Reference]:
    references: list[_Reference] = []
    total = 0
    for tensor in tensors:
        what = f"tensor {tensor.name!r}"
        count = _elements(tensor.dims, what)
        itemsize = _itemsize(tensor.data_type)
        declared = count * itemsize if itemsize else (count + 1) // 2 if itemsize == 0 else 0
        if declared > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected tensors of at most {max_tensor_bytes} bytes, got {declared} bytes declared for {what} "
                f"(dims {list(tensor.dims)}); raise max_tensor_bytes only if the model is legitimately that large"
            )
        total += declared
        if total > max_total_bytes:
            error = ModelTooLargeError(
                f"expected at most {max_total_bytes} bytes of stored tensors, got more than {total}; "
                "raise max_total_bytes only if the model is legitimately that large"
            )
            error.total = True  # the sum, not one tensor (the vet names it initializers-too-large)
            raise error
        external = tensor.data_location == 1 or len(tensor.external_data) > 0
        if external:
            references.append(_external_reference(tensor, declared if itemsize is not None else None))
        elif itemsize and tensor.HasField("raw_data") and len(tensor.raw_data) != declared:
            raise ModelLoadError(
                f"expected {declared} bytes of raw data for {what} (dims {list(tensor.dims)}), got "
                f"{len(tensor.raw_data)}; the file is truncated or corrupt"
            )
    return references


def _external_reference(tensor: Any, expected: int | None) -> _Reference:
    what = f"tensor {tensor.name!r}"
    if tensor.data_location != 1:
        raise ModelLoadError(f"expected external_data entries only on EXTERNAL tensors, got them on {what}")
    if expected is None:
        raise ModelLoadError(f"expected external data only for numeric tensors, got it for {what}")
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise ModelLoadError(
                f"expected external_data keys among {sorted(_EXTERNAL_KEYS)}, got {entry.key[:40]!r} for {what}"
            )
        if entry.key in entries:
            raise ModelLoadError(f"expected each external_data key once, got {entry.key!r} twice for {what}")
        entries[entry.key] = entry.value
    location = _normalise_location(entries.get("location", ""), what)
    offset = _non_negative(entries.get("offset", "0"), "offset", what)
    length = _non_negative(entries["length"], "length", what) if "length" in entries else None
    if length is not None and length != expected:
        raise ModelLoadError(
            f"expected external length {expected} for {what} (dims {list(tensor.dims)}), got {length}; "
            "the file is corrupt"
        )
    return _Reference(tensor, location, offset, expected if length is None else length)


def _non_negative(text: str, key: str, what: str) -> int:
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise ModelLoadError(
            f"expected a non-negative integer external-data {key} for {what}, got {text[:40]!r}; the file is corrupt"
        )
    return int(text)


def _normalise_location(location: str, what: str) -> str:
    if not location:
        raise ModelLoadError(f"expected an external-data location for {what}, got none; the file is corrupt")
    shown = location[:80]
    if "\0" in location or len(location) > _MAX_LOCATION_CHARS:
        raise UnsafeModelError(
            f"expected an external-data location without NUL bytes and under {_MAX_LOCATION_CHARS} characters, got "
            f"{shown!r} for {what}; refusing to load it"
        )
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise UnsafeModelError(
            f"expected external data inside the model's folder, got absolute location {shown!r} for {what}; "
            "refusing to load a file that reads outside its folder"
        )
    parts = [part for part in location.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeModelError(
            f"expected external data inside the model's folder, got location {shown!r} for {what}; "
            "refusing to load a file that reads outside its folder"
        )
    if any(len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES for part in parts):
        raise UnsafeModelError(
            f"expected location components of at most {_MAX_COMPONENT_BYTES} bytes, got {shown!r}... for {what}"
        )
    return str(PurePosixPath(*parts))


def _resolve_inside(folder: Path, location: str) -> Path:
    """The data file's real path, refused when it (or a symlink on the way) leaves the folder."""
    real_folder = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(folder.joinpath(*location.split("/"))))
    if not target.is_relative_to(real_folder) or target == real_folder:
        raise UnsafeModelError(
            f"expected external data inside the model's folder {folder}, got {location!r} resolving to {target}; "
            "refusing to load a file that reads outside its folder"
        )
    return target


def _load_external(references: list[_Reference], folder: Path, digest: Any, max_total_bytes: int) -> list[str]:
    """Read each external file once (sorted by location), hash it, and copy the tensors' bytes in."""
    by_location: dict[str, list[_Reference]] = {}
    for reference in references:
        by_location.setdefault(reference.location, []).append(reference)
    # every location is checked (path and file type, without reading) before any is read
    targets = {location: _resolve_inside(folder, location) for location in sorted(by_location)}
    total = 0
    for location in sorted(by_location):
        target = targets[location]
        fd, info = _open_regular(target, f"the external data file {location!r}", single_link=True)
        try:
            size = info.st_size
            total += size
            if total > max_total_bytes:
                raise ModelTooLargeError(
                    f"expected at most {max_total_bytes} bytes of external data, got {total}; "
                    "raise max_total_bytes only if the model is legitimately that large"
                )
            for reference in by_location[location]:
                end = reference.offset + (reference.length or 0)
                if end > size:
                    raise ModelLoadError(
                        f"expected tensor {reference.tensor.name!r} inside {location!r} (bytes {reference.offset}.."
                        f"{end}), got a file of {size} bytes; the data file is truncated or does not belong to it"
                    )
            data = _read_all(fd, size, target)
        finally:
            os.close(fd)
        digest.update(b"\0" + location.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(data)
        view = memoryview(data)
        for reference in by_location[location]:
            tensor = reference.tensor
            for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                tensor.ClearField(name)
            tensor.raw_data = bytes(view[reference.offset : reference.offset + (reference.length or 0)])
            del tensor.external_data[:]
            tensor.data_location = 0
        del view, data
    return sorted(by_location)


# -- declared shapes -----------------------------------------------------------------------


def _check_value_shapes(model: Any, max_tensor_bytes: int) -> None:
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
        itemsize = _itemsize(tensor_type.elem_type) or 1
        if count * itemsize > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected graph values of at most {max_tensor_bytes} bytes, got {count * itemsize} declared for "
                f"{value.name!r}; the file's declared shapes are not those of an on-device classifier"
            )


def _check_inferred_shapes(model: Any, max_tensor_bytes: int) -> None:
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
        size = count * (_itemsize(tensor_type.elem_type) or 1)
        if size > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected intermediate values of at most {max_tensor_bytes} bytes per sample, got {size} bytes "
                f"inferred for {value.name[:80]!r}; the graph would allocate that much on every call"
            )


def _constants(graph: Any) -> dict[str, Any]:
    """Constant tensors of one graph scope: initializers not overridable as inputs, Constant nodes."""
    inputs = {value.name for value in graph.input}
    values = {init.name: init for init in graph.initializer if init.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    values[node.output[0]] = attribute.t
    return values


def _small_array(tensor: Any) -> Any:
    """A small constant as a numpy array (None when it is large, external or unreadable)."""
    from onnx import numpy_helper

    if tensor.data_location == 1 or len(tensor.external_data) or _elements(tensor.dims, tensor.name) > 64:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:
        return None


def _bounded(op: str, arrays: dict[int, Any], node: Any, max_tensor_bytes: int) -> str | None:
    """Why a dynamic-size op with all-constant size inputs is still too large (None when bounded)."""
    import numpy as np

    try:
        if op in ("ConstantOfShape", "Expand"):
            shape = [int(v) for v in np.asarray(arrays[0 if op == "ConstantOfShape" else 1]).reshape(-1)]
            if any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) * _BYTES_PER_ELEMENT > max_tensor_bytes:
                return f"{op} asking for shape {shape[:8]}"
            return None
        if op == "Tile":
            repeats = [int(v) for v in np.asarray(arrays[1]).reshape(-1)]
            if any(r < 0 for r in repeats) or math.prod(repeats) > _MAX_REPEATS:
                return f"Tile with repeats {repeats[:8]}"
            return None
        if op == "Range":
            start, limit, delta = (float(np.asarray(arrays[i]).reshape(-1)[0]) for i in (0, 1, 2))
            if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
                return f"Range({start}, {limit}, {delta})"
            if max(0.0, math.ceil((limit - start) / delta)) > _MAX_RANGE:
                return f"Range({start}, {limit}, {delta})"
            return None
        if op in ("Resize", "Upsample"):
            scales = arrays.get(2 if op == "Resize" else 1)
            sizes = arrays.get(3) if op == "Resize" else None
            if sizes is not None and np.asarray(sizes).size:
                values = [int(v) for v in np.asarray(sizes).reshape(-1)]
                if any(v < 0 for v in values) or math.prod(values) * 4 > max_tensor_bytes:
                    return f"{op} to sizes {values[:8]}"
            if scales is not None and np.asarray(scales).size:
                values = [float(v) for v in np.asarray(scales).reshape(-1)]
                if not all(math.isfinite(v) and 0 <= v for v in values) or math.prod(values) > _MAX_REPEATS:
                    return f"{op} by scales {values[:8]}"
            return None
        if op == "Pad":
            pads = [int(v) for v in np.asarray(arrays[1]).reshape(-1)]
            if any(abs(p) > _MAX_REPEATS for p in pads):
                return f"Pad with pads {pads[:8]}"
            return None
        if op == "OneHot":
            depth = float(np.asarray(arrays[1]).reshape(-1)[0])
            if not math.isfinite(depth) or not 0 < depth <= 1 << 16:
                return f"OneHot with depth {depth}"
            return None
    except (KeyError, IndexError, ValueError, TypeError, OverflowError):
        return f"{op} with unreadable size inputs"
    return f"{op} (its output size is computed at run time)"


def unbounded_ops(model: Any, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> list[str]:
    """Descriptions of the nodes whose run time or output size is not fixed by the file.

    Control flow always counts; a shape-taking op (ConstantOfShape, Expand, Tile, Range,
    Resize, Pad, OneHot ...) counts unless every size input is a small constant within
    the limits. Subgraphs and model-local functions are searched too.
    """
    problems: list[str] = []

    def visit(graph_nodes: Any, constants: dict[str, Any], where: str, depth: int) -> None:
        if depth > 64:
            problems.append(f"subgraphs nested deeper than 64 ({where})")
            return
        for node in graph_nodes:
            op = node.op_type
            label = f"{op} node {(node.name or (node.output[0] if node.output else ''))[:60]!r}{where}"
            standard = node.domain in ("", "ai.onnx")
            if standard and op in CONTROL_FLOW_OPS:
                problems.append(f"control flow ({label})")
            elif standard and op in DYNAMIC_SIZE_OPS:
                positions = [p for p in DYNAMIC_SIZE_OPS[op] if p < len(node.input) and node.input[p]]
                arrays = {}
                for position in positions:
                    tensor = constants.get(node.input[position])
                    arrays[position] = None if tensor is None else _small_array(tensor)
                if op in ("Resize", "Upsample") and positions:
                    dynamic = any(arrays[p] is None for p in positions if p >= (1 if op == "Upsample" else 2))
                else:
                    dynamic = not positions or any(value is None for value in arrays.values())
                why = f"{op} fed by a run-time size" if dynamic else _bounded(op, arrays, node, max_tensor_bytes)
                if why is not None:
                    problems.append(f"{why} ({label})")
            elif standard and op in _ATTRIBUTE_SHAPE_OPS and _ATTRIBUTE_SHAPE_OPS[op]:
                for attribute in node.attribute:
                    if (
                        attribute.name == "shape"
                        and math.prod(max(d, 1) for d in attribute.ints) * 8 > max_tensor_bytes
                    ):
                        problems.append(f"{op} asking for shape {list(attribute.ints)[:8]} ({label})")
            for attribute in node.attribute:
                subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
                for subgraph in subgraphs:
                    visit(subgraph.node, {**constants, **_constants(subgraph)}, f" inside {op}", depth + 1)

    visit(model.graph.node, _constants(model.graph), "", 0)
    for function in model.functions:
        local: dict[str, Any] = {}
        for node in function.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                for attribute in node.attribute:
                    if attribute.name == "value" and attribute.HasField("t"):
                        local[node.output[0]] = attribute.t
        visit(function.node, local, f" in function {function.name[:40]!r}", 0)
    return problems
