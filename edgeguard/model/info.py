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

__all__ = ["ModelInfo", "static_dims", "METADATA_KEYS", "TASK_TYPES", "OUTPUT_KINDS"]

TASK_TYPES = ("multiclass", "multilabel")
OUTPUT_KINDS = ("logits", "probabilities")
#: metadata_props keys edgeguard reads (all values are strings; lists are JSON).
METADATA_KEYS = ("task_type", "class_names", "input_shape", "pixel_range", "output_kind")


@dataclass(frozen=True)
class ModelInfo:
    """The task a model claims, and its graph's input/output names."""

    input_name: str
    output_name: str
    input_shape: tuple[int, ...]  # (C, H, W), without the batch dimension
    class_names: tuple[str, ...]
    task_type: str = "multiclass"
    pixel_range: tuple[float, float] = (0.0, 1.0)
    output_kind: str = "logits"
    declared: bool = False  # True when the file carried edgeguard's metadata keys

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_metadata_props(self) -> dict[str, str]:
        """The ``metadata_props`` an honest provider attaches to the ONNX file."""
        return {
            "task_type": self.task_type,
            "class_names": json.dumps(list(self.class_names)),
            "input_shape": json.dumps(list(self.input_shape)),
            "pixel_range": json.dumps(list(self.pixel_range)),
            "output_kind": self.output_kind,
        }

    @classmethod
    def from_model(cls, model: Any) -> "ModelInfo":
        """Read the info from an ``onnx.ModelProto`` (graph shapes plus metadata_props)."""
        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        inputs = [value for value in graph.input if value.name not in initializers]
        if len(inputs) != 1 or len(graph.output) < 1:
            raise ModelLoadError(
                f"expected a classifier with one image input and one output, got inputs "
                f"{[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}"
            )
        props = {entry.key: entry.value for entry in model.metadata_props}
        output_names = [v.name for v in graph.output]
        if len(set(output_names)) != len(output_names):
            raise ModelLoadError(f"expected distinct graph output names, got {output_names[:8]}; the file is malformed")
        input_dims = static_dims(inputs[0])
        output_dims = static_dims(graph.output[0])
        declared = all(key in props for key in METADATA_KEYS)
        input_shape = _shape_from_metadata(props["input_shape"]) if "input_shape" in props else None
        class_names = _names_from_metadata(props["class_names"]) if "class_names" in props else None
        pixel_range = _range_from_metadata(props["pixel_range"]) if "pixel_range" in props else (0.0, 1.0)
        if input_shape is None:
            if len(input_dims) != 4 or any(d is None for d in input_dims[1:]):
                raise ModelLoadError(
                    f"expected a fixed (C, H, W) input shape in the graph or the 'input_shape' metadata, "
                    f"got graph input dims {input_dims}; pass the shape explicitly (e.g. --input-shape 1,28,28)"
                )
            input_shape = _check_shape(tuple(int(d) for d in input_dims[1:]), "the graph input")
        if class_names is None:
            if len(output_dims) != 2 or output_dims[1] is None:
                raise ModelLoadError(
                    f"expected an output of shape (N, K) with a fixed K, got {output_dims}; "
                    "add 'class_names' to the model's metadata_props"
                )
            if not 1 <= output_dims[1] <= MAX_CLASSES:
                raise ModelLoadError(
                    f"expected between 1 and {MAX_CLASSES} classes (the output's second dim), got {output_dims[1]}; "
                    "the file's declared output shape is not that of a classifier"
                )
            class_names = tuple(str(i) for i in range(int(output_dims[1])))
        task_type = props.get("task_type", "multiclass")
        output_kind = props.get("output_kind", "logits")
        if task_type not in TASK_TYPES:
            raise ModelLoadError(f"expected task_type in {TASK_TYPES}, got {task_type[:60]!r} in the model's metadata")
        if output_kind not in OUTPUT_KINDS:
            raise ModelLoadError(
                f"expected output_kind in {OUTPUT_KINDS}, got {output_kind[:60]!r} in the model's metadata"
            )
        if len(pixel_range) != 2 or not pixel_range[0] < pixel_range[1]:
            raise ModelLoadError(f"expected pixel_range [low, high] with low < high, got {list(pixel_range)}")
        return cls(
            input_name=inputs[0].name,
            output_name=graph.output[0].name,
            input_shape=input_shape,
            class_names=class_names,
            task_type=task_type,
            pixel_range=(pixel_range[0], pixel_range[1]),
            output_kind=output_kind,
            declared=declared,
        )


def static_dims(value: Any) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


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
    if len(shape) != 3 or not all(1 <= d <= MAX_SIDE for d in shape) or math.prod(shape) > MAX_PIXELS:
        raise ModelLoadError(
            f"expected a (C, H, W) input shape of 3 positive integers (each at most {MAX_SIDE}, at most "
            f"{MAX_PIXELS} values), got {list(shape)[:8]} from {where}; declare e.g. input_shape=[1, 28, 28]"
        )
    return shape


def _shape_from_metadata(text: str) -> tuple[int, ...]:
    value = _json(text, "input_shape")
    if not isinstance(value, list) or not all(type(d) is int for d in value):
        raise ModelLoadError(
            f"expected input_shape metadata as a JSON list of 3 integers, got {text[:60]!r}; "
            "declare e.g. input_shape=[1, 28, 28]"
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
