"""Loading and running the vetted model: the prepared graph, onnxruntime sessions, chunked runs.

The vet runs the graph :func:`edgeguard.model.load_model` prepared (only the chosen output,
as (N, K) scores); a graph with a fixed batch size is fed chunks of exactly that size, the last
one padded (:func:`edgeguard.model.signature.fixed_batches`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import InferenceError
from edgeguard.model.signature import fixed_batches, stitch
from edgeguard.safe_model.session import scrub_inference_error
from edgeguard.vetting.probe import model_inputs

__all__ = ["load_for_vet", "session", "runner", "scaler", "chunk_rows", "run_values", "head_inputs", "CHUNK"]

#: Rows per onnxruntime call when the vet runs the model on many images...
CHUNK = 512
#: ... and at most this many input values per call.
CHUNK_VALUES = 1 << 24


def load_for_vet(path: Path, max_tensor_bytes: int, max_total_bytes: int, describe: dict[str, Any] | None = None) -> Any:
    """Read, check and hash the file once (edgeguard.model.load_model); the graph run is the
    prepared one (only the chosen output, as (N, K) scores)."""
    from edgeguard.model import load_model

    return load_model(
        path,
        allow_dynamic_ops=True,  # the static audit has reported them; the vet only runs bounded probes
        require_info=False,
        max_tensor_bytes=max_tensor_bytes,
        max_total_bytes=max_total_bytes,
        **{key: value for key, value in (describe or {}).items() if value is not None},
    )


def session(serialized: bytes) -> Any:
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.log_severity_level = 3
        # idle onnxruntime threads must not spin: the audit's linear algebra runs between model calls
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise InferenceError(f"expected onnxruntime to load the model, got an error: {error}") from None


def chunk_rows(sample_shape: tuple[int, ...]) -> int:
    """Rows per onnxruntime call for inputs of this shape: :data:`CHUNK`, fewer for large inputs."""
    return max(1, min(CHUNK, CHUNK_VALUES // max(1, math.prod(sample_shape))))


def runner(session: Any, info: Any, chunk: int = CHUNK) -> Callable[[np.ndarray], np.ndarray]:
    """Model inputs -> (N, K) float64 outputs, in chunks of ``chunk`` rows (of the graph's fixed
    batch size, the last one padded, when it has one)."""
    name = session.get_inputs()[0].name
    fixed = getattr(info, "fixed_batch", None)
    if chunk == CHUNK:  # large inputs: fewer rows per call, so activations stay small (an explicit chunk is kept)
        chunk = chunk_rows(tuple(info.input_shape))

    def run(inputs: np.ndarray) -> np.ndarray:
        failure = None
        try:
            if fixed:
                parts = [(session.run(None, {name: part})[0], rows) for part, rows in fixed_batches(inputs, fixed)]
                chunks = [stitch(parts)]
            else:
                chunks = [session.run(None, {name: inputs[i : i + chunk]})[0] for i in range(0, len(inputs), chunk)]
        except Exception as error:  # onnxruntime's message can quote values computed from the probe images
            failure = scrub_inference_error(error, len(inputs), info.num_classes, frozenset())
        if failure is not None:
            raise failure
        outputs = np.concatenate(chunks).astype(np.float64)
        if outputs.ndim != 2 or outputs.shape[1] != info.num_classes:
            raise InferenceError(
                f"expected outputs of shape (N, {info.num_classes}) (one score per class), got {outputs.shape}"
            )
        return outputs

    return run


def scaler(info: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Probe items (images in [0, 1], or features) -> model inputs (range, layout, dtype)."""
    return lambda items: model_inputs(info, items)


def run_values(
    proto: Any, inputs: np.ndarray, names: list[str], chunk: int = 256, max_values_per_row: int | None = None
) -> dict[str, np.ndarray]:
    """Intermediate values ``names`` of the graph ``proto`` on model ``inputs``, each flattened to (N, d).

    The graph is run in onnxruntime with the names added as outputs. A value whose first axis
    is not the batch (a graph with a fixed batch size, a shape tensor) is left out, and so is
    one with more than ``max_values_per_row`` values per row (measured on one row first, so
    full-resolution feature maps are never gathered for the whole probe).
    """
    import onnx

    if not names or not len(inputs):
        return {}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    sess = session(copy.SerializeToString())
    wanted = [o.name for o in sess.get_outputs() if o.name in names]
    feed = sess.get_inputs()[0].name
    try:
        if max_values_per_row is not None:
            first = sess.run(wanted, {feed: inputs[:1]})
            wanted = [n for n, v in zip(wanted, first) if np.asarray(v).size <= max_values_per_row]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for start in range(0, len(inputs), chunk):
            rows = inputs[start : start + chunk]
            for name, value in zip(wanted, sess.run(wanted, {feed: rows})):
                value = np.asarray(value)
                if value.ndim == 0 or value.shape[0] != len(rows):
                    parts.pop(name, None)
                elif name in parts:
                    parts[name].append(value.reshape(len(rows), -1).astype(np.float32))
    except Exception:  # noqa: BLE001 - e.g. a fixed batch size: no layer values (the caller records it)
        return {}
    return {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}


def head_inputs(proto: Any, head: Any, inputs: np.ndarray) -> np.ndarray | None:
    """The values of ``head.value`` (:func:`edgeguard.vetting.accuracy.output_head`) on model ``inputs``, (N, d).

    None when there is no head value, or it cannot be gathered (too wide, a fixed batch size).
    """
    from edgeguard.vetting.accuracy import MAX_HEAD_VALUES

    if head.value is None:
        return None
    values = run_values(proto, inputs, [head.value], max_values_per_row=MAX_HEAD_VALUES)
    return values.get(head.value)
