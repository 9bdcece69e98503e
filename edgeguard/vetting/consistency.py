"""Consistency test: per-row outputs must not depend on batch size, composition or repetition.

The vet runs the model in batches while apps call :class:`~edgeguard.SafeModel` one image
at a time; a graph such as ``Where(Equal(Shape(x)[0], 1), vicious, honest)`` would show
the vet one model and the app another. The test runs a sample of probe rows one at a
time (batch 1, the app's way), then in batches of several sizes, shuffled, and with
rows repeated, and compares each row's outputs. Any difference beyond float noise is a
high finding and a vicious verdict. The batch sizes checked are recorded in the report;
SafeModel refuses batches larger than the largest one checked.

On large inputs the batch sizes are capped (:func:`batch_sizes_for`) at the rows the vet
itself runs per call (:func:`edgeguard.vetting.running.chunk_rows`: 512, fewer when a
batch would pass 2^24 input values), never under :data:`MIN_LARGEST_BATCH`: larger batches
are never run by the vet, and SafeModel refuses them. The cap is stated in the result
(``batch_cap``); 28x28 and 64x64 images and feature vectors are never capped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError

__all__ = ["ConsistencySettings", "ConsistencyResult", "consistency_test", "batch_sizes_for", "DEFAULT_BATCH_SIZES",
           "MIN_LARGEST_BATCH"]

#: Batch sizes the test runs (the leakage audit's chunk size is the largest).
DEFAULT_BATCH_SIZES = (1, 2, 3, 8, 33, 128, 512)
#: A cap on the batch sizes never goes below this largest batch.
MIN_LARGEST_BATCH = 33


def batch_sizes_for(sizes: Sequence[int], chunk: int, values_per_row: int) -> tuple[tuple[int, ...], str]:
    """The batch sizes checked for inputs the vet runs ``chunk`` rows at a time, and why capped ('' when not).

    Sizes above ``max(chunk, MIN_LARGEST_BATCH)`` are dropped and that cap itself is checked.
    """
    cap = max(MIN_LARGEST_BATCH, int(chunk))
    if max(sizes) <= cap:
        return tuple(sizes), ""
    kept = tuple(sorted({s for s in sizes if s <= cap} | {cap}))
    return kept, (
        f"batch sizes capped at {cap} (asked up to {max(sizes)}): inputs of {values_per_row} values, which the vet "
        f"runs at most {chunk} rows per call (never under {MIN_LARGEST_BATCH}); SafeModel refuses larger batches"
    )


@dataclass(frozen=True)
class ConsistencySettings:
    """Rows sampled, batch sizes checked and the tolerance (relative to the outputs' scale)."""

    rows: int = 48
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.rows < 2 or not self.batch_sizes or min(self.batch_sizes) < 1 or self.tolerance <= 0:
            raise ConfigError(
                f"expected rows >= 2, batch sizes >= 1 and a positive tolerance, got {self.rows}, "
                f"{self.batch_sizes}, {self.tolerance}"
            )


@dataclass
class ConsistencyResult:
    """Outcome of :func:`consistency_test`: ``consistent`` False means the model changes with the batch."""

    consistent: bool
    max_difference: float  # relative to the outputs' scale
    worst_case: str
    batch_sizes: list[int]
    rows: int
    seconds: float = 0.0
    cases: dict[str, float] = field(default_factory=dict)
    batch_cap: str = ""  # why fewer batch sizes than the settings' were checked ('' = not capped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "max_difference": self.max_difference,
            "worst_case": self.worst_case,
            "batch_sizes": list(self.batch_sizes),
            "max_batch_checked": max(self.batch_sizes),
            "rows": self.rows,
            "cases": dict(self.cases),
            "batch_cap": self.batch_cap,
            "seconds": self.seconds,
        }


def consistency_test(
    inputs: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    *,
    settings: ConsistencySettings | None = None,
    seed: int = 0,
) -> ConsistencyResult:
    """Compare each row's outputs at batch 1 with batched, shuffled and repeated runs.

    ``inputs`` are model inputs (already in the model's pixel range); ``run`` runs one
    batch exactly as given (no chunking) and returns (N, K) outputs.
    """
    started = time.perf_counter()
    settings = settings or ConsistencySettings()
    rng = np.random.default_rng(seed)
    pool = np.asarray(inputs)
    if pool.dtype != np.uint8:  # uint8 image models take their pixels as they are
        pool = pool.astype(np.float32, copy=False)
    take = rng.choice(len(pool), size=min(settings.rows, len(pool)), replace=False)
    rows = pool[take]
    single = np.concatenate([np.asarray(run(rows[i : i + 1]), dtype=np.float64) for i in range(len(rows))])
    scale = max(1.0, float(np.abs(single).max()))
    cases: dict[str, float] = {}

    def compare(name: str, batch: np.ndarray, index: np.ndarray) -> None:
        out = np.asarray(run(batch), dtype=np.float64)
        if out.shape != (len(batch), single.shape[1]):
            cases[name] = float("inf")
            return
        cases[name] = float(np.abs(out - single[index]).max()) / scale

    for size in sorted(set(settings.batch_sizes) - {1}):
        index = rng.integers(0, len(rows), size=size) if size > len(rows) else rng.permutation(len(rows))[:size]
        compare(f"batch {size} (shuffled, rows repeated)" if size > len(rows) else f"batch {size} (shuffled)", rows[index], index)
    repeated = np.repeat(np.arange(len(rows)), 2)
    compare("every row twice", rows[repeated], repeated)
    # composition: the same rows next to other probe rows
    others = pool[rng.choice(len(pool), size=min(len(pool), 16), replace=False)]
    mixed = np.concatenate([rows[:8], others])
    out = np.asarray(run(mixed), dtype=np.float64)
    cases["mixed with other rows"] = (
        float(np.abs(out[:8] - single[:8]).max()) / scale if out.shape[0] == len(mixed) else float("inf")
    )
    worst = max(cases, key=lambda name: cases[name])
    difference = cases[worst]
    return ConsistencyResult(
        consistent=bool(difference <= settings.tolerance),
        max_difference=difference,
        worst_case=worst,
        batch_sizes=sorted(set(settings.batch_sizes)),
        rows=len(rows),
        seconds=time.perf_counter() - started,
        cases=cases,
    )


def checked_sizes(result: ConsistencyResult | None) -> Sequence[int]:
    """The batch sizes a passed test vouches for (empty when it did not pass)."""
    return result.batch_sizes if result is not None and result.consistent else []
