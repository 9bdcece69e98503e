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

import logging
import math
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import (
    ConfigError,
    EdgeguardError,
    FilterError,
    GuardError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
)
from edgeguard.filters import FilterPipeline, OutputFilter, make_rng
from edgeguard.filters.base import SUM_TOLERANCE, describe_bits
from edgeguard.guard import build_guarded_graph
from edgeguard.guard.trusted import TrustedGuarded, is_guarded, open_guarded
from edgeguard.model import load_model
from edgeguard.model.signature import fixed_batches, stitch
from edgeguard.safe_model.outputs import (
    check_label_release,
    output_kind_from_values,
    with_input_range,
)
from edgeguard.safe_model.policy import VET_POLICIES, apply_verdict, label_filters
from edgeguard.safe_model.session import (
    ORT_SILENT,
    DeadlineRun,
    quiet_run_options,
    resolve_providers,
    run_deadline,
    scrub_inference_error,
)
from edgeguard.safe_model.validation import InputValidator

__all__ = ["SafeModel"]

logger = logging.getLogger("edgeguard.safe_model")

_FLOAT32 = np.dtype(np.float32)
_UINT32 = np.dtype(np.uint32)
_UMAX = np.maximum.reduce  # the ufunc's reduce, without ndarray.max's Python wrapper


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
    verdict: the vet report for this file: a :class:`~edgeguard.vetting.VetReport`, its
        ``to_dict()``, or a path to its JSON (``edgeguard vet --format json``). Only a full
        report is accepted: it must name this file's :func:`model_sha256`, come from this
        edgeguard version with the installed thresholds (their SHA-256), and its verdict
        must follow from its own scores (the decision rule is re-run); a hand-made
        ``{"verdict": "honest"}`` or an edited report is refused (ModelRefusedError).
    verdict_key: the reviewer's secret key (bytes or a key file) that signed the report
        (``edgeguard vet --sign-key FILE``); with it, an unsigned report, one signed with
        another key or edited after signing is refused.
    on_vicious: what a "vicious" verdict does: "refuse" (ModelRefusedError now),
        "argmax" (filters replaced by the label-only release), "warn" (ViciousModelWarning
        and a log line), or None (the verdict is not consulted). "inconclusive" is no pass:
        refused under "refuse", label-only under "argmax", a warning under "warn".
    accept_thresholds: accept a vet report made with other thresholds or another edgeguard
        version than this one's (refused by default); its verdict is then re-derived with the
        thresholds recorded in the report.
    allow_float64: accept float64 inputs (cast to float32); by default only float32.
    allow_unsafe_raw_outputs: enable :meth:`predict_unfiltered_unsafe`.
    max_capacity_bits: refuse filters whose release capacity exceeds this many bits.
        (``capacity_bits`` bounds a released row; a refused call, an exception the app sees,
        is not counted: it can signal about one bit per call, so do not report refusals back.)
    allow_dynamic_ops: load graphs with control flow (If/Loop/Scan) or ops whose output
        size is computed at run time (ConstantOfShape, Expand, Tile, Range, Resize, ...);
        refused by default (UnsafeModelError), since a crafted input can make them loop or
        allocate without bound. With it, every call runs under ``run_deadline_s``.
    input_dither: add uniform noise of +-half a grey level of the declared pixel range to
        every input, inside the graph, from the secure generator, clipped back into the range
        (:mod:`edgeguard.guard.build`, the builder guarded files use too). Default (None): on
        for float32 image inputs with a declared pixel range whenever the release is more
        than the label, so a switch on the 8-bit pixel grid (vicious on decoded images,
        honest on anything the vet could perturb) never fires in deployment; it moves an
        honest CNN's label on fewer than 0.5% of test images (benchmarks/dither_cost.py).
        ``input_dither=False`` turns it off (for inputs that are not 8-bit images, or to
        reproduce raw outputs bit for bit).
    run_deadline_s: per-call deadline in seconds (onnxruntime's RunOptions.terminate is
        set from a timer; InferenceError, nothing released). Default: 10 s when
        ``allow_dynamic_ops`` let such ops through, else none.
    output: the graph output to release from, by name (default: the first float (N, K)
        output, else a ZipMap, cut back to its (N, K) probabilities, else an int64 label).
        Only that output is ever computed: the session runs a graph whose one output it is.
        A label output allows only a label release (capacity log2 K).
    input_shape: one sample's shape, when the graph leaves dims open: (F,), (T, F), (C, H, W)
        or (H, W, C) (the graph's own layout).
    input_range: (low, high) every input value must lie in; default: the metadata's
        pixel_range, else [0, 1] for float images, any finite value for vectors and sequences.
    input_layout: "NCHW" or "NHWC", for an image input whose channel axis the graph leaves ambiguous.

    Inputs: float32 ``(N, F)`` vectors, ``(N, T, F)`` sequences, ``(N, C, H, W)`` /
    ``(N, H, W, C)`` images, or uint8 images; a graph with a fixed batch size takes any batch
    (split, the last chunk padded). int64 ids and strings are refused (ModelLoadError).
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
        verdict_key: bytes | str | os.PathLike | None = None,
        output: str | None = None,
        input_shape: Sequence[int] | None = None,
        input_range: Sequence[float] | None = None,
        input_layout: str | None = None,
        input_dither: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        if on_vicious not in VET_POLICIES:
            raise ConfigError(f"expected on_vicious in {VET_POLICIES}, got {on_vicious!r}; pick one of those")
        self.path = Path(path)
        # one read of every file, checked before onnxruntime sees anything; the digest covers those bytes
        loaded = _load(
            self.path,
            allow_dynamic_ops=allow_dynamic_ops,
            output=output,
            input_shape=None if input_shape is None else tuple(int(d) for d in input_shape),
            input_layout=input_layout,
        )
        model = loaded.proto  # the prepared graph: only the chosen output, as (N, K) scores
        self.model_sha256 = loaded.sha256
        #: the checks of a guarded file (edgeguard guard) this SafeModel runs, or None for a plain model
        self.guard_report = None
        trusted = None
        if is_guarded(model):  # its pipeline is in the graph; trusted only once every inspect check passes
            trusted = open_guarded(model, path=self.path.name)
            _check_guarded_options(trusted, filters, verdict, allow_unsafe_raw_outputs)
            self.guard_report = trusted.report
            self.info = trusted.source_info
            filters = list(trusted.pipeline.filters)
            input_dither = bool(trusted.report.metadata.input_dither.get("enabled"))  # what the file holds
            model = trusted.source_proto
        else:
            self.info = with_input_range(loaded.info, input_range)
            if self.info.output_kind_source == "default":  # nothing declared, no Softmax: look at the values
                self.info = output_kind_from_values(loaded.serialized, self.info)
        self.num_classes = self.info.num_classes
        self._check_graph(model)

        self.verdict: str | None = None
        self.vet_action: str | None = None
        self.vetted_batch_sizes: list[int] = []
        self._max_rows = sys.maxsize  # with a vet report: the largest batch size the vet checked
        if filters is None:
            filters = label_filters(self.info.task_type)
        if isinstance(filters, OutputFilter):
            filters = [filters]
        elif isinstance(filters, FilterPipeline):
            filters = filters.filters
        filters = list(filters)
        if self.info.output_type == "label":
            check_label_release(filters, self.info)
        if not filters:
            raise FilterError(
                "expected at least one output filter, got none; releasing raw outputs needs "
                "allow_unsafe_raw_outputs=True and predict_unfiltered_unsafe()"
            )
        if verdict_key is not None and (verdict is None or on_vicious is None):
            raise ConfigError(
                "expected a vet report to check with verdict_key, got none (or on_vicious=None); pass "
                "verdict=REPORT, or drop verdict_key"
            )
        if on_vicious is not None and verdict is not None:
            outcome = apply_verdict(
                verdict,
                on_vicious,
                filters,
                model_sha256=self.model_sha256,
                path=self.path,
                task_type=self.info.task_type,
                accept_thresholds=accept_thresholds,
                key=verdict_key,
            )
            filters, self.verdict, self.vet_action = outcome.filters, outcome.verdict, outcome.action
            self.vetted_batch_sizes = outcome.vetted_batch_sizes
            if self.vetted_batch_sizes:  # never run the model in a way the vet did not check
                self._max_rows = max(self.vetted_batch_sizes)
        self.pipeline = FilterPipeline(filters, input_kind=self.info.output_kind, task_type=self.info.task_type)
        self.capacity_bits = self.pipeline.capacity_bits(self.num_classes)
        if max_capacity_bits is not None and not self.capacity_bits <= max_capacity_bits:
            raise FilterError(
                f"expected filters releasing at most {max_capacity_bits} bits per row, got "
                f"{describe_bits(self.capacity_bits)}; add Round/Argmax or a ClippedLaplace"
            )

        available = ort.get_available_providers()
        resolved = resolve_providers(providers, available)
        options = session_options if session_options is not None else ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ConfigError(
                    f"expected threads to be a positive integer or None, got {threads!r}; pass threads=1 or more"
                )
            options.intra_op_num_threads = threads
        # onnxruntime prints failing nodes' messages (which can quote values computed from the input)
        # to stderr at ERROR severity: keep it silent (FATAL only), for the session and every run.
        options.log_severity_level = ORT_SILENT
        # The graph that runs is built by edgeguard.guard, the builder of guarded files too: the input
        # dither (if asked for) in front of the model, the leading deterministic / noise stages after it
        # (edgeguard.filters.fusion), so one run returns the release and raw outputs never reach Python
        # for such pipelines. Noise is fed from Python (noise="input"): seeded, or from the OS.
        if input_dither is None:  # on by default where it canonicalises what an app feeds: 8-bit images
            input_dither = _dither_by_default(self.info, self.pipeline, self.num_classes)
        self.input_dither = bool(input_dither)
        if trusted is not None:
            guarded = trusted.graph
        else:
            guarded = build_guarded_graph(
                model,
                self.info,
                self.pipeline,
                input_dither=self.input_dither,
                noise="input",
                require_all=False,
                keep_raw=bool(allow_unsafe_raw_outputs),
                # pixel_range: the default, input_check_range(self.info), the one rule for files and SafeModel
            )
        self._fusion = guarded.fusion
        changed = trusted is None and (guarded.fusion is not None or guarded.dithered_input is not None)
        model_bytes = guarded.proto.SerializeToString() if changed else loaded.serialized
        guarded.proto = None  # the session holds the graph; keep no second copy
        if self._fusion is not None:
            self._fusion.proto = None
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
        self._run_options: Any = quiet_run_options()
        self.run_deadline_s = run_deadline(run_deadline_s, allow_dynamic_ops and bool(loaded.dynamic_ops))
        if self.run_deadline_s is not None:  # every call runs under a RunOptions.terminate timer
            self._run_session = DeadlineRun(self._run_session, self.run_deadline_s, quiet_run_options)
            self._run_options = None  # a fresh RunOptions per call (terminate is per call)
        self._input_name = self.info.input_name
        self._output_names = [self.info.output_name]
        self._sample_shape = tuple(self.info.input_shape)
        self._low, self._high = (float(v) for v in (self.info.pixel_range or (-math.inf, math.inf)))
        self._inputs = InputValidator(
            self._sample_shape,
            self._low,
            self._high,
            fixed_batch=self._fixed_batch,
            max_rows=self._max_rows,
            allow_float64=bool(allow_float64),
            dtype=self.info.input_dtype,
            kind=self.info.input_kind,
            layout=self.info.input_layout,
        )
        self._validate = self._inputs.validate
        self._max_bits = self._inputs.max_bits
        self._dtype = np.dtype(self.info.input_dtype)
        self._unchecked = self._inputs.unchecked
        self._check_simplex = self.info.output_kind == "probabilities"
        self._allow_raw = bool(allow_unsafe_raw_outputs)
        fusion = self._fusion
        self._release_names = [guarded.release_name] if fusion is not None else self._output_names
        self._raw_names = [guarded.raw_name] if fusion is not None else self._output_names
        # the stages' noise inputs first (a seed then gives numpy's draws), the dither's last
        self._noise = tuple(sorted(guarded.noise_inputs, key=lambda noise: noise.kind == "uniform"))
        self._dither = tuple(noise for noise in self._noise if noise.kind == "uniform")
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
        if len(input_dims) != len(declared) or any(
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
        self._fixed_batch = self.info.fixed_batch

    # --- inference -------------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of a validated batch (used by predict_unfiltered_unsafe)."""
        feed = {self._input_name: batch}
        for noise in self._noise:  # the raw output does not depend on the stages' noise (the dither's is drawn)
            if noise.kind == "uniform":
                feed[noise.name] = noise.draw(None, len(batch))
            else:
                dtype = np.float32 if noise.kind == "normal" else np.float64
                feed[noise.name] = np.zeros((len(batch), self.num_classes), dtype)
        failure = None
        try:
            raw = self._run_session(self._raw_names, feed, self._run_options)[0]
        except Exception as error:  # onnxruntime raises its own exception types
            failure = scrub_inference_error(error, len(batch), self.num_classes, self._op_types)
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
            feed = {self._input_name: batch}
            for noise in self._dither:  # a child stream with a seed, so the pipeline's draws stay numpy's
                feed[noise.name] = noise.draw(make_rng(seed).spawn(1)[0] if seed is not None else None, rows)
            try:
                raw = self._run_session(self._output_names, feed, self._run_options)[0]
            except Exception as error:  # onnxruntime raises its own exception types
                return None, scrub_inference_error(error, rows, self.num_classes, self._op_types)
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
        rng = (
            make_rng(seed, rows * self.num_classes)
            if seed is not None and (pipeline.is_random or self._noise)
            else None
        )
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
                    # raised while handling onnxruntime's error, whose message can quote values the
                    # model computed: drop it from __context__ (and the frames), or it leaves with this one
                    invalid.__context__ = None
                    return None, invalid.with_traceback(None)
            return None, scrub_inference_error(error, rows, self.num_classes, self._op_types)
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
            and x.dtype is self._dtype
            and len(shape) == len(self._sample_shape) + 1
            and shape[1:] == self._sample_shape
            and shape[0] > 0
            and (self._fixed_batch is None or shape[0] == self._fixed_batch)
            and shape[0] <= self._max_rows
            and x.flags.c_contiguous
            and (
                self._graph_checks_input  # the fused graph checks the pixel range itself (one check, in onnxruntime)
                or self._unchecked  # uint8: the dtype bounds the values
                or (self._max_bits is not None and _UMAX(x.view(_UINT32), axis=None) <= self._max_bits)
            )
        ):
            batch, single = x, False
        else:  # the fused graph checks the range (NaN, inf) itself: once, not again here
            batch, single = self._validate(x, check_range=not self._graph_checks_input)
        try:
            if self._fixed_batch is not None and len(batch) != self._fixed_batch:
                released, failure = self._release_fixed(batch, seed, user_id)
            else:
                released, failure = self._release(batch, seed, user_id)
        except BaseException as error:  # KeyboardInterrupt, SystemExit, ... inside a filter
            # the finished frames below this one (the filters') must not keep outputs alive
            traceback.clear_frames(error.__traceback__)
            raise
        if failure is not None:
            raise failure  # raised here, outside any except block: no __context__, no output in any frame
        return released[0] if single else released

    def _release_fixed(self, batch: np.ndarray, seed: Any, user_id: Any) -> tuple[Any, Exception | None]:
        """A graph with a fixed batch size: chunks of exactly that size, the last padded; padding dropped."""
        parts = []
        for index, (chunk, rows) in enumerate(fixed_batches(batch, self._fixed_batch)):
            released, failure = self._release(chunk, seed if seed is None else [seed, index], user_id)
            if failure is not None:
                return None, failure
            parts.append((released, rows))
        return stitch(parts), None

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
        if self._fixed_batch is not None and len(batch) != self._fixed_batch:
            raw = stitch([(self._run(chunk), rows) for chunk, rows in fixed_batches(batch, self._fixed_batch)])
        else:
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
            "input_dither": self.input_dither,
            "guarded_file": None if self.guard_report is None else self.guard_report.to_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"SafeModel({self.path.name!r}, providers={self.providers}, filters={list(self.pipeline.filters)}, "
            f"capacity={describe_bits(self.capacity_bits)!r})"
        )


def _check_guarded_options(trusted: TrustedGuarded, filters: Any, verdict: Any, allow_raw: bool) -> None:
    """A guarded file carries its pipeline and its vet report: options that would change them are refused."""
    spec = trusted.report.metadata.filters
    if filters is not None:
        raise GuardError(
            f"expected filters=None for a guarded file (its pipeline {spec!r} is in the graph), got filters; "
            "guard the source model with other --filters instead"
        )
    if verdict is not None:
        raise GuardError(
            "expected no verdict= for a guarded file (a vet report names the source model; `edgeguard guard "
            f"--verdict` records it in the file: {trusted.report.metadata.vet_verdict!r} here), got one"
        )
    if allow_raw:
        raise GuardError(
            "expected allow_unsafe_raw_outputs=False for a guarded file, got True; its only output is the release"
        )


def _load(path: Path, **options: Any) -> Any:
    """``load_model`` (one read); for a guarded file (``edgeguard guard``) the file exactly as written (not prepared)."""
    import dataclasses

    from edgeguard.model import ModelInfo
    from edgeguard.model.loading import prepared_model

    loaded = load_model(path, **options, require_info=False, prepare=False)
    if is_guarded(loaded.proto):  # a guarded file with noise has two inputs: no plain classifier signature
        return loaded
    if loaded.info is None:  # the reason, as load_model(require_info=True) would raise it
        reading = {key: options[key] for key in ("output", "input_shape", "input_layout")}
        ModelInfo.from_model(loaded.proto, **reading)
        raise ModelLoadError(f"expected a classifier signature in {path.name}, got none; see edgeguard vet --help")
    proto, serialized = prepared_model(loaded.proto, loaded.serialized, loaded.info)
    return dataclasses.replace(loaded, proto=proto, serialized=serialized)


def _dither_by_default(info: Any, pipeline: FilterPipeline, num_classes: int) -> bool:
    """The input dither's default: float32 images with a declared range, and a release that is more than the label."""
    if getattr(info, "input_kind", "image") != "image" or getattr(info, "input_dtype", "float32") != "float32":
        return False
    if getattr(info, "pixel_range", None) is None:
        return False
    return not pipeline.domains(num_classes)[-1].terminal
