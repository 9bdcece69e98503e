"""Rung 3 of the attacker ladder: a classifier and decoder trained *through* the release filter.

The attacker ladder of ``edgeguard bench``, per filter configuration:

1. the server's decoder as trained, on the mapped release (``server_*`` columns);
2. the server's decoder refitted on filtered outputs (``adaptive_*``, :mod:`edgeguard.bench.attack`);
3. a classifier and a decoder trained with the filter in the loop (``through_*``, this module).

Rung 3 is a training job that edgeguard does not implement: an *attack trainer* plugs in
through the entry-point group ``edgeguard.attack_trainers`` (the ``converters`` package
registers ``train_through = "converters.ladder:train_through_filter"``). edgeguard never
imports such a package; it discovers the entry point with :mod:`importlib.metadata` and
runs it as an :class:`edgeguard.jobs.Job` (cached by a hash of its settings, so a re-run
is cheap). The trainer's contract::

    def train_through_filter(params: dict, artifacts: pathlib.Path) -> dict

``params`` (JSON): ``filter`` (a filter spec, e.g. ``"softmax>round:2"``; ``"none"`` =
no filter), ``epochs``, ``train_limit`` (None = all), ``test_limit``, ``seed``,
``threads``, ``data`` (an IDX folder or an ``.npz`` with ``x`` and ``y``) and whatever
extra settings the caller adds (``arch``, ``beta2``...). The job that calls it
(:func:`trainer_job`) also keys the cache by the data's SHA-256. The trainer writes an
ONNX classifier and an ONNX decoder under ``artifacts`` (``classifier.onnx`` /
``decoder.onnx``, or the paths relative to ``artifacts`` it returns under ``files``).
The decoder reads the released rows as (N, K) floats: the filtered values, with an
argmax index given as its one-hot row (any further mapping is inside decoder.onnx).

The bench then releases the trained classifier's outputs on its evaluation images
through the real :mod:`edgeguard.filters` pipeline and scores the decoder's
reconstructions (PSNR, SSIM, R; for R the attacker may project onto principal
components, as in rung 2), and the accuracy of that release.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.model.hashing import tree_sha256

__all__ = [
    "TRAINER_GROUP",
    "ThroughSettings",
    "RungResult",
    "find_trainer",
    "run_through_filter",
    "trainer_job",
    "training_split",
    "training_images",
    "load_builder",
]

#: The entry-point group attack trainers register under.
TRAINER_GROUP = "edgeguard.attack_trainers"
_DEFAULT_TRAINER = "train_through"


@dataclass(frozen=True)
class ThroughSettings:
    """Budget and settings of rung 3 (what every trained-through attacker gets)."""

    enabled: bool = True
    epochs: int = 1
    train_limit: int | None = None  # None: all of the training data
    data: str | None = None  # None: the bench data's training split when it has one, else the attacker split
    trainer: str = _DEFAULT_TRAINER  # entry-point name in TRAINER_GROUP
    test_limit: int | None = 500  # images the trainer evaluates itself on (the bench scores on its own split)
    cache_dir: str | None = None  # None: no cache (a temporary folder)
    extra: dict[str, Any] = field(default_factory=dict)  # passed to the trainer as they are (arch, beta2, ...)

    def describe(self) -> str:
        images = "all" if self.train_limit is None else f"at most {self.train_limit}"
        data = self.data or "the bench's attacker split"
        extra = f", {json.dumps(self.extra, sort_keys=True)}" if self.extra else ""
        return f"{self.epochs} epoch(s) on {images} images of {data}{extra}"


def training_split(data: Any) -> str | None:
    """The folder of ``data`` when it is an IDX folder with a training split (what rung 3 trains on by default)."""
    if data is None or not isinstance(data, str | os.PathLike):
        return None
    folder = Path(data)
    if not folder.is_dir():
        return None
    for suffix in (".gz", ""):
        if (folder / f"train-images-idx3-ubyte{suffix}").is_file() and (
            folder / f"train-labels-idx1-ubyte{suffix}"
        ).is_file():
            return str(folder)
    return None


def training_images(data: str) -> int | None:
    """How many training images rung 3's trainer finds in ``data`` (an IDX folder's training split or an .npz)."""
    path = Path(data)
    try:
        if path.is_dir():
            for suffix in (".gz", ""):
                images = path / f"train-images-idx3-ubyte{suffix}"
                if images.is_file():
                    import gzip

                    opener = gzip.open if suffix == ".gz" else open
                    with opener(images, "rb") as handle:
                        header = handle.read(8)
                    return int.from_bytes(header[4:8], "big")
            return None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return int(archive["x"].shape[0])
    except (OSError, KeyError, ValueError):
        return None
    return None


@dataclass
class RungResult:
    """What rung 3 measured for one filter configuration (``status`` "run", "cached" or "not run: why")."""

    status: str
    psnr: float = float("nan")
    ssim: float = float("nan")
    risk: float = float("nan")
    accuracy: float = float("nan")
    seconds: float = float("nan")
    reconstructions: np.ndarray | None = None

    @property
    def ran(self) -> bool:
        return self.status in ("run", "cached")


def _entry_point(name: str, what: str, rung: int) -> tuple[Any, str]:
    """(the entry point ``name`` of :data:`TRAINER_GROUP`, or None and a message saying what is installed)."""
    found = {point.name: point for point in entry_points(group=TRAINER_GROUP)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        return None, (
            f"no {what} {name!r} is installed in the entry-point group {TRAINER_GROUP!r} (installed: {known}); "
            f"install the converters package (pip install -e . in the edgeguard repository) to run rung {rung}"
        )
    return found[name], ""


def load_builder(name: str, what: str = "code builder", rung: int = 4) -> tuple[Any, str]:
    """(the object the entry point ``name`` of :data:`TRAINER_GROUP` loads, or None; a message)."""
    point, message = _entry_point(name, what, rung)
    if point is None:
        return None, message
    try:
        return point.load(), f"{what} {point.value}"
    except Exception as error:  # the builder's package is broken or misses a dependency
        return None, f"the {what} {point.value} could not be loaded ({type(error).__name__}: {error})"


def find_trainer(name: str = _DEFAULT_TRAINER) -> tuple[str | None, str]:
    """(``"module:function"`` of the trainer named ``name`` in :data:`TRAINER_GROUP`, or None; a message)."""
    point, message = _entry_point(name, "attack trainer", 3)
    if point is None:
        return None, message
    module, _, attribute = point.value.partition(":")
    try:
        point.load()
    except Exception as error:  # the trainer's package is broken or missing a dependency
        return None, f"the attack trainer {point.value!r} could not be loaded ({type(error).__name__}: {error})"
    return f"{module}:{attribute}", f"trainer {point.value}"


def trainer_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """The job the bench runs: call the trainer ``params["function"]`` on ``params["params"]``.

    The wrapper exists so that the cache key also holds what the trainer's own params
    cannot (the training data's SHA-256); the trainer is imported by name at run time,
    never by edgeguard's code.
    """
    import importlib

    module, _, name = str(params["function"]).partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    Path(artifacts).mkdir(parents=True, exist_ok=True)
    return target(dict(params["params"]), Path(artifacts))


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="rung 3", unit="job", disable=not enabled, file=sys.stderr)


def _without_keys(text: str) -> str:
    """A spec's text without ``consistent=true`` (what an attacker without the device secret trains through)."""
    import re

    return re.sub(r":consistent=true(?=>|$)", "", re.sub(r",consistent=true", "", text))


def _split_npz(folder: Path, images: np.ndarray, labels: np.ndarray, class_names: Any) -> tuple[str, str]:
    """The attacker split as an .npz (uint8 pixels, as the IDX files store them): its path and sha256."""
    pixels = np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
    pixels = pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
    digest = hashlib.sha256(pixels.tobytes() + np.asarray(labels, np.int64).tobytes()).hexdigest()
    path = folder / f"attacker-split-{digest[:16]}.npz"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        np.savez(temporary, x=pixels, y=np.asarray(labels, np.int64), class_names=np.asarray(class_names or ()))
        temporary.replace(path)
    return str(path), digest


def _artifact(result: dict[str, Any], artifacts: Path, key: str) -> Path | None:
    files = result.get("files") if isinstance(result.get("files"), dict) else {}
    for name in (files.get(key), result.get(key), result.get(f"{key}_onnx"), f"{key}.onnx"):
        if isinstance(name, str) and name:
            path = Path(name) if Path(name).is_absolute() else artifacts / name
            if path.is_file():
                return path
    matches = sorted(artifacts.rglob(f"{key}.onnx"))
    return matches[0] if matches else None


def run_through_filter(
    specs: list[Any],
    settings: ThroughSettings,
    *,
    attacker_images: np.ndarray,
    attacker_labels: np.ndarray,
    class_names: Any,
    seed: int,
    threads: int,
    progress: bool,
) -> tuple[dict[str, tuple[str, Path, Path, float] | str], str]:
    """Train (or reuse) one attacker per spec: ``{spec text: (status, classifier, decoder, seconds) | why not}``.

    The second value says which trainer ran, or why none did.
    """
    if not settings.enabled:
        return {spec.text: "not run: rung 3 was switched off (--no-through)" for spec in specs}, "switched off"
    function, message = find_trainer(settings.trainer)
    if function is None:
        return {spec.text: f"not run: {message}" for spec in specs}, message
    import tempfile

    from edgeguard.jobs import Job, JobError, run_jobs

    cache = Path(settings.cache_dir) if settings.cache_dir else Path(tempfile.mkdtemp(prefix="edgeguard-ladder-"))
    if settings.data:
        data, data_sha = str(settings.data), tree_sha256(settings.data)
    else:
        data, data_sha = _split_npz(cache / "data", attacker_images, attacker_labels, class_names)
    jobs = []
    for spec in specs:
        params = {
            **settings.extra,
            # Consistent noise is keyed by the victim's secret, which the attacker does not have: it trains through
            # fresh noise of the same distribution (the bench then releases through the real, keyed filter).
            "filter": _without_keys(spec.text),
            "epochs": settings.epochs,
            "train_limit": settings.train_limit,
            "test_limit": settings.test_limit,
            "seed": seed,
            "threads": threads,
            "data": data,
        }
        wrapper = {"function": function, "params": params, "data_sha256": data_sha}
        jobs.append(Job(f"{__name__}:trainer_job", wrapper))
    outcome: dict[str, tuple[str, Path, Path, float] | str] = {}
    failures: dict[str, str] = {}
    by_key = {}
    # One job at a time (they are independent; a failure must not hide the others' results, and each
    # result says truly whether it came from the cache).
    bar = _progress(len(jobs), progress)
    for job in jobs:
        try:
            (result,) = run_jobs([job], cache_dir=cache, progress=False, threads_per_worker=threads)
            by_key[job.key] = result
        except JobError as error:
            failures.update(error.failures)
        bar.update(1)
    bar.close()
    for spec, job in zip(specs, jobs):
        if job.key in failures:
            last = [line for line in str(failures[job.key]).strip().splitlines() if line.strip()]
            outcome[spec.text] = f"not run: the trainer failed ({(last[-1] if last else 'no message')[:300]})"
            print(f"[bench] rung 3 failed for {spec.text!r}: {failures[job.key]}", file=sys.stderr, flush=True)
            continue
        result = by_key[job.key]
        classifier = _artifact(result.result, result.artifacts, "classifier")
        decoder = _artifact(result.result, result.artifacts, "decoder")
        if classifier is None or decoder is None:
            outcome[spec.text] = "not run: the trainer wrote no classifier.onnx / decoder.onnx"
            continue
        outcome[spec.text] = ("cached" if result.cached else "run", classifier, decoder, result.seconds)
    return outcome, message
