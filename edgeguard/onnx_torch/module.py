"""A small, strict, differentiable ONNX-to-torch interpreter.

``to_torch(model)`` turns an ONNX classifier into an :class:`OnnxModule` (a
``torch.nn.Module``) that runs the graph node by node with torch operations, so
gradients flow through it and its weights can be fine-tuned.

Scope
    * Default-domain ONNX (``''`` / ``'ai.onnx'``) at opset 13 to 21, the operators in
      :data:`SUPPORTED_OPS` (CNN / ResNet / MLP classifiers as exported by both
      ``torch.onnx.export`` exporters), with 1 to 3 spatial dims for Conv and pools.
    * No control flow, no subgraphs, no local functions, no custom domains, no
      sparse tensors; tensor element types: float16/32/64, int8/16/32/64, uint8, bool.

Guarantees
    * Strict: the whole graph is checked by :func:`to_torch`, before any forward. The
      first unsupported operator, domain, opset or attribute value raises
      :class:`~edgeguard.errors.UnsupportedOpError` ("expected X, got Y" and what to do);
      an unreadable or invalid model raises :class:`~edgeguard.errors.ModelLoadError`.
      External data must lie inside the model's folder
      (:class:`~edgeguard.errors.UnsafeModelError` otherwise).
    * Every floating-point initializer is a trainable ``nn.Parameter``, unless it is only
      consumed as a non-differentiable input (shapes, axes, pads, starts, Clip bounds,
      Pow exponents, BatchNormalization running mean/var...), in which case it is a
      buffer, like integer initializers and the values of Constant nodes (computed once).
      ``module.parameter_onnx_names`` / ``module.buffer_onnx_names`` map the registered
      (sanitised) names back to the ONNX names.
    * BatchNormalization always uses its running statistics (inference mode), even under
      ``module.train()``; its scale and bias are trainable, its statistics never get
      gradients. Dropout is the identity.
    * Shape arithmetic (Shape, Gather, Concat... on int64) runs on torch tensors and
      reads values back with ``.tolist()``: fine in eager mode, not meant for tracing.
"""

from __future__ import annotations

import os
import re

import onnx
import onnx.external_data_helper
import onnx.numpy_helper
import torch

from edgeguard.errors import EdgeguardError, InvalidInputError, ModelLoadError, UnsupportedOpError
from edgeguard.model import load_proto
from edgeguard.onnx_torch import ops_conv, ops_math, ops_shape  # noqa: F401  (each registers its ops)
from edgeguard.onnx_torch.ops_shape import constant_value
from edgeguard.onnx_torch.registry import (
    DEFAULT_DOMAINS,
    HINT,
    MAX_OPSET,
    MIN_OPSET,
    OPS,
    Node,
    to_tensor,
)

__all__ = ["SUPPORTED_OPS", "OnnxModule", "to_torch"]

#: Operator types of the default ONNX domain that :func:`to_torch` supports.
SUPPORTED_OPS: frozenset[str] = frozenset(OPS)


# ----------------------------------------------------------------------- module


def _sanitise(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "_"
    base = "_" + base if base[0].isdigit() else base
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    return out


class OnnxModule(torch.nn.Module):
    """An ONNX graph run with torch operations; build it with :func:`to_torch`.

    ``forward(*inputs)`` takes one tensor per entry of ``input_names`` and returns a
    tensor (one graph output) or a tuple in the order of ``output_names``.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        opset = _default_opset(model)
        if graph.sparse_initializer:
            raise UnsupportedOpError(f"expected dense initializers, got sparse ones; {HINT}")
        inits = {t.name: t for t in graph.initializer}
        dims = {name: list(t.dims) for name, t in inits.items()}
        self._nodes = [_parse_node(p, i, opset, dims) for i, p in enumerate(graph.node)]
        self.input_names = [i.name for i in graph.input if i.name not in inits]
        self.output_names = [o.name for o in graph.output]
        self.parameter_onnx_names: dict[str, str] = {}
        self.buffer_onnx_names: dict[str, str] = {}
        self._slots: dict[str, str] = {}  # onnx name -> registered attribute name
        taken = set(dir(self))
        diff = _differentiable_values(self._nodes, self.output_names)
        for name, proto in inits.items():
            tensor = to_tensor(proto, f"initializer '{name}'")
            slot = _sanitise(name, taken)
            taken.add(slot)
            self._slots[name] = slot
            if tensor.is_floating_point() and name in diff:
                self.register_parameter(slot, torch.nn.Parameter(tensor))
                self.parameter_onnx_names[slot] = name
            else:
                self.register_buffer(slot, tensor)
                self.buffer_onnx_names[slot] = name
        for node in self._nodes:  # Constant nodes: evaluated once, kept as buffers
            if node.op == "Constant":
                slot = _sanitise(node.outputs[0], taken)
                taken.add(slot)
                self._slots[node.outputs[0]] = slot
                self.register_buffer(slot, constant_value(node), persistent=False)
        self._nodes = [node for node in self._nodes if node.op != "Constant"]

    def forward(self, *inputs: torch.Tensor):
        env = self._evaluate(inputs)
        results = tuple(env[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def values(self, *inputs: torch.Tensor, names: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The graph's intermediate values ``names`` (those it computes) for ``inputs``: a name -> tensor dict."""
        env = self._evaluate(inputs)
        return {name: env[name] for name in names if name in env}

    def _evaluate(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise InvalidInputError(
                f"expected {len(self.input_names)} input tensor(s) {self.input_names}, got {len(inputs)}; "
                "call the module with one tensor per graph input"
            )
        env: dict[str, torch.Tensor] = {k: getattr(self, v) for k, v in self._slots.items()}
        env.update(zip(self.input_names, inputs))
        for node in self._nodes:
            args = [env[name] if name else None for name in node.inputs]
            while args and args[-1] is None:
                args.pop()
            try:
                out = OPS[node.op].fn(node, *args)
            except Exception as exc:
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"while running ONNX {node.op} node '{node.name}'")
                raise
            outs = out if isinstance(out, tuple) else (out,)
            env.update((name, t) for name, t in zip(node.outputs, outs) if name)
        return env

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._nodes)}"


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions or not MIN_OPSET <= versions[0] <= MAX_OPSET:
        got = versions[0] if versions else "none"
        raise UnsupportedOpError(
            f"expected a default-domain opset between {MIN_OPSET} and {MAX_OPSET}, got "
            f"{got}; re-export the model (e.g. torch.onnx.export(..., opset_version=17)) "
            "or convert it with onnx.version_converter.convert_version"
        )
    return versions[0]


def _parse_node(proto: onnx.NodeProto, index: int, opset: int, dims: dict[str, list[int]]) -> Node:
    """Validate one node (domain, op, attributes) and parse its attributes.

    ``dims`` holds the initializer shapes, to read a Conv kernel's rank from its weight.
    """
    node = Node(proto, index, opset)
    if proto.domain not in DEFAULT_DOMAINS:
        raise UnsupportedOpError(
            f"expected ops of the default ONNX domain 'ai.onnx', got '{node.op}' from "
            f"domain '{proto.domain}' (node '{node.name}'); custom ops, ONNX-ML ops and "
            f"model-local functions are not supported; {HINT}"
        )
    spec = OPS.get(node.op)
    if spec is None:
        raise UnsupportedOpError(
            f"expected one of the supported ops ({', '.join(sorted(OPS))}), got "
            f"'{node.op}' (domain 'ai.onnx', node '{node.name}'); {HINT}"
        )
    node.attrs = dict(spec.attrs)
    for attr in proto.attribute:
        if attr.name not in spec.attrs:
            raise node.fail(f"{node.op} attributes among {sorted(spec.attrs)}", f"'{attr.name}'")
        if attr.type in (
            onnx.AttributeProto.GRAPH,
            onnx.AttributeProto.GRAPHS,
            onnx.AttributeProto.SPARSE_TENSOR,
            onnx.AttributeProto.STRINGS,
        ):
            kind = onnx.AttributeProto.AttributeType.Name(attr.type)
            raise node.fail(f"a plain attribute for '{attr.name}'", kind)
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, onnx.TensorProto):
            value = to_tensor(value, f"attribute '{attr.name}' of node '{node.name}'")
        elif isinstance(value, list):
            value = [int(v) if isinstance(v, int) else v for v in value]
        node.attrs[attr.name] = value
    if node.op in ("Conv", "ConvTranspose") and node.attrs["kernel_shape"] is None and node.inputs[1] in dims:
        node.attrs["kernel_shape"] = dims[node.inputs[1]][2:]
    if spec.check is not None:
        spec.check(node)
    return node


def _differentiable_values(nodes: list[Node], outputs: list[str]) -> set[str]:
    """Names consumed in at least one differentiable input slot (Identity passes through)."""
    diff = set(outputs)
    for node in reversed(nodes):
        if node.op == "Identity" and node.outputs[0] not in diff:
            continue
        nondiff = OPS[node.op].nondiff
        diff.update(name for i, name in enumerate(node.inputs) if name and i not in nondiff)
    return diff


# ----------------------------------------------------------------------- loading


def _load(model: onnx.ModelProto | str | os.PathLike | bytes) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        try:
            return onnx.load_from_string(model)
        except Exception as exc:
            raise ModelLoadError(f"expected serialized ONNX bytes, got bytes that fail to parse: {exc}") from exc
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"expected an onnx.ModelProto, a path or bytes, got {type(model).__name__}")
    try:  # the project's loader: refuses external data outside the model's folder
        return load_proto(model)
    except EdgeguardError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"expected a readable ONNX model at {os.fspath(model)!r}: {exc}") from exc


def to_torch(model: onnx.ModelProto | str | os.PathLike | bytes) -> OnnxModule:
    """Build an :class:`OnnxModule` from a ModelProto, a file path or serialized bytes.

    Raises ModelLoadError (unreadable / invalid model), UnsupportedOpError (opset, op,
    domain or attribute outside the supported scope) or UnsafeModelError (external data
    outside the model folder), all before any forward pass.
    """
    proto = _load(model)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"expected a valid ONNX model, got one that fails onnx.checker: {exc}") from exc
    return OnnxModule(proto)
