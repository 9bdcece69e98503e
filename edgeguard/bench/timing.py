"""The one timing loop of edgeguard: raw onnxruntime against ``SafeModel.predict``, interleaved.

Used by ``edgeguard bench`` (:mod:`edgeguard.bench.run`) and ``benchmarks/latency.py``.
Each repetition times every call of a configuration once -- the raw run, the SafeModel
call, then any extra calls -- on the same batch; with two calls their order is reversed
every other repetition, with four (raw, safe, an extra on the raw session, an extra on
the SafeModel's) it is rotated by two, so that a call never follows one on its own session
(which would find that session's weights warm in the CPU caches and favour it).
``images`` are cycled through in batches of ``batch``. Configurations are
visited in blocks (a warm-up, then the repetitions), in a new (seeded) random order each
round, so slow phases of a shared machine hit them all alike. Wall time
(``perf_counter_ns``) and thread CPU time (``thread_time_ns``, which other processes on
the machine do not inflate) are both recorded. Reported: medians, their ratios to the raw
call, and *paired* ratios (the median of per-repetition ratios, robust to drifts that
last longer than one repetition). For a raw-only configuration the second call is the raw
run again, so its ratio is the noise floor of the measurement. Garbage collection is
paused while timing.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError, InvalidInputError

__all__ = ["LatencyStats", "measure_latency"]

Call = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class LatencyStats:
    """Median latencies (microseconds) of one configuration and their ratios to the raw run.

    ``ratio`` / ``ratio_cpu``: median SafeModel over median raw (wall / thread CPU time);
    ``paired_ratio`` / ``paired_ratio_cpu``: median of the per-repetition ratios;
    ``extra``: the medians (wall, CPU) of any extra calls, by name, and their wall ratio to the SafeModel call.
    """

    safe_us: float
    raw_us: float
    ratio: float
    repeats: int
    safe_cpu_us: float = float("nan")
    raw_cpu_us: float = float("nan")
    ratio_cpu: float = float("nan")
    paired_ratio: float = float("nan")
    paired_ratio_cpu: float = float("nan")
    batch: int = 1
    extra: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    if len(images) < batch:
        raise InvalidInputError(f"expected at least {batch} images for batch {batch}, got {len(images)}")
    return [np.ascontiguousarray(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)]


def measure_latency(
    calls: dict[str, Sequence[Call]],
    images: np.ndarray,
    *,
    repeats: int = 200,
    warmup: int = 20,
    rounds: int = 5,
    seed: int = 0,
    batch: int = 1,
    extra_names: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Interleaved timings of ``calls[name] = (raw_run, safe_predict, *extra)``, each called as ``f(x)``.

    The repetitions are spread over ``rounds`` rounds; each round visits every
    configuration in a new (seeded) random order and runs a block for it (``warmup``
    untimed repetitions first). ``extra_names`` names the extra calls (reported in
    ``LatencyStats.extra``). ``progress(1)`` is called after each block.
    """
    if repeats < 1:
        raise ConfigError(f"expected repeats >= 1, got {repeats}; pass e.g. repeats=200")
    rounds = max(1, min(rounds, repeats))
    inputs = _batches(images, batch)
    names = list(calls)
    slots = 2 + len(extra_names)
    for name in names:
        if len(calls[name]) != slots:
            raise ConfigError(
                f"expected {slots} calls for {name!r} (raw, safe, {', '.join(extra_names)}), got {len(calls[name])}"
            )
    wall: dict[str, list[list[int]]] = {name: [[] for _ in range(slots)] for name in names}
    cpu: dict[str, list[list[int]]] = {name: [[] for _ in range(slots)] for name in names}
    order = random.Random(seed)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(rounds):
            block = repeats // rounds + (1 if round_index < repeats % rounds else 0)
            order.shuffle(names)
            for name in names:
                steps = list(enumerate(calls[name]))
                # two calls: alternate their order. More: alternate with a rotation by two, so that with
                # calls (raw, safe, raw-session extra, safe-session extra) no session runs twice in a row
                # (neither at a repetition boundary): every call starts with the other session in cache.
                backward = steps[::-1] if len(steps) == 2 else steps[2:] + steps[:2]
                by_wall, by_cpu = wall[name], cpu[name]
                for repetition in range(warmup + block):
                    x = inputs[repetition % len(inputs)]
                    for slot, call in backward if repetition % 2 else steps:
                        start, start_cpu = clock(), cpu_clock()
                        call(x)
                        elapsed, elapsed_cpu = clock() - start, cpu_clock() - start_cpu
                        if repetition >= warmup:
                            by_wall[slot].append(elapsed)
                            by_cpu[slot].append(elapsed_cpu)
                if progress is not None:
                    progress(1)
    finally:
        if enabled:
            gc.enable()
    out = {}
    for name in calls:
        w, c = wall[name], cpu[name]
        med_w = [statistics.median(v) / 1e3 for v in w]
        med_c = [statistics.median(v) / 1e3 for v in c]
        extra = {
            label: {"wall_us": med_w[2 + i], "cpu_us": med_c[2 + i], "safe_over_this": med_w[1] / med_w[2 + i]}
            for i, label in enumerate(extra_names)
        }
        out[name] = LatencyStats(
            safe_us=med_w[1],
            raw_us=med_w[0],
            ratio=med_w[1] / med_w[0],
            repeats=len(w[0]),
            safe_cpu_us=med_c[1],
            raw_cpu_us=med_c[0],
            ratio_cpu=med_c[1] / med_c[0] if med_c[0] > 0 else float("nan"),
            paired_ratio=statistics.median(s / r for s, r in zip(w[1], w[0]) if r > 0),
            paired_ratio_cpu=statistics.median([s / r for s, r in zip(c[1], c[0]) if r > 0] or [float("nan")]),
            batch=batch,
            extra=extra,
        )
    return out
