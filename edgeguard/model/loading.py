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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError, UnsafeModelError
from edgeguard.model.dynamic import unbounded_ops
from edgeguard.model.external import load_external
from edgeguard.model.files import parse_model, read_model_bytes
from edgeguard.model.info import ModelInfo
from edgeguard.model.limits import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES
from edgeguard.model.shapes import check_inferred_shapes, check_value_shapes
from edgeguard.model.tensors import check_tensors, iter_tensors

__all__ = ["LoadedModel", "load_model", "load_proto", "model_sha256"]


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
    output: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    input_layout: str | None = None,
    class_names: tuple[str, ...] | None = None,
    prepare: bool = True,
) -> LoadedModel:
    """Read, check and hash an ONNX file (see the module docstring for every check).

    Raises :class:`UnsafeModelError` for a file that must not be loaded (external data
    leaving its folder or not a regular file, refused ops), :class:`ModelTooLargeError`
    for declared sizes above the limits and :class:`ModelLoadError` for anything else
    that is malformed. ``require_info=False`` lets a file without a usable task
    declaration load (``.info`` is then None; the vet supplies it from options).

    ``output``, ``input_shape``, ``input_layout`` and ``class_names`` say how to read the
    graph (:meth:`ModelInfo.from_model`). With ``prepare`` (the default) and a usable info,
    ``.proto`` / ``.serialized`` are the graph that is run: only the chosen output, as a float
    (N, K) tensor (:func:`prepared_model`); the digest is always the file's.
    """
    path = Path(os.path.abspath(os.fspath(path)))
    data = read_model_bytes(path)
    proto = parse_model(data, path)
    digest = hashlib.sha256(data)
    del data
    folder = path.parent
    tensors = list(iter_tensors(proto))
    references = check_tensors(tensors, max_tensor_bytes, max_total_bytes)
    check_value_shapes(proto, max_tensor_bytes)
    problems = unbounded_ops(proto, max_tensor_bytes)
    if not problems:  # sizes fixed by the file: infer them all (a Conv padded by 2^14 is refused here)
        check_inferred_shapes(proto, max_tensor_bytes)
    if problems and not allow_dynamic_ops:
        raise UnsafeModelError(
            f"expected a feed-forward graph whose sizes are fixed before it runs, got {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; such ops can loop or allocate without bound on a crafted input. Pass allow_dynamic_ops=True "
            "(SafeModel then enforces a per-call deadline) only for a provider you trust"
        )
    locations = load_external(references, folder, digest, max_total_bytes)
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
        info = ModelInfo.from_model(
            proto, output=output, input_shape=input_shape, input_layout=input_layout, class_names=class_names
        )
    except ModelLoadError:
        if require_info:
            raise
    if info is not None and prepare:
        proto, serialized = prepared_model(proto, serialized, info)
    return LoadedModel(
        path=path,
        proto=proto,
        serialized=serialized,
        sha256=digest.hexdigest(),
        info=info,
        external_files=tuple(locations),
        dynamic_ops=tuple(problems),
    )


def prepared_model(proto: Any, serialized: bytes, info: Any) -> tuple[Any, bytes]:
    """The graph that is run: only the chosen output, as a float (N, K) tensor
    (:func:`edgeguard.model.signature.prepare_graph`); the file's own proto and bytes when it is that already."""
    from edgeguard.model.signature import prepare_graph, read_signature

    outputs = proto.graph.output
    if info.output_type == "scores" and len(outputs) == 1 and outputs[0].name == info.output_name:
        return proto, serialized
    signature = read_signature(
        proto,
        output=info.output_source or info.output_name,
        input_shape=tuple(info.input_shape),
        input_layout=info.input_layout,
        num_classes=info.num_classes,
    )
    prepared = prepare_graph(proto, signature)
    return prepared, prepared.SerializeToString()


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) that binds a vetting verdict to a model file: the digest :func:`load_model` computes.

    For a single-file model it equals ``sha256sum model.onnx``. When the model stores
    tensors in external data files, each file (sorted by location) is folded in as
    ``NUL location NUL bytes``, so changing the weights changes the digest too. The file
    is checked as :func:`load_model` does (external data outside the folder, or not a
    regular file, raises before anything is read).
    """
    return load_model(path, allow_dynamic_ops=True, require_info=False).sha256


def load_proto(path: str | os.PathLike) -> Any:
    """The checked ``onnx.ModelProto`` of a file, external data in memory (:func:`load_model`'s
    checks; dynamic ops and files without a task declaration are let through)."""
    return load_model(path, allow_dynamic_ops=True, require_info=False, prepare=False).proto
