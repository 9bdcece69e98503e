"""What an ONNX classifier declares about its task, read from the file's ``metadata_props``.

An honest provider publishes the task with the model: class names, input shape, pixel
range, task type and whether the output is logits or probabilities. The converters
write these keys; edgeguard reads them to validate inputs, preprocess probe sets and
pick the claimed loss for vetting. Files without them still work: the shapes come
from the graph and the rest falls back to documented defaults (``declared`` is False).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from edgeguard.errors import ModelLoadError
from edgeguard.model.limits import MAX_CLASSES, MAX_METADATA_CHARS, MAX_PIXELS, MAX_SIDE
from edgeguard.model.signature import read_signature, static_dims

__all__ = ["ModelInfo", "static_dims", "METADATA_KEYS", "TASK_TYPES", "OUTPUT_KINDS"]

TASK_TYPES = ("multiclass", "multilabel")
OUTPUT_KINDS = ("logits", "probabilities")
#: metadata_props keys edgeguard reads (all values are strings; lists are JSON).
METADATA_KEYS = ("task_type", "class_names", "input_shape", "pixel_range", "output_kind")


@dataclass(frozen=True)
class ModelInfo:
    """The task a model claims, and its graph's input/output.

    ``input_shape`` is one sample's shape in the graph's own layout: (C, H, W) or (H, W, C)
    for images (``input_layout``), (F,) for vectors, (T, F) for sequences.
    ``pixel_range`` is the declared input range: (0, 1) by default for float images,
    (0, 255) for uint8 images, None (any finite value) for vectors and sequences unless
    declared. ``output_name`` is the one output of the graph SafeModel runs (see
    :func:`edgeguard.model.signature.prepare_graph`); ``output_source`` the file's output
    it was made from, ``output_type`` how ("scores", "zipmap" or "label").
    ``output_kind_source``: "metadata", "graph" (a Softmax, ZipMap, the name) or "default"
    (then SafeModel and the vet look at the values).
    """

    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    task_type: str = "multiclass"
    pixel_range: tuple[float, float] | None = (0.0, 1.0)
    output_kind: str = "logits"
    declared: bool = False  # True when the file carried edgeguard's metadata keys
    input_kind: str = "image"  # "image" | "vector" | "sequence"
    input_layout: str | None = "NCHW"  # "NCHW" | "NHWC" for images, None otherwise
    input_dtype: str = "float32"  # "float32" | "uint8"
    fixed_batch: int | None = None  # the graph's fixed batch size, if any
    output_type: str = "scores"  # "scores" | "zipmap" | "label"
    output_source: str = ""  # the file's output the release is made from ('' = output_name)
    output_kind_source: str = "metadata"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of an image input whatever its layout; the sample shape otherwise."""
        if self.input_kind == "image" and self.input_layout == "NHWC":
            h, w, c = self.input_shape
            return (c, h, w)
        return tuple(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_metadata_props(self) -> dict[str, str]:
        """The ``metadata_props`` an honest provider attaches to the ONNX file."""
        props = {
            "task_type": self.task_type,
            "class_names": json.dumps(list(self.class_names)),
            "input_shape": json.dumps(list(self.input_shape)),
            "output_kind": self.output_kind,
        }
        if self.pixel_range is not None:
            props["pixel_range"] = json.dumps(list(self.pixel_range))
        return props

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        output: str | None = None,
        input_shape: tuple[int, ...] | None = None,
        input_layout: str | None = None,
        class_names: tuple[str, ...] | None = None,
    ) -> "ModelInfo":
        """Read the info from an ``onnx.ModelProto``: the graph's input and chosen output
        (:mod:`edgeguard.model.signature`), the metadata_props, then the arguments (CLI flags) on top."""
        props = {entry.key: entry.value for entry in model.metadata_props}
        declared = all(key in props for key in METADATA_KEYS)
        if input_shape is None and "input_shape" in props:
            input_shape = _shape_from_metadata(props["input_shape"])
        elif input_shape is not None:
            input_shape = _check_shape(tuple(int(d) for d in input_shape), "input_shape")
        if class_names is None and "class_names" in props:
            class_names = _names_from_metadata(props["class_names"])
        signature = read_signature(
            model,
            output=output,
            input_shape=input_shape,
            input_layout=input_layout,
            num_classes=len(class_names) if class_names else None,
        )
        spec, out = signature.input, signature.output
        if class_names is None:
            if out.class_labels:
                class_names = out.class_labels
            elif out.num_classes:
                class_names = tuple(str(i) for i in range(out.num_classes))
            else:
                raise ModelLoadError(
                    f"expected an output of shape (N, K) with a fixed K, got none for {out.name!r}; "
                    "add 'class_names' to the model's metadata_props (or pass class_names)"
                )
        class_names = tuple(str(n) for n in class_names)
        if not 1 <= len(class_names) <= MAX_CLASSES:
            raise ModelLoadError(
                f"expected between 1 and {MAX_CLASSES} classes (the output's second dim), got {len(class_names)}; "
                "the file's declared output shape is not that of a classifier"
            )
        if out.num_classes is not None and out.num_classes != len(class_names):
            raise ModelLoadError(
                f"expected the graph output to have shape (N, {len(class_names)}) for {len(class_names)} classes, "
                f"got (N, {out.num_classes}) for {out.name!r}; the file's metadata and graph disagree"
            )
        if "pixel_range" in props:
            pixel_range: tuple[float, ...] | None = _range_from_metadata(props["pixel_range"])
        elif spec.dtype == "uint8":
            pixel_range = (0.0, 255.0)
        elif spec.kind == "image":
            pixel_range = (0.0, 1.0)
        else:
            pixel_range = None  # features: any finite value
        task_type = props.get("task_type", "multiclass")
        if "output_kind" in props:
            output_kind, kind_source = props["output_kind"], "metadata"
        elif out.output_kind is not None:
            output_kind, kind_source = out.output_kind, "graph"
        else:
            output_kind, kind_source = "logits", "default"
        if task_type not in TASK_TYPES:
            raise ModelLoadError(f"expected task_type in {TASK_TYPES}, got {task_type[:60]!r} in the model's metadata")
        if output_kind not in OUTPUT_KINDS:
            raise ModelLoadError(
                f"expected output_kind in {OUTPUT_KINDS}, got {output_kind[:60]!r} in the model's metadata"
            )
        if pixel_range is not None and (len(pixel_range) != 2 or not pixel_range[0] < pixel_range[1]):
            raise ModelLoadError(f"expected pixel_range [low, high] with low < high, got {list(pixel_range)}")
        return cls(
            input_name=spec.name,
            output_name=out.tensor_name,
            input_shape=spec.sample_shape,
            class_names=class_names,
            task_type=task_type,
            pixel_range=None if pixel_range is None else (pixel_range[0], pixel_range[1]),
            output_kind=output_kind,
            declared=declared,
            input_kind=spec.kind,
            input_layout=spec.layout,
            input_dtype=spec.dtype,
            fixed_batch=spec.fixed_batch,
            output_type=out.type,
            output_source=out.name,
            output_kind_source=kind_source,
        )


def _json(text: str, key: str) -> Any:
    if len(text) > MAX_METADATA_CHARS:
        raise ModelLoadError(
            f"expected a metadata value {key!r} under {MAX_METADATA_CHARS} characters, got {len(text)}; "
            "the file's metadata is not that of a classifier"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ModelLoadError(
            f"expected a JSON value for {key!r} in the model's metadata_props, got {type(error).__name__}: "
            f"{str(error)[:120]}; fix the metadata (e.g. {key}=[1, 28, 28])"
        ) from None


def _check_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """One sample's shape: 1 to 3 positive integers ((F,), (T, F), (C, H, W) or (H, W, C)), bounded."""
    if (
        not 1 <= len(shape) <= 3
        or not all(1 <= d <= MAX_PIXELS for d in shape)
        or (len(shape) == 3 and not all(d <= MAX_SIDE for d in shape))
        or math.prod(shape) > MAX_PIXELS
    ):
        raise ModelLoadError(
            f"expected one sample's input shape of 1 to 3 positive integers ((F,), (T, F) or (C, H, W); image sides "
            f"at most {MAX_SIDE}, at most {MAX_PIXELS} values), got {list(shape)[:8]} from {where}; declare e.g. "
            "input_shape=[1, 28, 28] or [30]"
        )
    return shape


def _shape_from_metadata(text: str) -> tuple[int, ...]:
    value = _json(text, "input_shape")
    if not isinstance(value, list) or not all(type(d) is int for d in value):
        raise ModelLoadError(
            f"expected input_shape metadata as a JSON list of 1 to 3 integers, got {text[:60]!r}; "
            "declare e.g. input_shape=[1, 28, 28] or [30]"
        )
    return _check_shape(tuple(value), "the 'input_shape' metadata")


def _names_from_metadata(text: str) -> tuple[str, ...]:
    value = _json(text, "class_names")
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_CLASSES
        or not all(isinstance(n, str | int) and not isinstance(n, bool) for n in value)
    ):
        raise ModelLoadError(
            f"expected class_names metadata as a JSON list of 1 to {MAX_CLASSES} strings, got {text[:60]!r}; "
            'declare e.g. class_names=["cat", "dog"]'
        )
    names = tuple(str(n) for n in value)
    if len(set(names)) != len(names):
        raise ModelLoadError(f"expected distinct class names, got duplicates in {text[:60]!r}")
    return names


def _range_from_metadata(text: str) -> tuple[float, ...]:
    value = _json(text, "pixel_range")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ModelLoadError(
            f"expected pixel_range metadata as a JSON list [low, high] of finite numbers, got {text[:60]!r}; "
            "declare e.g. pixel_range=[0.0, 1.0]"
        )
    return tuple(float(v) for v in value)
