"""SafeModel: run a provider's ONNX classifier on the device and release only filtered outputs.

The model is read, checked and hashed once by :func:`edgeguard.model.load_model`
(external data must be regular files inside the model's folder; ops that loop or size
their outputs at run time are refused unless ``allow_dynamic_ops``), inputs are validated against what the model
declares, and every release goes through a type-checked :class:`FilterPipeline`. It
fails closed: if inference or any filter fails, an error is raised and nothing is
released; errors never quote output values, nor anything onnxruntime wrote (its
messages can hold values computed from the input; onnxruntime's logging is set to
FATAL so it prints nothing either). Raw outputs are available only from
:meth:`SafeModel.predict_unfiltered_unsafe` on a model built with
``allow_unsafe_raw_outputs=True``.

The pipeline's leading deterministic and noise stages are appended to the graph
(:mod:`edgeguard.filters.fusion`), together with the input's range check and the
release's checks, so one onnxruntime run returns the release: for such pipelines raw
outputs never reach Python memory. Stages that do not map onto ONNX ops run in numpy
afterwards, as before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import traceback
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
from edgeguard.filters.fusion import SHAPE_CHECK_NODE, fuse_pipeline
from edgeguard.model import load_model
from edgeguard.verdicts import VERDICTS

__all__ = ["SafeModel", "ViciousModelWarning", "GPU_PROVIDERS", "VET_POLICIES"]

logger = logging.getLogger(__name__)

_FLOAT32 = np.dtype(np.float32)
_UINT32 = np.dtype(np.uint32)
_UMAX = np.maximum.reduce  # the ufunc's reduce, without ndarray.max's Python wrapper

#: Providers that ``providers="auto"`` prefers, in order, when onnxruntime offers them.
#: (TensorRT is left out: it builds engines at start-up; ask for it explicitly.)
GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)

#: What a "vicious" (or "inconclusive") verdict does, see SafeModel(on_vicious=...).
VET_POLICIES = ("refuse", "argmax", "warn", None)

#: onnxruntime log severity for SafeModel's session and runs: FATAL only (nothing on stderr when a node fails).
_ORT_SILENT = 4
#: What an InferenceError may repeat from onnxruntime's message: the failing node's op type and the status name.
_ORT_NODE = re.compile(r"running (\w+) node")
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : ([A-Z_]+) :")
_ORT_STATUS_NAMES = frozenset(
    {
        "FAIL",
        "INVALID_ARGUMENT",
        "NO_SUCHFILE",
        "NO_MODEL",
        "ENGINE_ERROR",
        "RUNTIME_EXCEPTION",
        "INVALID_PROTOBUF",
        "MODEL_LOADED",
        "NOT_IMPLEMENTED",
        "INVALID_GRAPH",
        "EP_FAIL",
        "MODEL_LOAD_CANCELED",
        "MODEL_REQUIRES_COMPILATION",
        "NOT_FOUND",
    }
)


def _quiet_run_options() -> Any:
    """An onnxruntime RunOptions that logs nothing below FATAL."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = _ORT_SILENT
    return options


class ViciousModelWarning(UserWarning):
    """A vetting verdict says the model is vicious (or could not tell) and the policy lets it run."""


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


def _read_verdict(verdict: Any) -> tuple[str, str, dict[str, Any]]:
    """(model_sha256, verdict, binding) from a report object, a mapping, or a path to a JSON report.

    ``binding`` holds what a full vet report records besides the verdict (absent keys for
    a hand-made verdict): ``is_report``, ``thresholds_sha256``, ``checked`` (how the vet
    ran the model), ``edgeguard_version``.
    """
    if isinstance(verdict, str | os.PathLike):
        try:
            verdict = json.loads(Path(verdict).read_text())
        except (OSError, ValueError) as error:
            raise ModelRefusedError(
                f"expected a readable JSON vetting report at {verdict}, got {type(error).__name__}: {error}; "
                "refusing to run without the verdict that was asked for"
            ) from None
    if isinstance(verdict, Mapping):
        get = verdict.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(verdict, key, default)

    sha, value = get("model_sha256"), get("verdict")
    value = getattr(value, "value", value)  # an Enum member
    if not isinstance(sha, str) or len(sha) != 64:
        raise ModelRefusedError(
            f"expected a verdict with a 64-hex-digit model_sha256, got {sha!r}; refusing to run (fail closed)"
        )
    if value not in VERDICTS:
        raise ModelRefusedError(f"expected a verdict in {VERDICTS}, got {value!r}; refusing to run (fail closed)")
    thresholds = get("thresholds") or {}
    binding = {
        "is_report": get("thresholds") is not None or get("tests") is not None,
        "thresholds_sha256": get("thresholds_sha256") or (thresholds.get("sha256") if isinstance(thresholds, Mapping) else None),
        "checked": dict(get("checked") or {}),
        "edgeguard_version": get("edgeguard_version"),
    }
    return sha.lower(), value, binding


#: Per-call deadline used when allow_dynamic_ops let control flow or run-time sizes through.
DEFAULT_RUN_DEADLINE_S = 10.0


def _deadline(value: float | None, dynamic: bool) -> float | None:
    if value is None:
        return DEFAULT_RUN_DEADLINE_S if dynamic else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ModelLoadError(f"expected run_deadline_s to be a positive number of seconds or None, got {value!r}")
    return float(value)


class _DeadlineRun:
    """``run(outputs, feeds, options)`` that onnxruntime abandons after ``seconds`` (RunOptions.terminate)."""

    def __init__(self, run: Any, seconds: float, run_options: Any) -> None:
        self._run, self._seconds, self._run_options = run, seconds, run_options

    def __call__(self, output_names: Any, feeds: Any, options: Any = None) -> Any:
        options = options if options is not None else self._run_options()
        timer = threading.Timer(self._seconds, setattr, (options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return self._run(output_names, feeds, options)
        except Exception as error:
            if options.terminate:
                raise InferenceError(
                    f"expected the model to finish within the {self._seconds:g} s deadline, got it stopped; "
                    "nothing was released (raise run_deadline_s only for a provider you trust)"
                ) from None
            raise error
        finally:
            timer.cancel()


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
        ``intra_op_num_threads`` on ``session_options`` (an ``onnxruntime.SessionOptions``;
        SafeModel also sets its ``log_severity_level`` to 4, FATAL, so that a failing node's
        message, which can quote values computed from the input, is never printed).
    verdict: a vetting verdict for this file: an object with ``.model_sha256`` and
        ``.verdict`` ("honest" | "vicious" | "inconclusive"), a mapping with those keys,
        or a path to a JSON report. It must name this file's :func:`model_sha256`.
    on_vicious: what a "vicious" verdict does: "refuse" (ModelRefusedError now),
        "argmax" (filters replaced by the label-only release), "warn" (ViciousModelWarning
        and a log line), or None (the verdict is not consulted). "inconclusive" is no pass:
        refused under "refuse", label-only under "argmax", a warning under "warn".
    accept_thresholds: accept a vet report made with other thresholds than this
        edgeguard's packaged ones (refused by default).
    allow_float64: accept float64 inputs (cast to float32); by default only float32.
    allow_unsafe_raw_outputs: enable :meth:`predict_unfiltered_unsafe`.
    max_capacity_bits: refuse filters whose release capacity exceeds this many bits.
    allow_dynamic_ops: load graphs with control flow (If/Loop/Scan) or ops whose output
        size is computed at run time (ConstantOfShape, Expand, Tile, Range, Resize, ...);
        refused by default (UnsafeModelError), since a crafted input can make them loop or
        allocate without bound. With it, every call runs under ``run_deadline_s``.
    run_deadline_s: per-call deadline in seconds (onnxruntime's RunOptions.terminate is
        set from a timer; InferenceError, nothing released). Default: 10 s when
        ``allow_dynamic_ops`` let such ops through, else none.
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
        allow_dynamic_ops: bool = False,
        run_deadline_s: float | None = None,
        accept_thresholds: bool = False,
    ) -> None:
        import onnxruntime as ort

        if on_vicious not in VET_POLICIES:
            raise ModelRefusedError(f"expected on_vicious in {VET_POLICIES}, got {on_vicious!r}")
        self.path = Path(path)
        # one read of every file, checked before onnxruntime sees anything; the digest covers those bytes
        loaded = load_model(self.path, allow_dynamic_ops=allow_dynamic_ops)
        model = loaded.proto
        self.model_sha256 = loaded.sha256
        self.info = loaded.info
        self.num_classes = self.info.num_classes
        self._check_graph(model)

        self.verdict: str | None = None
        self.vet_action: str | None = None
        self.vetted_batch_sizes: list[int] = []
        self._max_rows = sys.maxsize  # with a vet report: the largest batch size the vet checked
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
            filters = self._apply_verdict(verdict, on_vicious, filters, accept_thresholds)
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
        # onnxruntime prints failing nodes' messages (which can quote values computed from the input)
        # to stderr at ERROR severity: keep it silent (FATAL only), for the session and every run.
        options.log_severity_level = _ORT_SILENT
        # The leading deterministic / noise stages run inside the graph (edgeguard.filters.fusion):
        # one run returns the release and raw outputs never reach Python for such pipelines.
        self._fusion = fuse_pipeline(
            model,
            self.pipeline,
            output_name=self.info.output_name,
            num_classes=self.num_classes,
            output_kind=self.info.output_kind,
            task_type=self.info.task_type,
            keep_raw=bool(allow_unsafe_raw_outputs),
            input_name=self.info.input_name,
            pixel_range=tuple(float(v) for v in self.info.pixel_range),
        )
        model_bytes = loaded.serialized if self._fusion is None else self._fusion.proto.SerializeToString()
        if self._fusion is not None:
            self._fusion.proto = None  # the session holds the graph; keep no second copy
        try:
            self._session = ort.InferenceSession(model_bytes, options, providers=resolved)
        except Exception as error:
            raise ModelLoadError(
                f"expected onnxruntime to load {self.path.name}, got {type(error).__name__}: {str(error)[:500]}"
            ) from None
        del model_bytes
        self.providers: list[str] = list(self._session.get_providers())
        self._op_types = frozenset(node.op_type for node in model.graph.node) | (
            self._fusion.op_types if self._fusion is not None else frozenset()
        )
        # The C++ session's run() behind InferenceSession.run: SafeModel validates inputs itself, so
        # the wrapper's per-call name checks are skipped (a few microseconds at batch 1).
        binding = getattr(self._session, "_sess", None)
        self._run_session = binding.run if callable(getattr(binding, "run", None)) else self._session.run
        self._run_options: Any = _quiet_run_options()
        self.run_deadline_s = _deadline(run_deadline_s, allow_dynamic_ops and bool(loaded.dynamic_ops))
        if self.run_deadline_s is not None:  # every call runs under a RunOptions.terminate timer
            self._run_session = _DeadlineRun(self._run_session, self.run_deadline_s, _quiet_run_options)
            self._run_options = None  # a fresh RunOptions per call (terminate is per call)
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
        fusion = self._fusion
        self._release_names = [fusion.release_name] if fusion is not None else self._output_names
        self._raw_names = [fusion.raw_name] if fusion is not None else self._output_names
        self._noise = fusion.noise if fusion is not None else ()
        self._rest = fusion.rest if fusion is not None else None
        # what the fused release is: 1 = float (N, K), NaN everywhere when a check in the graph failed;
        # 2 = label indices, -1 everywhere when a check failed
        self._release_kind = 2 if fusion is not None and fusion.terminal else 1
        self._graph_checks_input = fusion is not None and fusion.checks_input
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
        from edgeguard.model import static_dims

        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        graph_input = next(v for v in graph.input if v.name == self.info.input_name and v.name not in initializers)
        input_dims = static_dims(graph_input)
        output_value = next(v for v in graph.output if v.name == self.info.output_name)
        output_dims = static_dims(output_value)
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

    def _apply_verdict(
        self, verdict: Any, policy: str, filters: list[OutputFilter], accept_thresholds: bool = False
    ) -> list[OutputFilter]:
        """Honour a vet verdict: bound to this file, these thresholds, and checked the way SafeModel runs it.

        ``inconclusive`` is no pass: it is refused under "refuse", label-only under "argmax".
        A full vet report made with other thresholds than this edgeguard's is refused unless
        ``accept_thresholds``; an "honest" report whose consistency test did not vouch for the
        batch sizes SafeModel uses counts as inconclusive.
        """
        sha, value, binding = _read_verdict(verdict)
        if sha != self.model_sha256:
            raise ModelRefusedError(
                f"expected a verdict for this file (sha256 {self.model_sha256}), got one for sha256 {sha}: the "
                "verdict was issued for another file (the model changed since it was vetted); vet this file again"
            )
        self.verdict = value
        self.vetted_batch_sizes = list(binding["checked"].get("batch_sizes") or [])
        if self.vetted_batch_sizes:  # never run the model in a way the vet did not check
            self._max_rows = max(self.vetted_batch_sizes)
        if binding["is_report"] and not accept_thresholds:
            from edgeguard.verdicts.thresholds import load_thresholds

            mine = load_thresholds()["sha256"]
            if binding["thresholds_sha256"] != mine:
                raise ModelRefusedError(
                    f"expected a vet report made with this edgeguard's thresholds (sha256 {mine[:12]}), got one made "
                    f"with {str(binding['thresholds_sha256'])[:12] or 'unrecorded thresholds'} (edgeguard "
                    f"{binding['edgeguard_version'] or '?'}); vet the file again, or pass accept_thresholds=True"
                )
        if value == "honest" and binding["is_report"] and 1 not in self.vetted_batch_sizes:
            value = "inconclusive"  # the vet never checked the model the way an app calls it
            logger.warning("the vet report for %s did not check batch-size consistency", self.path.name)
        if value == "honest":
            logger.info("vetting verdict for %s: honest", self.path.name)
            return filters
        what = "inconclusive" if value == "inconclusive" else "vicious"
        if policy == "refuse":
            raise ModelRefusedError(
                f"expected a model that vetting passed, got an {what} verdict for {self.path.name}; refusing "
                "to run it (on_vicious='refuse'). Use on_vicious='argmax' to release labels only"
                if what == "inconclusive"
                else f"expected a model that vetting did not flag, got a vicious verdict for {self.path.name}; refusing "
                "to run it (on_vicious='refuse'). Use on_vicious='argmax' to release labels only"
            )
        if policy == "argmax":
            logger.warning("vetting verdict for %s is %s: releasing labels only", self.path.name, what)
            self.vet_action = "argmax"
            return _label_filters(self.info.task_type)
        message = (
            f"the vetting verdict for {self.path.name} is inconclusive; running with the filters given"
            if what == "inconclusive"
            else f"vetting flagged {self.path.name} as vicious; running it anyway with the filters given"
        )
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
        if type(x) is not np.ndarray:
            if isinstance(x, np.ma.MaskedArray):
                raise InvalidInputError(
                    "expected a plain numpy array, got a masked array (masked values would skip the input checks); "
                    "fill it first with x.filled(0.0)"
                )
            x = x.view(np.ndarray)  # a subclass's own min/max/astype must not take part in the checks
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
        if rows > self._max_rows:
            raise InvalidInputError(
                f"expected batches of at most {self._max_rows} rows (the largest batch size the vet checked for "
                f"consistency), got {rows}; split the batch into chunks of {self._max_rows}"
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
    def _inference_error(self, error: Exception, rows: int) -> InferenceError:
        """An InferenceError that quotes nothing onnxruntime wrote (its messages can hold values).

        Only fixed vocabulary passes: the exception class, onnxruntime's status name, and the
        failing node's op type when it is one of this graph's op types.
        """
        if isinstance(error, InferenceError):  # ours (the run deadline): already free of values
            return error
        text = str(error)
        if SHAPE_CHECK_NODE in text:
            return InferenceError(
                f"expected model outputs of shape ({rows}, {self.num_classes}) and a float dtype, got another "
                "shape (they do not reshape to K columns); the file's metadata does not match its graph, nothing "
                "was released"
            )
        node = _ORT_NODE.search(text)
        op_type = node.group(1) if node and node.group(1) in self._op_types else None
        status = _ORT_STATUS.search(text)
        code = status.group(1) if status and status.group(1) in _ORT_STATUS_NAMES else None
        kind = type(error).__name__
        kind = kind if kind.isidentifier() and len(kind) <= 40 else "an onnxruntime error"
        return InferenceError(
            f"expected onnxruntime to run the model, got {kind}"
            + (f" ({code})" if code else "")
            + (f" in a {op_type} node" if op_type else "")
            + "; nothing was released. onnxruntime's message is withheld (it can quote values computed from "
            "the input): run the model with onnxruntime on synthetic inputs to see it"
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of a validated batch (used by predict_unfiltered_unsafe)."""
        feed = {self._input_name: batch}
        for noise in self._noise:  # the raw output does not depend on them
            dtype = np.float32 if noise.kind == "normal" else np.float64
            feed[noise.name] = np.zeros((len(batch), self.num_classes), dtype)
        failure = None
        try:
            raw = self._run_session(self._raw_names, feed, self._run_options)[0]
        except Exception as error:  # onnxruntime raises its own exception types
            failure = self._inference_error(error, len(batch))
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
                return InferenceError(self._simplex_message())
        return None

    def _simplex_message(self, fused: bool = False) -> str:
        return (
            "expected probabilities as the model's metadata declares (entries in [0, 1]"
            + (", rows summing to 1" if self.info.task_type == "multiclass" else "")
            + "), got values outside that"
            + (" or a non-finite release" if fused else "")
            + "; the file's metadata does not match its graph, nothing was released"
        )

    def _check_release(self, out: Any, rows: int, batch: np.ndarray) -> Exception | None:
        """The fused graph's output: the release's shape, finite values, and the graph's simplex verdict."""
        # The graph checked the input's range, the release's finiteness and (if declared) the raw
        # probabilities; a failed check turned the whole release into NaN (indices: -1).
        if self._release_kind == 2:
            if type(out) is np.ndarray and out.shape == (rows,) and out.item(0) >= 0:
                return None
            expected: tuple[int, ...] = (rows,)
        else:
            if type(out) is np.ndarray and out.shape == (rows, self.num_classes):
                first = out.item(0)
                if first == first:
                    return None
            expected = (rows, self.num_classes)
        if not isinstance(out, np.ndarray) or out.shape != expected:
            return InferenceError(
                f"expected model outputs of shape ({rows}, {self.num_classes}) (a release of shape {expected}), got "
                f"a release of shape {getattr(out, 'shape', None)}; nothing was released"
            )
        if self._graph_checks_input:
            try:  # the input check in Python writes the error (and says what is wrong with the input)
                self._validate(batch)
            except InvalidInputError as error:
                return error.with_traceback(None)
        if self._check_simplex:
            return InferenceError(self._simplex_message(fused=True))
        return FilterError(
            "expected finite released values, got NaN or inf; the model or a filter produced non-finite "
            "values, so nothing was released"
        )

    def _release(self, batch: np.ndarray, seed: Any, user_id: Any) -> tuple[Any, Exception | None]:
        """(release, None) or (None, the error to raise): one run, then the stages left to numpy."""
        pipeline = self.pipeline
        rows = len(batch)
        if self._fusion is None:
            rng = make_rng(seed, rows * self.num_classes) if pipeline.is_random else None
            try:
                raw = self._run_session(self._output_names, {self._input_name: batch}, self._run_options)[0]
            except Exception as error:  # onnxruntime raises its own exception types
                return None, self._inference_error(error, rows)
            if self._check_simplex or not (
                type(raw) is np.ndarray and raw.shape == (rows, self.num_classes) and raw.dtype.kind == "f"
            ):
                failure = self._check_raw(raw, rows)
                if failure is not None:
                    return None, failure
            try:
                if pipeline.needs_inputs:
                    return pipeline(raw, rng, user_id=user_id, inputs=batch), None
                return pipeline(raw, rng, user_id=user_id), None
            except EdgeguardError as error:  # already free of output values (FilterPipeline fails closed)
                return None, error.with_traceback(None)  # its traceback holds this frame, and raw
        # fused: noise for the graph's random stages comes first (a seeded stream then feeds the rest)
        rng = make_rng(seed, rows * self.num_classes) if seed is not None and pipeline.is_random else None
        feed = {self._input_name: batch}
        for noise in self._noise:
            feed[noise.name] = noise.draw(rng, rows)
        try:
            out = self._run_session(self._release_names, feed, self._run_options)[0]
        except Exception as error:
            if self._graph_checks_input:  # the input was not checked in Python: say first if it was invalid
                try:
                    self._validate(batch)
                except InvalidInputError as invalid:
                    return None, invalid.with_traceback(None)
            return None, self._inference_error(error, rows)
        failure = self._check_release(out, rows, batch)
        if failure is not None:
            return None, failure
        rest = self._rest
        if rest is None:
            return out, None
        try:
            if rest.needs_inputs:
                return rest(out, rng, user_id=user_id, inputs=batch), None
            return rest(out, rng, user_id=user_id), None
        except EdgeguardError as error:
            return None, error.with_traceback(None)

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
        # Hot path, written flat: the common case -- a contiguous float32 batch of the declared
        # shape -- is checked inline, its pixel range by the fused graph (or by one reduction here);
        # everything else goes through _validate, which also writes the errors.
        shape = getattr(x, "shape", ())
        if (
            type(x) is np.ndarray
            and x.dtype is _FLOAT32
            and len(shape) == 4
            and shape[1:] == self._sample_shape
            and shape[0] > 0
            and (self._fixed_batch is None or shape[0] == self._fixed_batch)
            and shape[0] <= self._max_rows
            and x.flags.c_contiguous
            and (
                self._graph_checks_input  # the fused graph checks the pixel range itself (one check, in onnxruntime)
                or (self._max_bits is not None and _UMAX(x.view(_UINT32), axis=None) <= self._max_bits)
            )
        ):
            batch, single = x, False
        else:
            batch, single = self._validate(x)
        try:
            released, failure = self._release(batch, seed, user_id)
        except BaseException as error:  # KeyboardInterrupt, SystemExit, ... inside a filter
            # the finished frames below this one (the filters') must not keep outputs alive
            traceback.clear_frames(error.__traceback__)
            raise
        if failure is not None:
            raise failure  # raised here, outside any except block: no __context__, no output in any frame
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
    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` that predict runs.

        When the pipeline's leading stages were fused (:mod:`edgeguard.filters.fusion`) its
        graph ends in the release (and takes one noise input per fused random stage), so
        ``session.run`` is not the raw model: build your own session for raw timings.
        """
        return self._session

    @property
    def fused_stages(self) -> int:
        """How many leading filters run inside the onnxruntime graph (0: all run in numpy)."""
        return 0 if self._fusion is None else len(self._fusion.fused)

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
            "fusion": None if self._fusion is None else self._fusion.to_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"SafeModel({self.path.name!r}, providers={self.providers}, filters={list(self.pipeline.filters)}, "
            f"capacity={describe_bits(self.capacity_bits)!r})"
        )
