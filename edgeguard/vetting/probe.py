"""Probe-set preparation for the vet: load, match classes, resize, scale, check coverage.

Image models get images in [0, 1] (resized, channels converted) and their model inputs
(scaled to the pixel range, channels last for NHWC graphs, 0..255 for uint8 graphs); vector
and sequence models get their features as they are (:mod:`edgeguard.vectors`: ``.npz``,
``.csv`` or ``.parquet`` with a label column).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.data import Dataset, load_dataset
from edgeguard.errors import DataError
from edgeguard.model import ModelInfo
from edgeguard.vectors import DEFAULT_LABEL_COLUMN, VectorSet, load_vectors

__all__ = [
    "Probe",
    "load_probe",
    "coverage_problems",
    "model_info_with_overrides",
    "apply_overrides",
    "model_inputs",
    "parse_shape",
]

_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Probe:
    """A probe set ready for the tests: ``images`` (what the audit reconstructs) and ``inputs`` (what the model takes).

    Images: ``images`` (N, C, H, W) float32 in [0, 1], ``inputs`` the same in the model's
    pixel range, layout and dtype. Vectors/sequences: both are the features as read.
    """

    images: np.ndarray  # (N, C, H, W) float32 in [0, 1], or (N, F) / (N, T, F) features
    inputs: np.ndarray  # what the model is fed
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


#: Overrides that decide how the graph is read (passed to ModelInfo.from_model / load_model).
DESCRIBE_KEYS = ("output", "input_shape", "input_layout", "class_names")


def apply_overrides(info: ModelInfo, overrides: dict[str, Any]) -> ModelInfo:
    """``info`` with the user's pixel_range / output_kind / task_type (CLI flags) on top."""
    changes: dict[str, Any] = {}
    for key in ("pixel_range", "output_kind", "task_type"):
        value = overrides.get(key)
        if value is not None:
            changes[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    if "pixel_range" in changes and (
        len(changes["pixel_range"]) != 2 or not changes["pixel_range"][0] < changes["pixel_range"][1]
    ):
        raise DataError(f"expected a pixel range LOW,HIGH with LOW < HIGH, got {changes['pixel_range']}")
    if "output_kind" in changes:
        changes["output_kind_source"] = "option"
    return dataclasses.replace(info, **changes) if changes else info


def model_info_with_overrides(model: Any, overrides: dict[str, Any]) -> ModelInfo:
    """The model's declared info, with user overrides (CLI flags) applied on top.

    Overrides may also supply what a file without metadata lacks (input shape, class names),
    pick the output (``output``) and settle an image's layout (``input_layout``).
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    describe = {key: tuple(v) if isinstance(v, list) else v for key, v in overrides.items() if key in DESCRIBE_KEYS}
    info = ModelInfo.from_model(model, **describe)
    return apply_overrides(info, overrides)


def model_inputs(info: ModelInfo, items: np.ndarray) -> np.ndarray:
    """Probe items as the model takes them: images in [0, 1] scaled to the pixel range (0..255
    uint8 for uint8 graphs) and laid out as the graph wants; features unchanged (float32)."""
    if info.input_kind != "image":
        return np.ascontiguousarray(items, dtype=np.float32)
    if info.input_dtype == "uint8":
        x = np.clip(np.rint(np.asarray(items, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    else:
        low, high = info.pixel_range or (0.0, 1.0)
        x = items if (low, high) == (0.0, 1.0) else low + np.asarray(items, dtype=np.float32) * (high - low)
        x = np.asarray(x, dtype=np.float32)
    if info.input_layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x)


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


def _match_labels(data: Dataset | VectorSet, info: ModelInfo) -> np.ndarray:
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
    label_column: str = DEFAULT_LABEL_COLUMN,
) -> Probe:
    """Load and preprocess the probe set for ``info`` (input shape, channels, pixel range, classes).

    ``limit`` keeps a seeded random subset (all classes keep their share on average).
    ``label_column`` names the label column of a ``.csv`` / ``.parquet`` vector probe.
    """
    if info.input_kind != "image":
        return _load_vector_probe(probe, info, limit=limit, seed=seed, label_column=label_column)
    channels, height, width = info.image_shape
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
    inputs = model_inputs(info, images)
    return Probe(np.ascontiguousarray(images), inputs, labels, tuple(info.class_names), source)


def _load_vector_probe(
    probe: str | os.PathLike | VectorSet, info: ModelInfo, *, limit: int | None, seed: int, label_column: str
) -> Probe:
    if isinstance(probe, VectorSet):
        data, source = probe, "<VectorSet>"
    elif isinstance(probe, Dataset):
        raise DataError(
            f"expected a vector probe set ((N, {', '.join(map(str, info.input_shape))}) features) for this "
            f"{info.input_kind} model, got a Dataset of images {probe.x.shape}; pass an .npz, .csv or .parquet"
        )
    else:
        data, source = load_vectors(probe, label_column=label_column, class_names=info.class_names), str(probe)
    shape = tuple(info.input_shape)
    if tuple(data.x.shape[1:]) != shape:
        raise DataError(
            f"expected probe rows of shape {shape} (the model's input), got {tuple(data.x.shape[1:])} in {source}; "
            "give the model's features, in its order"
        )
    labels = _match_labels(data, info)
    x = data.x.astype(np.float32, copy=False)
    if limit is not None and limit < len(x):
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
        x, labels = x[keep], labels[keep]
    low, high = info.pixel_range or (-np.inf, np.inf)
    if x.size and (x.min() < low or x.max() > high):
        raise DataError(
            f"expected probe features in the model's declared input range [{low:g}, {high:g}], got values in "
            f"[{x.min():g}, {x.max():g}] in {source}"
        )
    x = np.ascontiguousarray(x)
    return Probe(x, x, labels, tuple(info.class_names), source)


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
    """'1,28,28' -> (1, 28, 28); '30' -> (30,) (one sample's shape: (F,), (T, F) or (C, H, W))."""
    if text is None or isinstance(text, (tuple, list)):
        return tuple(text) if text is not None else None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise DataError(f"expected an input shape like 1,28,28 (C,H,W) or 30 (features), got {text!r}") from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise DataError(f"expected an input shape like 1,28,28 (C,H,W) or 30 (features), got {text!r}")
    return shape
