"""Model files: reading, checking and hashing an ONNX classifier, and the task it declares.

- :mod:`~edgeguard.model.loading`: :func:`load_model` (the ONE place a model is read, checked
  and hashed), :func:`model_sha256`, :func:`load_proto`;
- :mod:`~edgeguard.model.files`: opening regular files only, reading, parsing;
- :mod:`~edgeguard.model.external`: external data inside the model's folder;
- :mod:`~edgeguard.model.tensors` / :mod:`~edgeguard.model.shapes`: declared sizes, bounded before allocation;
- :mod:`~edgeguard.model.dynamic`: ops whose run time or output size is not fixed by the file;
- :mod:`~edgeguard.model.limits`: the one limits table and element sizes;
- :mod:`~edgeguard.model.hashing`: the one file-hash helper;
- :mod:`~edgeguard.model.info`: :class:`ModelInfo`, the task a model declares in its metadata.
"""

from edgeguard.model.dynamic import CONTROL_FLOW_OPS, DYNAMIC_SIZE_OPS, unbounded_ops
from edgeguard.model.hashing import file_sha256, tree_sha256
from edgeguard.model.info import METADATA_KEYS, OUTPUT_KINDS, TASK_TYPES, ModelInfo, static_dims
from edgeguard.model.limits import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES
from edgeguard.model.loading import LoadedModel, load_model, load_proto, model_sha256
from edgeguard.model.tensors import iter_tensors

__all__ = [
    "LoadedModel",
    "load_model",
    "load_proto",
    "model_sha256",
    "ModelInfo",
    "static_dims",
    "METADATA_KEYS",
    "TASK_TYPES",
    "OUTPUT_KINDS",
    "iter_tensors",
    "unbounded_ops",
    "CONTROL_FLOW_OPS",
    "DYNAMIC_SIZE_OPS",
    "DEFAULT_MAX_TENSOR_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "file_sha256",
    "tree_sha256",
]
