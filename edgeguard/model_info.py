"""What an ONNX classifier declares about its task, read from the file's ``metadata_props``.

An honest provider publishes the task with the model: class names, input shape, pixel
range, task type and whether the output is logits or probabilities. The converters
write these keys; edgeguard reads them to validate inputs, preprocess probe sets and
pick the claimed loss for vetting. Files without them still work: the shapes come
from the graph and the rest falls back to documented defaults (``declared`` is False).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeguard.errors import ModelLoadError, UnsafeModelError

__all__ = ["ModelInfo", "load_onnx", "METADATA_KEYS", "TASK_TYPES", "OUTPUT_KINDS"]

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
        input_dims = _static_dims(inputs[0])
        output_dims = _static_dims(graph.output[0])
        declared = all(key in props for key in METADATA_KEYS)
        try:
            input_shape = tuple(int(d) for d in json.loads(props["input_shape"])) if "input_shape" in props else None
            class_names = tuple(str(n) for n in json.loads(props["class_names"])) if "class_names" in props else None
            pixel_range = (
                tuple(float(v) for v in json.loads(props["pixel_range"])) if "pixel_range" in props else (0.0, 1.0)
            )
        except (ValueError, TypeError) as error:
            raise ModelLoadError(f"expected JSON values in the model's metadata_props, got an error: {error}") from None
        if input_shape is None:
            if len(input_dims) < 2 or any(d is None for d in input_dims[1:]):
                raise ModelLoadError(
                    f"expected a fixed (C, H, W) input shape in the graph or the 'input_shape' metadata, "
                    f"got graph input dims {input_dims}; pass the shape explicitly (e.g. --input-shape 1,28,28)"
                )
            input_shape = tuple(int(d) for d in input_dims[1:])
        if class_names is None:
            if len(output_dims) != 2 or output_dims[1] is None:
                raise ModelLoadError(
                    f"expected an output of shape (N, K) with a fixed K, got {output_dims}; "
                    "add 'class_names' to the model's metadata_props"
                )
            class_names = tuple(str(i) for i in range(int(output_dims[1])))
        task_type = props.get("task_type", "multiclass")
        output_kind = props.get("output_kind", "logits")
        if task_type not in TASK_TYPES:
            raise ModelLoadError(f"expected task_type in {TASK_TYPES}, got {task_type!r} in the model's metadata")
        if output_kind not in OUTPUT_KINDS:
            raise ModelLoadError(f"expected output_kind in {OUTPUT_KINDS}, got {output_kind!r} in the model's metadata")
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


def _static_dims(value: Any) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = True) -> Any:
    """Load an ONNX file, refusing external-data paths that escape the model's folder.

    Raises :class:`ModelLoadError` for a missing or unreadable file and
    :class:`UnsafeModelError` for a path-traversal attempt (checked before any external
    file is opened).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"expected an ONNX file at {path}, but there is none")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises its own DecodeError family
        raise ModelLoadError(f"expected a valid ONNX protobuf in {path}, got an error: {error}") from None
    folder = path.resolve().parent
    external = [t for t in _all_tensors(model) if uses_external_data(t)]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise UnsafeModelError(
                f"expected external data inside the model's folder {folder}, got location {location!r} "
                f"for tensor {tensor.name!r}; refusing to load a file that reads outside its folder"
            )
        if load_external_data and not target.is_file():
            raise ModelLoadError(
                f"expected external data file {target} for tensor {tensor.name!r}, but there is none; "
                "copy the model's data files next to it"
            )
    if external and load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(folder))
    return model


def _all_tensors(model: Any) -> list[Any]:
    """Every TensorProto in the model: initializers and Constant attributes, subgraphs included."""
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))
