"""The latency stage of a bench run: every configuration's ``SafeModel.predict`` against raw onnxruntime, interleaved."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeguard.bench.common import bar
from edgeguard.bench.context import BenchContext
from edgeguard.bench.timing import measure_latency
from edgeguard.errors import FilterError
from edgeguard.filters import FilterPipeline

__all__ = ["WARMUP", "latency_of_all", "rounds"]

WARMUP = 10


def rounds(repeats: int) -> int:
    """How many rounds the timed calls are spread over."""
    return min(5, repeats)


def latency_of_all(context: BenchContext) -> dict[str, Any]:
    """Spec text -> latency statistics (:func:`edgeguard.bench.timing.measure_latency`), batch 1."""
    raw_session = context.raw_session
    calls = {}
    for name, safe in context.safe_models.items():
        if safe is None:
            calls[name] = (_raw_call(raw_session), _raw_call(raw_session))
        elif safe.pipeline.needs_inputs and not _predict_takes_inputs(safe, context.evaluation.model_x[:1]):
            # SafeModel.predict does not hand the inputs to the pipeline yet: time inference + pipeline(inputs=).
            calls[name] = (_raw_call(raw_session), _predict_with_inputs(raw_session, safe.pipeline))
        else:  # the raw run uses the session the SafeModel wraps when it is the plain model (same caches)
            calls[name] = (_raw_call(_plain_session(safe, raw_session)), safe.predict)
    settings = context.settings
    count = rounds(settings.repeats)
    progress_bar = bar(count * len(calls), "latency", context.progress)
    latency = measure_latency(
        calls,
        context.evaluation.model_x[: min(len(context.evaluation.x), 64)],
        repeats=settings.repeats,
        warmup=WARMUP,
        rounds=count,
        seed=settings.seed,
        progress=progress_bar.update,
    )
    progress_bar.close()
    return latency


def _raw_call(session: Any) -> Any:
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: x})


def _plain_session(safe: Any, raw_session: Any) -> Any:
    """The SafeModel's own session when it runs the plain model; else (filters fused into the graph) the bench's."""
    session = getattr(safe, "session", None)  # SafeModel's public session
    try:
        same = [i.name for i in session.get_inputs()] == [i.name for i in raw_session.get_inputs()] and [
            o.name for o in session.get_outputs()
        ] == [o.name for o in raw_session.get_outputs()]
    except AttributeError:
        return raw_session
    return session if same else raw_session


def _predict_takes_inputs(safe: Any, sample: np.ndarray) -> bool:
    """Whether ``safe.predict`` hands the inputs to a pipeline that needs them (consistent noise)."""
    try:
        safe.predict(sample)
    except FilterError:
        return False
    return True


def _predict_with_inputs(session: Any, pipeline: FilterPipeline) -> Any:
    input_name = session.get_inputs()[0].name

    def call(x: np.ndarray) -> Any:
        return pipeline(session.run(None, {input_name: x})[0], inputs=x)

    return call
