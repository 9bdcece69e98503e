"""Latency of ``SafeModel.predict`` against a raw onnxruntime session, interleaved in one run.

Each repetition times one raw ``InferenceSession.run`` and one ``SafeModel.predict`` on the
same single image (batch 1, the on-device case), alternating which goes first; the raw
call runs the very onnxruntime session the SafeModel wraps (same weights, same cache
state). Configurations are visited in blocks, in a new (seeded) random order every
round, so slow phases of a shared machine hit them all alike. Medians of wall time
(``perf_counter_ns``) after a warm-up per block; the ratio is median SafeModel / median
raw of the same configuration. For the raw configuration ("none") the second call is
the raw session again, so its ratio is the noise floor of the measurement. Garbage
collection is paused while timing.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LatencyStats", "measure_latency"]


@dataclass(frozen=True)
class LatencyStats:
    """Median latencies (microseconds) of one configuration and their ratio."""

    safe_us: float
    raw_us: float
    ratio: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    calls: dict[str, tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]]],
    images: np.ndarray,
    *,
    repeats: int = 200,
    warmup: int = 20,
    rounds: int = 5,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Interleaved batch-1 timings of ``calls[name] = (raw_run, safe_predict)``.

    The repetitions are spread over ``rounds`` rounds; each round visits every
    configuration in a new (seeded) random order and runs a block of repetitions for
    it (warm-up first), each timing ``raw_run(x)`` and ``safe_predict(x)`` in alternating
    order. ``images`` (M, C, H, W) float32 are cycled through, one per repetition;
    ``progress(n)`` is called after each block.
    """
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1, got {repeats}")
    rounds = max(1, min(rounds, repeats))
    singles = [np.ascontiguousarray(images[i : i + 1]) for i in range(len(images))]
    names = list(calls)
    samples: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in names}
    order = random.Random(seed)
    clock = time.perf_counter_ns
    enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(rounds):
            block = repeats // rounds + (1 if round_index < repeats % rounds else 0)
            order.shuffle(names)
            for name in names:
                raw_run, safe_predict = calls[name]
                for repetition in range(warmup + block):
                    x = singles[repetition % len(singles)]
                    pair = [(0, raw_run), (1, safe_predict)]
                    if repetition % 2:
                        pair.reverse()
                    for slot, call in pair:
                        start = clock()
                        call(x)
                        elapsed = clock() - start
                        if repetition >= warmup:
                            samples[name][slot].append(elapsed)
                if progress is not None:
                    progress(1)
    finally:
        if enabled:
            gc.enable()
    out = {}
    for name, (raw, safe) in samples.items():
        raw_us, safe_us = statistics.median(raw) / 1e3, statistics.median(safe) / 1e3
        out[name] = LatencyStats(safe_us=safe_us, raw_us=raw_us, ratio=safe_us / raw_us, repeats=len(raw))
    return out
