"""Small helpers the bench's stages share: sessions, batched runs, leakage triples, seeds, progress."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.bench.mapping import one_hot
from edgeguard.errors import ModelLoadError
from edgeguard.metrics import psnr, reconstruction_risk, ssim

__all__ = ["cpu_name", "machine", "log", "bar", "session", "session_options", "run_batched"]

_BATCH = 500


def log(message: str, progress: bool) -> None:
    if progress:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


def bar(total: int, description: str, progress: bool) -> Any:
    """A tqdm bar on stderr (tqdm is a core dependency; ``tqdm(disable=True)`` when progress is off)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, file=sys.stderr, leave=True, dynamic_ncols=True, disable=not progress)


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def session(model: Any, threads: int, what: str) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise ModelLoadError(f"expected onnxruntime to load the {what}, got {type(error).__name__}: {error}") from None


def run_batched(session: Any, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + _BATCH]})[0] for i in range(0, len(x), _BATCH)])


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for benchmark pages."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "torch": torch_version,
        "threads": threads,
        "load_average_before": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def risk(images: np.ndarray, reconstructions: np.ndarray, reference: Any) -> float:
    return reconstruction_risk(images, reconstructions, reference) if reference is not None else float("nan")


def leakage(images: np.ndarray, reconstructions: np.ndarray, reference: Any) -> tuple[float, float, float]:
    """(PSNR, SSIM, R) of ``reconstructions``; SSIM is nan below 11 pixels a side, R without a reference."""
    value = risk(images, reconstructions, reference)
    small = min(images.shape[-2:]) < 11
    return psnr(images, reconstructions), (float("nan") if small else ssim(images, reconstructions)), value


def labels_of(release: np.ndarray) -> np.ndarray:
    """The released top-1 class of every row (the release itself when it is one label per row)."""
    return release.astype(np.int64) if release.ndim == 1 else release.argmax(axis=1)


def seeds(seed: int, count: int) -> list[int]:
    """One independent 63-bit seed per filter configuration."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(2, np.uint64)[0] >> np.uint64(1)) for child in children]


def decoder_rows(release: np.ndarray, num_classes: int) -> np.ndarray:
    """What a decoder trained through a filter reads: float32 released rows, an index as its one-hot row."""
    release = np.asarray(release)
    if release.ndim == 1:
        return one_hot(release.astype(np.int64), num_classes)
    return np.ascontiguousarray(release, dtype=np.float32)


def as_rows(release: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) rows of a release as released: an index becomes its one-hot row."""
    release = np.asarray(release)
    return one_hot(release.astype(np.int64), num_classes) if release.ndim == 1 else release


def finite(value: float) -> float:
    return value if isinstance(value, float | int) and np.isfinite(value) else -np.inf
