"""Job function for the bench's filter ladder: train an attacker *through* a release filter.

Registered as the entry point ``edgeguard.attack_trainers: train_through`` (pyproject.toml),
so ``edgeguard bench`` can run it as a job (``edgeguard.jobs``) without edgeguard importing
converters::

    from importlib.metadata import entry_points
    train = entry_points(group="edgeguard.attack_trainers")["train_through"].load()
    metrics = train({"filter": "softmax>round:2", "epochs": 2, "train_limit": 6000}, Path("out"))

``params`` (JSON-serialisable): ``filter`` (a spec of the edgeguard.filters grammar;
"none" for the raw output) and any :class:`converters.TrainConfig` field (``epochs``,
``train_limit``, ``test_limit``, ``seed``, ``arch``, ``objective``, ``output``,
``decoder_input``, ``threads``, ``data``...). Defaults: a vicious CNN with logits
output, 2 epochs, 6000 training and 1000 test images, seed 0, one torch thread; the
decoder reads the filtered rows as released, or the row-centred log-probabilities when the
release is raw softmax probabilities (the stronger reading).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from converters.api import train_and_export
from converters.config import TrainConfig
from edgeguard.errors import InvalidInputError

__all__ = ["train_through_filter", "LADDER_DEFAULTS", "ladder_config"]

#: What a ladder job trains unless ``params`` says otherwise (CPU-sized).
LADDER_DEFAULTS: dict[str, Any] = {
    "objective": "vicious",
    "output": "logits",
    "arch": "cnn",
    "epochs": 2,
    "train_limit": 6000,
    "test_limit": 1000,
    "seed": 0,
    "threads": 1,
    "progress": False,
}


def ladder_config(params: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a ladder job runs for ``params`` (see the module docstring)."""
    values = dict(params)
    spec = values.pop("filter", values.pop("train_through", "none"))
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(
            f"expected ladder params 'filter' plus TrainConfig fields {sorted(known)}, got unknown keys {unknown}"
        )
    merged = {**LADDER_DEFAULTS, **values, "train_through": spec}
    if "decoder_input" not in values:
        raw_softmax = str(spec).strip().lower() in ("none", "raw", "softmax") and (
            merged["output"] == "softmax" or str(spec).strip().lower() == "softmax"
        )
        merged["decoder_input"] = (
            "log-probabilities" if raw_softmax and merged.get("task", "classes") == "classes" else "released"
        )
    return TrainConfig(**merged)


def train_through_filter(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Train classifier + decoder through ``params["filter"]``; write classifier.onnx, decoder.onnx, report.json.

    Returns the headline metrics (JSON-serialisable), all measured on what ``SafeModel``
    with that filter releases: classifier.onnx under onnxruntime, then the real numpy filters.
    """
    config = ladder_config(params)
    artifacts = Path(artifacts)
    report = train_and_export(config, artifacts)
    return {
        "filter": report.release_filter,
        "objective": report.objective,
        "arch": report.arch,
        "output": report.output,
        "decoder_input": report.decoder_input,
        "accuracy": report.accuracy,
        "psnr": report.psnr,
        "ssim": report.ssim,
        "risk": report.risk,
        "baseline": dict(report.baseline),
        "psnr_gain_db": report.psnr_gain_db,
        "release_capacity_bits": report.release_capacity_bits,
        "num_train": report.num_train,
        "num_test": report.num_test,
        "train_time_s": report.train_time_s,
        "wall_time_s": report.wall_time_s,
        "files": {"classifier": "classifier.onnx", "decoder": "decoder.onnx", "report": "report.json"},
        "config": report.config,
    }
