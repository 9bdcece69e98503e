"""Every tensor a model file can hold data in, and the size check on each (before any allocation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError
from edgeguard.model.external import Reference, external_reference
from edgeguard.model.limits import elements, itemsize

__all__ = ["iter_tensors", "check_tensors"]


def iter_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto that can hold data: initializers, sparse initializers (values and
    indices), Constant/attribute tensors and sparse tensors, in the main graph, every
    subgraph, every model-local function and the training graphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for training in model.training_info:
        for name in ("initialization", "algorithm"):
            if training.HasField(name):
                yield from _graph_tensors(getattr(training, name))


def _graph_tensors(graph: Any, depth: int = 0) -> Iterator[Any]:
    if depth > 64:
        raise ModelLoadError("expected subgraphs nested at most 64 deep, got deeper; the file is malformed")
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, depth)


def _node_tensors(node: Any, depth: int = 0) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g, depth + 1)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph, depth + 1)


def check_tensors(tensors: list[Any], max_tensor_bytes: int, max_total_bytes: int) -> list[Reference]:
    references: list[Reference] = []
    total = 0
    for tensor in tensors:
        what = f"tensor {tensor.name!r}"
        count = elements(tensor.dims, what)
        size = itemsize(tensor.data_type)
        declared = count * size if size else (count + 1) // 2 if size == 0 else 0
        if declared > max_tensor_bytes:
            raise ModelTooLargeError(
                f"expected tensors of at most {max_tensor_bytes} bytes, got {declared} bytes declared for {what} "
                f"(dims {list(tensor.dims)}); raise max_tensor_bytes only if the model is legitimately that large"
            )
        total += declared
        if total > max_total_bytes:
            error = ModelTooLargeError(
                f"expected at most {max_total_bytes} bytes of stored tensors, got more than {total}; "
                "raise max_total_bytes only if the model is legitimately that large"
            )
            error.total = True  # the sum, not one tensor (the vet names it initializers-too-large)
            raise error
        external = tensor.data_location == 1 or len(tensor.external_data) > 0
        if external:
            references.append(external_reference(tensor, declared if size is not None else None))
        elif size and tensor.HasField("raw_data") and len(tensor.raw_data) != declared:
            raise ModelLoadError(
                f"expected {declared} bytes of raw data for {what} (dims {list(tensor.dims)}), got "
                f"{len(tensor.raw_data)}; the file is truncated or corrupt"
            )
    return references
