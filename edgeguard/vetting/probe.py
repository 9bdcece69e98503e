"""Probe-set preparation for the vet: load, match classes, resize, scale, check coverage."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.data import Dataset, load_dataset
from edgeguard.errors import DataError, ModelLoadError
from edgeguard.model import ModelInfo

__all__ = ["Probe", "load_probe", "coverage_problems", "model_info_with_overrides", "parse_shape"]

_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Probe:
    """A probe set ready for the tests: ``images`` in [0, 1] and ``inputs`` in the model's pixel range."""

    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    inputs: np.ndarray  # the same images scaled to the model's pixel range
    labels: np.ndarray  # int64 (N,) or float32 (N, K)
    class_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> list[int]:
        if self.labels.ndim == 2:
            return [int(v) for v in self.labels.sum(axis=0)]
        return [int(v) for v in np.bincount(self.labels, minlength=len(self.class_names))]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self), "class_counts": self.class_counts()}


def model_info_with_overrides(model: Any, overrides: dict[str, Any]) -> ModelInfo:
    """The model's declared info, with user overrides (CLI flags) applied on top.

    Overrides may also supply what a file without metadata lacks (input shape, class names).
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        info = ModelInfo.from_model(model)
    except ModelLoadError:
        if not {"input_shape", "class_names"} <= overrides.keys():
            raise
        initializers = {init.name for init in model.graph.initializer}
        inputs = [v.name for v in model.graph.input if v.name not in initializers]
        info = ModelInfo(
            input_name=inputs[0] if inputs else "input",
            output_name=model.graph.output[0].name,
            input_shape=tuple(overrides["input_shape"]),
            class_names=tuple(overrides["class_names"]),
        )
    changes = {}
    for key in ("input_shape", "class_names", "pixel_range", "output_kind", "task_type"):
        if key in overrides:
            value = overrides[key]
            changes[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    if "pixel_range" in changes and (
        len(changes["pixel_range"]) != 2 or not changes["pixel_range"][0] < changes["pixel_range"][1]
    ):
        raise DataError(f"expected a pixel range LOW,HIGH with LOW < HIGH, got {changes['pixel_range']}")
    return dataclasses.replace(info, **changes) if changes else info


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    out = np.empty(images.shape[:2] + tuple(size), dtype=np.float32)
    for i, image in enumerate(images):
        for c, plane in enumerate(image):
            resized = Image.fromarray(plane.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR)
            out[i, c] = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=1)
    if have == 3 and channels == 1:
        return np.tensordot(images, _LUMINANCE, axes=([1], [0]))[:, None].astype(np.float32)
    raise DataError(f"expected probe images with 1 or {channels} channels, got {have}; convert them first")


def _match_labels(data: Dataset, info: ModelInfo) -> np.ndarray:
    names = info.class_names
    labels = data.y
    if info.task_type == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != len(names):
            raise DataError(
                f"expected multi-label probe labels of shape (N, {len(names)}) for this model, got {labels.shape}"
            )
        return labels.astype(np.float32)
    if labels.ndim != 1:
        raise DataError(f"expected one class index per probe image for a multiclass model, got labels {labels.shape}")
    if data.class_names and tuple(data.class_names) != tuple(names):
        lookup = {name: i for i, name in enumerate(names)}
        unknown = [name for name in data.class_names if name not in lookup]
        if unknown:
            raise DataError(
                f"expected probe classes among the model's classes {list(names)}, got unknown {unknown}; "
                "name the probe classes like the model does (or by index)"
            )
        remap = np.array([lookup[name] for name in data.class_names], dtype=np.int64)
        labels = remap[labels]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(
            f"expected probe labels in [0, {len(names) - 1}] for a model with {len(names)} classes, "
            f"got labels in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def load_probe(
    probe: str | os.PathLike | Dataset,
    info: ModelInfo,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> Probe:
    """Load and preprocess the probe set for ``info`` (input shape, channels, pixel range, classes).

    ``limit`` keeps a seeded random subset (all classes keep their share on average).
    """
    channels, height, width = info.input_shape
    if isinstance(probe, Dataset):
        data, source = probe, "<Dataset>"
    else:
        data = load_dataset(probe, class_names=info.class_names, image_size=(height, width), channels=channels)
        source = str(probe)
    labels = _match_labels(data, info)
    images = data.x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(images)):
        raise DataError("expected finite probe pixels, got NaN or inf")
    images = _convert_channels(images, channels)
    if images.shape[2:] != (height, width):
        images = _resize(images, (height, width))
    if limit is not None and limit < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        images, labels = images[keep], labels[keep]
    low, high = info.pixel_range
    inputs = images if (low, high) == (0.0, 1.0) else (low + images * (high - low)).astype(np.float32)
    return Probe(np.ascontiguousarray(images), np.ascontiguousarray(inputs), labels, tuple(info.class_names), source)


def coverage_problems(probe: Probe, task_type: str, min_per_class: int) -> list[str]:
    """Reasons the probe set cannot represent the claimed task (empty when it can)."""
    counts = probe.class_counts()
    problems = []
    if task_type == "multilabel":
        negatives = [len(probe) - c for c in counts]
        thin = [probe.class_names[i] for i, (p, n) in enumerate(zip(counts, negatives)) if min(p, n) < min_per_class]
        if thin:
            problems.append(
                f"expected at least {min_per_class} positive and negative probe samples per attribute, "
                f"got fewer for {thin}"
            )
        return problems
    missing = [probe.class_names[i] for i, c in enumerate(counts) if c < min_per_class]
    if missing:
        problems.append(
            f"expected at least {min_per_class} probe samples of every class, got fewer for {missing} "
            f"(counts {counts}); add samples of those classes"
        )
    return problems


def parse_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """'1,28,28' -> (1, 28, 28)."""
    if text is None or isinstance(text, (tuple, list)):
        return tuple(text) if text is not None else None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise DataError(f"expected an input shape like 1,28,28 (C,H,W), got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"expected an input shape like 1,28,28 (C,H,W), got {text!r}")
    return shape
