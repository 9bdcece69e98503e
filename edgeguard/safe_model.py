"""SafeModel: run a provider's ONNX classifier on the device and release only filtered outputs.

The model is loaded through :func:`edgeguard.model_info.load_onnx` (external data that
escapes the model's folder is refused), inputs are validated against what the model
declares, and every release goes through a type-checked :class:`FilterPipeline`. It
fails closed: if inference or any filter fails, an error is raised and nothing is
released; errors never quote output values. Raw outputs are available only from
:meth:`SafeModel.predict_unfiltered_unsafe` on a model built with
``allow_unsafe_raw_outputs=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import (
    EdgeguardError,
    FilterError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
    ModelRefusedError,
)
from edgeguard.filters import Argmax, ClassLabels, FilterPipeline, OutputFilter, make_rng
from edgeguard.filters.base import SUM_TOLERANCE, describe_bits
from edgeguard.model_info import ModelInfo, load_onnx

__all__ = ["SafeModel", "ViciousModelWarning", "model_sha256", "GPU_PROVIDERS", "VERDICTS", "VET_POLICIES"]

logger = logging.getLogger(__name__)

_FLOAT32 = np.dtype(np.float32)

#: Providers that ``providers="auto"`` prefers, in order, when onnxruntime offers them.
#: (TensorRT is left out: it builds engines at start-up; ask for it explicitly.)
GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)
VERDICTS = ("honest", "vicious", "inconclusive")
VET_POLICIES = ("refuse", "argmax", "warn", None)


class ViciousModelWarning(UserWarning):
    """A vetting verdict says the model is vicious (or could not tell) and the policy lets it run."""


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) that binds a vetting verdict to a model file.

    For a single-file model it equals ``sha256sum model.onnx``. When the model stores
    tensors in external data files, each file (sorted by location) is folded in as
    ``NUL location NUL bytes``, so changing the weights changes the digest too. Call
    :func:`load_onnx` first if the file is untrusted: it refuses locations that escape
    the model's folder.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # not parsable: the digest of the bytes is all there is
        return digest.hexdigest()
    from edgeguard.model_info import _all_tensors

    locations = sorted(
        {
            next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            for tensor in _all_tensors(proto)
            if uses_external_data(tensor)
        }
    )
    folder = path.resolve().parent
    for location in locations:
        digest.update(b"\0" + location.encode() + b"\0")
        digest.update((folder / location).read_bytes())
    return digest.hexdigest()


def _label_filters(task_type: str) -> list[OutputFilter]:
    """The label-only release: top-1 index (multiclass) or one 0/1 per label (multilabel)."""
    return [ClassLabels()] if task_type == "multilabel" else [Argmax()]


def _resolve_providers(providers: str | Sequence[Any], available: Sequence[str]) -> list[Any]:
    if isinstance(providers, str) and providers == "auto":
        gpu = [name for name in GPU_PROVIDERS if name in available]
        return [gpu[0], "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    if not isinstance(providers, Iterable) or not providers:
        raise ModelLoadError(f"expected providers='auto' or a non-empty list of provider names, got {providers!r}")
    providers = list(providers)
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ModelLoadError(
            f"expected execution providers that onnxruntime offers here ({', '.join(available)}), got {unknown}; "
            "pick from that list or use providers='auto' (for CUDA install the onnxruntime-gpu package)"
        )
    return providers


def _read_verdict(verdict: Any) -> tuple[str, str]:
    """(model_sha256, verdict) from a report object, a mapping, or a path to a JSON report."""
    if isinstance(verdict, str | os.PathLike):
        try:
            verdict = json.loads(Path(verdict).read_text())
        except (OSError, ValueError) as error:
            raise ModelRefusedError(
                f"expected a readable JSON vetting report at {verdict}, got {type(error).__name__}: {error}; "
                "refusing to run without the verdict that was asked for"
            ) from None
    if isinstance(verdict, Mapping):
        sha, value = verdict.get("model_sha256"), verdict.get("verdict")
    else:
        sha, value = getattr(verdict, "model_sha256", None), getattr(verdict, "verdict", None)
    value = getattr(value, "value", value)  # an Enum member
    if not isinstance(sha, str) or len(sha) != 64:
        raise ModelRefusedError(
            f"expected a verdict with a 64-hex-digit model_sha256, got {sha!r}; refusing to run (fail closed)"
        )
    if value not in VERDICTS:
        raise ModelRefusedError(f"expected a verdict in {VERDICTS}, got {value!r}; refusing to run (fail closed)")
    return sha.lower(), value


class SafeModel:
    """An ONNX classifier whose outputs are released only through output filters.

    Parameters
    ----------
    path: the ONNX file (with edgeguard's metadata_props, or shapes in the graph).
    filters: output filters applied in order (a list, one filter, or a FilterPipeline).
        None (the default) releases labels only: ``[Argmax()]`` for multiclass,
        ``[ClassLabels()]`` for multilabel models. An empty list is refused.
    providers: "auto" (a GPU provider when onnxruntime offers one, else CPU) or a list of
        onnxruntime provider names; ``.providers`` reports what the session really uses.
    threads: onnxruntime intra-op threads (None = onnxruntime's default); sets
        ``intra_op_num_threads`` on ``session_options`` (an ``onnxruntime.SessionOptions``).
    verdict: a vetting verdict for this file: an object with ``.model_sha256`` and
        ``.verdict`` ("honest" | "vicious" | "inconclusive"), a mapping with those keys,
        or a path to a JSON report. It must name this file's :func:`model_sha256`.
    on_vicious: what a "vicious" verdict does: "refuse" (ModelRefusedError now),
        "argmax" (filters replaced by the label-only release), "warn" (ViciousModelWarning
        and a log line), or None (the verdict is not consulted). "inconclusive" warns.
    allow_float64: accept float64 inputs (cast to float32); by default only float32.
    allow_unsafe_raw_outputs: enable :meth:`predict_unfiltered_unsafe`.
    max_capacity_bits: refuse filters whose release capacity exceeds this many bits.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        filters: Iterable[OutputFilter] | OutputFilter | FilterPipeline | None = None,
        providers: str | Sequence[Any] = "auto",
        threads: int | None = None,
        session_options: Any = None,
        verdict: Any = None,
        on_vicious: str | None = "refuse",
        allow_float64: bool = False,
        allow_unsafe_raw_outputs: bool = False,
        max_capacity_bits: float | None = None,
    ) -> None:
        import onnxruntime as ort

        if on_vicious not in VET_POLICIES:
            raise ModelRefusedError(f"expected on_vicious in {VET_POLICIES}, got {on_vicious!r}")
        self.path = Path(path)
        model = load_onnx(self.path)  # refuses external data outside the folder before anything else
        self.model_sha256 = model_sha256(self.path)
        self.info = ModelInfo.from_model(model)
        self.num_classes = self.info.num_classes
        self._check_graph(model)

        self.verdict: str | None = None
        self.vet_action: str | None = None
        if filters is None:
            filters = _label_filters(self.info.task_type)
        if isinstance(filters, OutputFilter):
            filters = [filters]
        elif isinstance(filters, FilterPipeline):
            filters = filters.filters
        filters = list(filters)
        if not filters:
            raise FilterError(
                "expected at least one output filter, got none; releasing raw outputs needs "
                "allow_unsafe_raw_outputs=True and predict_unfiltered_unsafe()"
            )
        if on_vicious is not None and verdict is not None:
            filters = self._apply_verdict(verdict, on_vicious, filters)
        self.pipeline = FilterPipeline(filters, input_kind=self.info.output_kind, task_type=self.info.task_type)
        self.capacity_bits = self.pipeline.capacity_bits(self.num_classes)
        if max_capacity_bits is not None and not self.capacity_bits <= max_capacity_bits:
            raise FilterError(
                f"expected filters releasing at most {max_capacity_bits} bits per row, got "
                f"{describe_bits(self.capacity_bits)}; add Round/Argmax or a ClippedLaplace"
            )

        available = ort.get_available_providers()
        resolved = _resolve_providers(providers, available)
        options = session_options if session_options is not None else ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ModelLoadError(f"expected threads to be a positive integer or None, got {threads!r}")
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(model.SerializeToString(), options, providers=resolved)
        except Exception as error:
            raise ModelLoadError(
                f"expected onnxruntime to load {self.path.name}, got {type(error).__name__}: {str(error)[:500]}"
            ) from None
        self.providers: list[str] = list(self._session.get_providers())
        # The C++ session's run() behind InferenceSession.run: SafeModel validates inputs itself, so
        # the wrapper's per-call name checks are skipped (a few microseconds at batch 1).
        binding = getattr(self._session, "_sess", None)
        self._run_session = binding.run if callable(getattr(binding, "run", None)) else self._session.run
        self._input_name = self.info.input_name
        self._output_names = [self.info.output_name]
        self._sample_shape = tuple(self.info.input_shape)
        self._low, self._high = (float(v) for v in self.info.pixel_range)
        self._max_bits = (
            int(np.array(self._high, dtype=np.float32).view(np.uint32))
            if self._low == 0.0 and self._high > 0 and float(np.float32(self._high)) == self._high
            else None
        )
        self._check_simplex = self.info.output_kind == "probabilities"
        self._allow_float64 = bool(allow_float64)
        self._allow_raw = bool(allow_unsafe_raw_outputs)
        logger.info(
            "loaded %s (sha256 %s) on %s; release: %s",
            self.path.name,
            self.model_sha256[:12],
            self.providers,
            describe_bits(self.capacity_bits),
        )

    # --- construction helpers --------------------------------------------------------------
    def _check_graph(self, model: Any) -> None:
        """The graph's static shapes must agree with the declared task (a vicious file could add outputs)."""
        from edgeguard.model_info import _static_dims

        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        graph_input = next(v for v in graph.input if v.name == self.info.input_name and v.name not in initializers)
        input_dims = _static_dims(graph_input)
        output_value = next(v for v in graph.output if v.name == self.info.output_name)
        output_dims = _static_dims(output_value)
        declared = (None, *self.info.input_shape)
        if len(input_dims) != 4 or any(
            g is not None and d is not None and g != d for g, d in zip(input_dims, declared)
        ):
            raise ModelLoadError(
                f"expected the graph input to have shape (N, {', '.join(map(str, self.info.input_shape))}) as "
                f"declared in the metadata, got {input_dims}; the file's metadata and graph disagree"
            )
        if len(output_dims) != 2 or (output_dims[1] is not None and output_dims[1] != self.num_classes):
            raise ModelLoadError(
                f"expected the graph output to have shape (N, {self.num_classes}) for {self.num_classes} classes, "
                f"got {output_dims}; the file's metadata and graph disagree"
            )
        self._fixed_batch = input_dims[0]

    def _apply_verdict(self, verdict: Any, policy: str, filters: list[OutputFilter]) -> list[OutputFilter]:
        sha, value = _read_verdict(verdict)
        if sha != self.model_sha256:
            raise ModelRefusedError(
                f"expected a verdict for this file (sha256 {self.model_sha256}), got one for sha256 {sha}: the "
                "verdict was issued for another file (the model changed since it was vetted); vet this file again"
            )
        self.verdict = value
        if value == "honest":
            logger.info("vetting verdict for %s: honest", self.path.name)
            return filters
        if value == "inconclusive":
            message = f"the vetting verdict for {self.path.name} is inconclusive; running with the filters given"
            logger.warning(message)
            warnings.warn(message, ViciousModelWarning, stacklevel=3)
            self.vet_action = "warned"
            return filters
        if policy == "refuse":
            raise ModelRefusedError(
                f"expected a model that vetting did not flag, got a vicious verdict for {self.path.name}; refusing "
                "to run it (on_vicious='refuse'). Use on_vicious='argmax' to release labels only"
            )
        if policy == "argmax":
            logger.warning("vetting flagged %s as vicious: releasing labels only", self.path.name)
            self.vet_action = "argmax"
            return _label_filters(self.info.task_type)
        message = f"vetting flagged {self.path.name} as vicious; running it anyway with the filters given"
        logger.warning(message)
        warnings.warn(message, ViciousModelWarning, stacklevel=3)
        self.vet_action = "warned"
        return filters

    # --- inputs ----------------------------------------------------------------------------
    def _validate(self, x: Any) -> tuple[np.ndarray, bool]:
        if type(x) is not np.ndarray and not isinstance(x, np.ndarray):
            raise InvalidInputError(
                f"expected a numpy array, got {type(x).__name__}; convert with np.asarray(x, dtype=np.float32)"
            )
        if x.dtype is not _FLOAT32 and x.dtype != _FLOAT32:
            if x.dtype == np.float64 and self._allow_float64:
                x = x.astype(np.float32)
            else:
                raise InvalidInputError(self._dtype_message(x.dtype))
        shape = x.shape
        if len(shape) == 4 and shape[1:] == self._sample_shape:
            single = False
        elif shape == self._sample_shape:
            x, single = x[None], True
        else:
            raise InvalidInputError(self._shape_message(shape))
        rows = x.shape[0]
        if rows == 0:
            raise InvalidInputError("expected at least one sample, got an empty batch (N = 0)")
        if self._fixed_batch is not None and rows != self._fixed_batch:
            raise InvalidInputError(
                f"expected batches of exactly {self._fixed_batch} (the graph's fixed batch size), got {rows}; "
                "split the batch, or re-export the model with a dynamic batch axis"
            )
        if self._max_bits is not None:
            # One reduction for a [0, high] range: read as unsigned integers, every float32 in [+0, high]
            # is <= high's bit pattern, while negatives (sign bit), NaN and inf are all above it.
            # (-0.0 fails here and passes the exact check below.)
            in_range = x.view(np.uint32).max() <= self._max_bits or (self._low <= x.min() and x.max() <= self._high)
        else:
            in_range = self._low <= x.min() and x.max() <= self._high  # False for NaN as well
        if not in_range:
            raise InvalidInputError(self._range_message(x))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x, single

    def _dtype_message(self, dtype: np.dtype) -> str:
        low, high = self._low, self._high
        if dtype.kind in "iub":
            hint = f"convert with x.astype(np.float32) / 255 for 8-bit images (the model expects [{low:g}, {high:g}])"
        elif dtype == np.float64:
            hint = "convert with x.astype(np.float32), or build SafeModel(..., allow_float64=True)"
        else:
            hint = "convert with x.astype(np.float32)"
        return f"expected float32 pixels, got {dtype}; {hint}"

    def _shape_message(self, shape: tuple[int, ...]) -> str:
        sample = self._sample_shape
        expected = f"a batch (N, {', '.join(map(str, sample))}) or one sample {sample}"
        channels = sample[0]
        if tuple(shape) == sample[1:]:
            hint = "add the channel axis with x[None] (one sample)"
        elif len(shape) == 3 and tuple(shape[1:]) == sample[1:] and channels == 1:
            hint = "add the channel axis with x[:, None] (a batch of single-channel images)"
        elif len(shape) == 4 and shape[-1] == channels and tuple(shape[1:3]) == sample[1:]:
            hint = "the channels look last: use x.transpose(0, 3, 1, 2)"
        elif len(shape) == 3 and shape[-1] == channels and tuple(shape[:2]) == sample[1:]:
            hint = "the channels look last: use x.transpose(2, 0, 1)"
        else:
            hint = f"resize the images to {sample[1]}x{sample[2]} with {channels} channel(s)"
        return f"expected {expected}, got shape {tuple(shape)}; {hint}"

    def _range_message(self, x: np.ndarray) -> str:
        nan = int(np.isnan(x).sum())
        if nan:
            return f"expected finite pixel values, got {nan} NaN value(s); replace or drop them before predict"
        inf = int(np.isinf(x).sum())
        if inf:
            return f"expected finite pixel values, got {inf} infinite value(s); replace or drop them before predict"
        low, high = self._low, self._high
        got_low, got_high = float(x.min()), float(x.max())
        hint = (
            "scale 8-bit images with x / 255"
            if got_low >= 0 and 1 < got_high <= 255 and (low, high) == (0.0, 1.0)
            else f"rescale the images to [{low:g}, {high:g}]"
        )
        return (
            f"expected pixel values in [{low:g}, {high:g}] (the model's declared pixel_range), got values in "
            f"[{got_low:g}, {got_high:g}]; {hint}"
        )

    # --- inference -------------------------------------------------------------------------
    @staticmethod
    def _inference_error(error: Exception) -> InferenceError:
        # onnxruntime's messages name inputs, shapes and nodes; they are produced before any output exists.
        return InferenceError(
            f"expected onnxruntime to run the model, got {type(error).__name__}: {str(error)[:300]}; "
            "nothing was released"
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of a validated batch (used by predict_unfiltered_unsafe)."""
        failure = None
        try:
            raw = self._run_session(self._output_names, {self._input_name: batch}, None)[0]
        except Exception as error:  # onnxruntime raises its own exception types
            failure = self._inference_error(error)
        if failure is not None:
            raise failure
        failure = self._check_raw(raw, len(batch))
        if failure is not None:
            raw = None
            raise failure
        return raw

    def _check_raw(self, raw: Any, rows: int) -> Exception | None:
        if not isinstance(raw, np.ndarray) or raw.shape != (rows, self.num_classes) or raw.dtype.kind != "f":
            return InferenceError(
                f"expected model outputs of shape ({rows}, {self.num_classes}) and a float dtype, got "
                f"{getattr(raw, 'shape', None)} {getattr(raw, 'dtype', type(raw).__name__)}; nothing was released"
            )
        if self._check_simplex:
            if self.info.task_type == "multiclass":
                sums = raw.sum(axis=1)
                ok = raw.min() >= 0.0 and raw.max() <= 1.0 and np.abs(sums - 1.0).max() <= SUM_TOLERANCE
            else:
                ok = raw.min() >= 0.0 and raw.max() <= 1.0
            if not ok:
                return InferenceError(
                    "expected probabilities as the model's metadata declares (entries in [0, 1]"
                    + (", rows summing to 1" if self.info.task_type == "multiclass" else "")
                    + "), got values outside that; the file's metadata does not match its graph, nothing was released"
                )
        return None

    def predict(self, x: np.ndarray, *, seed: Any = None, user_id: Any = None) -> np.ndarray:
        """Filtered outputs for a batch ``(N, C, H, W)`` (returns ``(N, K)``, or ``(N,)`` labels) or one sample.

        ``x`` must be float32 (float64 only with ``allow_float64``) with the declared
        ``(C, H, W)`` and values in the declared pixel range, without NaN/inf
        (InvalidInputError otherwise). For one sample ``(C, H, W)`` the result is one row
        ``(K,)`` or, for a label index, a numpy int64 scalar. ``seed`` makes the random
        filters reproducible (tests only; by default randomness comes from the OS CSPRNG,
        see :func:`edgeguard.filters.secure_rng`); ``user_id`` selects the privacy budget
        of budgeted filters.
        """
        # Hot path, written flat (this runs right after inference, with cold caches): the common
        # case -- a contiguous float32 batch of the declared shape in a [0, high] pixel range --
        # is checked inline; everything else goes through _validate, which also writes the errors.
        shape = getattr(x, "shape", ())
        if (
            type(x) is np.ndarray
            and x.dtype is _FLOAT32
            and len(shape) == 4
            and shape[1:] == self._sample_shape
            and shape[0] > 0
            and (self._fixed_batch is None or shape[0] == self._fixed_batch)
            and self._max_bits is not None
            and x.flags.c_contiguous
            and x.view(np.uint32).max() <= self._max_bits
        ):
            batch, single = x, False
        else:
            batch, single = self._validate(x)
        pipeline = self.pipeline
        rows = batch.shape[0]
        rng = make_rng(seed, rows * self.num_classes) if pipeline.is_random else None
        failure = None
        try:
            raw = self._run_session(self._output_names, {self._input_name: batch}, None)[0]
        except Exception as error:  # onnxruntime raises its own exception types
            failure = self._inference_error(error)
        if failure is None:
            if self._check_simplex or not (
                type(raw) is np.ndarray and raw.shape == (rows, self.num_classes) and raw.dtype.kind == "f"
            ):
                failure = self._check_raw(raw, rows)
        if failure is None:
            try:
                released = pipeline(raw, rng, user_id=user_id)
            except EdgeguardError as error:  # already free of output values (FilterPipeline fails closed)
                failure = error
        if failure is not None:
            raw = None  # no reference to the outputs stays in this frame (tracebacks keep frames)
            raise failure
        return released[0] if single else released

    def predict_unfiltered_unsafe(self, x: np.ndarray) -> np.ndarray:
        """The model's RAW outputs, bypassing every filter. UNSAFE: raw outputs can leak the input.

        Works only on a SafeModel built with ``allow_unsafe_raw_outputs=True``.
        """
        if not self._allow_raw:
            raise FilterError(
                "expected SafeModel(..., allow_unsafe_raw_outputs=True) before releasing raw outputs, got the default "
                "(False); raw logits/probabilities can leak the input to a vicious model's decoder"
            )
        logger.warning("releasing RAW outputs of %s without any filter", self.path.name)
        batch, single = self._validate(x)
        raw = self._run(batch)
        return raw[0] if single else raw

    # --- description -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        bits = self.capacity_bits
        return {
            "path": str(self.path),
            "model_sha256": self.model_sha256,
            "providers": self.providers,
            "info": self.info.to_dict(),
            "pipeline": self.pipeline.to_dict(self.num_classes),
            "capacity_bits": None if math.isinf(bits) else bits,
            "release_capacity": describe_bits(bits),
            "verdict": self.verdict,
            "vet_action": self.vet_action,
            "raw_outputs_enabled": self._allow_raw,
        }

    def __repr__(self) -> str:
        return (
            f"SafeModel({self.path.name!r}, providers={self.providers}, filters={list(self.pipeline.filters)}, "
            f"capacity={describe_bits(self.capacity_bits)!r})"
        )
