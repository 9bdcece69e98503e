"""ONNX export of the classifier (what the user receives) and of the secret decoder.

Both go through the TorchScript exporter (``dynamo=False``, opset 17) with a dynamic
batch dimension, are checked with ``onnx.checker`` and compared against torch on
onnxruntime before anything is written: a file whose outputs differ by more than
``tolerance`` is never written (:class:`ExportCheckError`).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeguard.errors import EdgeguardError
from edgeguard.model import ModelInfo

__all__ = [
    "ExportCheckError",
    "OPSET",
    "TOLERANCE",
    "export_classifier",
    "export_decoder",
    "run_onnx",
    "run_onnx_batched",
]

OPSET = 17
TOLERANCE = 1e-4


class ExportCheckError(EdgeguardError, RuntimeError):
    """The exported graph does not reproduce the torch model within the tolerance."""


def run_onnx(model_bytes_or_path: bytes | str | os.PathLike, inputs: np.ndarray) -> np.ndarray:
    """Run a one-input one-output ONNX model on ``inputs`` with onnxruntime (CPU)."""
    import onnxruntime

    source = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def run_onnx_batched(path: str | os.PathLike, inputs: np.ndarray, batch: int = 2000) -> np.ndarray:
    """:func:`run_onnx` over ``inputs`` in chunks of ``batch`` rows, with one session."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: np.ascontiguousarray(inputs[i : i + batch], dtype=np.float32)})[0]
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(parts)


def _export(
    module: nn.Module,
    sample: torch.Tensor,
    path: str | os.PathLike,
    metadata: dict[str, str],
    tolerance: float,
) -> float:
    """Export ``module`` (eval mode) with input "input" / output "output"; returns the max abs difference."""
    import onnx

    module = module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample[:1],),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "pytorch"
    model.producer_version = torch.__version__.split("+")[0]
    model.doc_string = ""
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    worst = 0.0
    with torch.no_grad():
        for batch in (sample[:1], sample[:5], sample):
            expected = module(batch).numpy()
            actual = run_onnx(data, batch.numpy())
            if actual.shape != expected.shape:
                raise ExportCheckError(
                    f"expected onnxruntime output of shape {expected.shape}, got {actual.shape}; "
                    "the dynamic batch dimension did not export"
                )
            worst = max(worst, float(np.abs(actual - expected).max()))
    if not worst <= tolerance:
        raise ExportCheckError(
            f"expected onnxruntime to match torch within {tolerance}, got a max abs difference of {worst:.3g}; "
            f"{path} was not written"
        )
    Path(path).write_bytes(data)
    return worst


def export_classifier(
    released: nn.Module,
    path: str | os.PathLike,
    info: ModelInfo,
    sample: torch.Tensor,
    producer: dict[str, str] | None = None,
    tolerance: float = TOLERANCE,
) -> float:
    """Write the classifier a user receives: pixels in [0, 1] "input" (N, C, H, W) -> "output" (N, K).

    ``released`` is the full graph (normalisation, network, and Softmax/Sigmoid in the
    softmax setting). ``info`` becomes the metadata_props (task, classes, shapes, pixel
    range, output kind); ``producer`` adds what a provider publishes (model name,
    version...). Nothing about the training objective is written. ``sample`` (at least 5
    images) is used to check onnxruntime against torch. Returns the max abs difference.
    """
    metadata = dict(producer or {})
    metadata.update(info.to_metadata_props())
    return _export(released, sample, path, metadata, tolerance)


def export_decoder(
    decoder: nn.Module, path: str | os.PathLike, sample_outputs: torch.Tensor, tolerance: float = TOLERANCE
) -> float:
    """Write the server's decoder: the classifier's raw ONNX output "input" (N, K) -> images "output" (N, C, H, W)."""
    metadata = {"consumes": "output of classifier.onnx", "produces": "images in [0, 1], NCHW"}
    return _export(decoder, sample_outputs, path, metadata, tolerance)
