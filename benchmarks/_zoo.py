"""A small cached model zoo shared by the benchmarks (attack_fmnist.py, detection.py...).

``build(spec)`` trains a model with :func:`converters.train_and_export` only when the
folder for that spec does not exist yet; the folder name ends with a hash of the fully
resolved :class:`converters.TrainConfig` (runtime-only knobs such as ``threads`` and
``progress`` excluded), so two benchmarks asking for the same model share it.

    from benchmarks._zoo import build
    folder = build({"objective": "vicious", "beta2": 1.0, "epochs": 4, "threads": 2})
    folder / "classifier.onnx", folder / "decoder.onnx", folder / "report.json"

The cache lives in ``benchmarks/.cache/zoo`` (git-ignored). A build trains into a
temporary sibling folder (``<name>.tmp-<pid>``) and renames it when done, so an
interrupted build never leaves a half-written model under the final name; the next build
of that spec deletes such leftovers once their process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converters import TrainConfig, load_report, train_and_export
from converters.config import RUNTIME_FIELDS

__all__ = ["DEFAULT_ROOT", "ZOO_VERSION", "build", "folder_for", "spec_key"]

#: Bump when a change to the converters makes cached models stale.
ZOO_VERSION = 1
DEFAULT_ROOT = Path(__file__).resolve().parent / ".cache" / "zoo"


def _resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """The full config the spec stands for, without runtime-only knobs."""
    values = TrainConfig.from_dict(dict(spec)).to_dict()
    for name in RUNTIME_FIELDS:
        values.pop(name, None)
    return values


def spec_key(spec: dict[str, Any]) -> str:
    """A 12-hex-digit hash of the resolved spec (the same model always gets the same key)."""
    payload = json.dumps({"zoo_version": ZOO_VERSION, **_resolved(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def folder_for(spec: dict[str, Any], root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Where the model for ``spec`` lives: ``root/<objective>-<output>-<arch>-<key>``."""
    values = _resolved(spec)
    return Path(root) / f"{values['objective']}-{values['output']}-{values['arch']}-{spec_key(spec)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(folder: Path) -> None:
    """Delete staging folders of ``folder`` left by builds whose process is gone (interrupted runs)."""
    for staging in folder.parent.glob(f"{folder.name}.tmp-*"):
        suffix = staging.name.rsplit(".tmp-", 1)[1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(staging, ignore_errors=True)


def build(spec: dict[str, Any], root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The folder of the model for ``spec`` (TrainConfig fields), training it first if it is not cached."""
    folder = folder_for(spec, root)
    if (folder / "report.json").is_file():
        return folder
    config = TrainConfig.from_dict(dict(spec))
    _remove_stale_staging(folder)
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"zoo: training {folder.name} ...", file=sys.stderr, flush=True)
    train_and_export(config, staging)
    (staging / "spec.json").write_text(json.dumps({"zoo_version": ZOO_VERSION, **_resolved(spec)}, indent=2) + "\n")
    if folder.exists() and not (folder / "report.json").is_file():
        shutil.rmtree(folder)  # an incomplete folder (a complete build always has its report): replace it
    try:
        staging.rename(folder)
    except OSError:  # built meanwhile by another process: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
        return folder
    report = load_report(folder)
    report.paths = {name: str(folder / Path(path).name) for name, path in report.paths.items()}
    report.save(folder / "report.json")
    return folder


def rescore(folder: str | os.PathLike, train_data: Any, test_data: Any) -> dict[str, Any]:
    """Accuracy and leakage of a zoo model, measured afresh from its exported ONNX files.

    A cached model's report.json holds the figures of the code that trained it; benchmarks
    call this so every row they publish comes from the current metrics, on the artefacts a
    user actually receives (classifier.onnx run by onnxruntime, decoder.onnx on its outputs).
    """
    from converters.export import run_onnx
    from converters.report import leakage_scores, mahalanobis_reference
    from converters.tasks import accuracy, label_only_baseline, predict

    folder = Path(folder)
    outputs = run_onnx(folder / "classifier.onnx", test_data.x)
    reconstructions = np.concatenate(
        [run_onnx(folder / "decoder.onnx", outputs[i : i + 2000]) for i in range(0, len(outputs), 2000)]
    )
    predictions = predict(outputs, test_data.multilabel)  # argmax of probabilities = argmax of logits
    reference = mahalanobis_reference(train_data.x)
    leak = leakage_scores(test_data.x, reconstructions, reference)
    baseline = leakage_scores(test_data.x, label_only_baseline(train_data, predictions), reference)
    return {
        "accuracy": accuracy(predictions, test_data.y),
        "psnr": leak.psnr,
        "ssim": leak.ssim,
        "risk": leak.risk,
        "baseline": baseline.to_dict(),
    }
