"""What SafeModel makes of a classifier's output and declared input range.

- A label output (an int64 label turned into a one-hot by
  :func:`edgeguard.model.signature.prepare_graph`) is released as labels only: the
  filters must end in a label (Argmax / ClassLabels), the capacity is log2 K.
- A file that declares nothing about its output, and whose graph does not end in a
  Softmax / Sigmoid / ZipMap, is run once on a few synthetic inputs: rows that are all
  probability vectors make it a probabilities model (SafeModel then checks every release's
  raw rows against that claim, so a model that lied fails closed).
- ``input_range=`` overrides the declared input range; the fused graph checks it (float
  inputs; finiteness only when there is no range: the one rule is
  :func:`edgeguard.guard.build.input_check_range`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeguard.errors import FilterError, ModelLoadError
from edgeguard.filters import FilterPipeline, OutputFilter
from edgeguard.model.signature import fixed_batches, looks_like_probabilities

__all__ = ["check_label_release", "output_kind_from_values", "with_input_range"]

#: Synthetic rows run to recognise probabilities from the values.
_PROBE_ROWS = 8


def check_label_release(filters: list[OutputFilter], info: Any) -> None:
    """A label output can only be released as a label: refuse filters that release values."""
    pipeline = FilterPipeline(filters, input_kind="probabilities", task_type=info.task_type)
    if not pipeline.domains(info.num_classes)[-1].terminal:
        raise FilterError(
            f"expected a label-only release (e.g. [Argmax()]) for the label output {info.output_source!r}, got "
            f"{[f.name for f in filters]}; a label output carries nothing else. To release probabilities, choose "
            "the probabilities output with output=... (CLI --model-output)"
        )


def with_input_range(info: Any, input_range: Sequence[float] | None) -> Any:
    """``info`` with ``input_range`` (low, high) as its declared input range."""
    if input_range is None:
        return info
    values = tuple(float(v) for v in input_range)
    if len(values) != 2 or not values[0] < values[1] or any(math.isnan(v) for v in values):
        raise ModelLoadError(f"expected input_range=(low, high) with low < high, got {tuple(input_range)!r}")
    if info.input_dtype == "uint8":
        raise ModelLoadError("expected no input_range for a uint8 input (its values are 0..255), got one")
    return dataclasses.replace(info, pixel_range=values)


def _synthetic(info: Any, rng: np.random.Generator) -> np.ndarray:
    shape = (_PROBE_ROWS, *info.input_shape)
    if info.input_dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if info.pixel_range is not None:
        low, high = info.pixel_range
        return (low + rng.random(shape) * (high - low)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def output_kind_from_values(serialized: bytes, info: Any) -> Any:
    """``info`` with ``output_kind="probabilities"`` when the model's rows on synthetic inputs are all
    probability vectors (``output_kind_source="values"``); unchanged otherwise (logits)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
        x = _synthetic(info, np.random.default_rng(0))
        if info.fixed_batch:
            rows = [session.run(None, {info.input_name: chunk})[0][:n] for chunk, n in fixed_batches(x, info.fixed_batch)]
            values = np.concatenate(rows)
        else:
            values = session.run(None, {info.input_name: x})[0]
    except Exception:  # the model does not run on these inputs: keep the default; SafeModel reports errors at predict
        return info
    if looks_like_probabilities(values, info.task_type):
        return dataclasses.replace(info, output_kind="probabilities", output_kind_source="values")
    return info
