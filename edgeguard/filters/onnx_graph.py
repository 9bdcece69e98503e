"""The ONNX side of every filter: a graph builder and the registry of per-filter emitters.

Each filter class owns one *emitter*, registered with :func:`onnx_emitter`::

    @onnx_emitter(Softmax)
    def _softmax(stage, b, x, num_classes):
        return b.op("Softmax", x, axis=1)

An emitter appends the nodes computing ``stage`` on the tensor ``x`` (float32 (N, K))
to the :class:`GraphBuilder` ``b`` and returns the name of the result (float32 (N, K),
or int64 (N,) for a label index). A stage it cannot express raises :class:`NotFusible`
with the reason. Stages are looked up by their *exact* class: a subclass or an
unregistered filter is not fusible (its ``apply`` may do anything).

Noise comes from :meth:`GraphBuilder.noise`: with ``noise="input"`` (SafeModel) each
random stage gets an extra graph input that Python fills; with ``noise="graph"``
(guarded files) the graph draws it itself (``RandomNormalLike`` / ``RandomUniformLike``
without a seed). The emitters are the same for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import FilterError
from edgeguard.filters.base import OutputFilter, secure_rng

__all__ = ["GraphBuilder", "NotFusible", "NoiseInput", "onnx_emitter", "emitter_for", "emit_stage", "ONNX_EMITTERS"]

#: Smallest uniform draw used by the inverse-CDF Laplace sampler (keeps log finite).
_TINY = 1e-300

Emitter = Callable[[Any, "GraphBuilder", str, int], str]

#: Filter class -> its emitter (exact classes; see :func:`onnx_emitter`).
ONNX_EMITTERS: dict[type, Emitter] = {}


class NotFusible(FilterError):
    """A stage (or one configuration of it) has no ONNX form; the message says why."""


def onnx_emitter(*classes: type) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the ONNX emitter of ``classes`` (exact types)."""

    def register(function: Emitter) -> Emitter:
        for cls in classes:
            ONNX_EMITTERS[cls] = function
        return function

    return register


def emitter_for(stage: OutputFilter) -> Emitter:
    """The emitter of ``stage``'s exact class; NotFusible when it has none."""
    import edgeguard.filters.emitters  # noqa: F401  (registers the built-in emitters)

    emitter = ONNX_EMITTERS.get(type(stage))
    if emitter is None:
        raise NotFusible(
            f"filter {type(stage).__name__} has no ONNX emitter (subclasses and user filters run in Python only)"
        )
    return emitter


def emit_stage(stage: OutputFilter, b: "GraphBuilder", x: str, num_classes: int) -> str:
    """The tensor after ``stage``; NotFusible with the reason when it cannot be expressed."""
    return emitter_for(stage)(stage, b, x, num_classes)


# --- noise inputs (noise="input") ---------------------------------------------------------------
_NOISE_BLOCK = 4096  # values drawn per refill of a thread's noise buffer
_SEED_DRAWS = 256  # values per fresh OS seed (edgeguard.filters.base.RESEED_AFTER_DRAWS)
_BUFFERS = threading.local()
_EMPTY = (np.empty((0, 1), np.float32), 0)


def _draw(kind: str, scale: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """Noise exactly as the numpy filters draw and scale it (GaussianNoise: float32, LaplaceNoise: float64)."""
    if kind == "normal":
        noise = rng.standard_normal(size, dtype=np.float32)
        noise *= scale  # float32 times the weak Python float, as GaussianNoise does
        return noise
    return rng.laplace(0.0, scale, size)


@dataclass(frozen=True)
class NoiseInput:
    """An extra graph input that carries one random stage's scaled noise, shape (N, K)."""

    name: str
    kind: str  # "normal" (float32 N(0, scale^2)) | "laplace" (float64 Laplace(0, scale))
    scale: float
    num_classes: int

    def draw(self, rng: np.random.Generator | None, rows: int) -> np.ndarray:
        """Noise for ``rows`` rows: from ``rng`` (a seed was given) or this thread's secure buffer.

        With a generator the draws are exactly those the numpy filter makes. Without one
        they are sliced from blocks drawn 256 values per fresh OS seed (the rule of
        :func:`edgeguard.filters.secure_rng`); every value is used once.
        """
        if rng is not None:
            return _draw(self.kind, self.scale, rng, rows * self.num_classes).reshape(rows, self.num_classes)
        try:
            buffers = _BUFFERS.by_key
        except AttributeError:
            buffers = _BUFFERS.by_key = {}
        key = (self.kind, self.scale, self.num_classes)
        block, used = buffers.get(key, _EMPTY)
        if used + rows > len(block):
            need = rows * self.num_classes
            size = max(_NOISE_BLOCK, need) + _SEED_DRAWS  # whole rows, whole 256-value seeds
            size -= size % _SEED_DRAWS
            chunks = [
                _draw(self.kind, self.scale, secure_rng(_SEED_DRAWS), _SEED_DRAWS) for _ in range(size // _SEED_DRAWS)
            ]
            flat = np.concatenate(chunks)
            block, used = flat[: len(flat) - len(flat) % self.num_classes].reshape(-1, self.num_classes), 0
        buffers[key] = (block, used + rows)  # every value is used once
        return block[used : used + rows]


class GraphBuilder:
    """Collects new nodes, initializers and inputs for ``graph`` under unique ``prefix``-ed names."""

    def __init__(self, graph: Any, opset: int, *, prefix: str, noise: str = "input") -> None:
        from onnx import TensorProto, helper, numpy_helper

        if noise not in ("input", "graph"):
            raise FilterError(f"expected noise 'input' or 'graph', got {noise!r}")
        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self.noise_mode = noise
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.noise_inputs: list[NoiseInput] = []
        self.taken = {v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
        for node in graph.node:
            self.taken.update(node.output)
            self.taken.update(node.input)
            self.taken.add(node.name)
        self.counter = 0

    def name(self, hint: str) -> str:
        while True:
            self.counter += 1
            candidate = f"{self.prefix}{hint}_{self.counter}"
            if candidate not in self.taken:
                self.taken.add(candidate)
                return candidate

    def const(self, value: Any, dtype: Any) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.name("c")
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def f32(self, value: float) -> str:
        return self.const(value, np.float32)

    def f64(self, value: float) -> str:
        return self.const(value, np.float64)

    def axes1(self) -> str:
        return self.const([1], np.int64)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: Any) -> Any:
        out = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), out, name=name or self.name(f"node_{op_type}"), **attrs)
        )
        return out[0] if outputs == 1 else out

    def reduce(self, op_type: str, x: str, *, axis: int | None, keepdims: int = 1) -> str:
        """ReduceSum/Max/Min over axis 1 (or all axes) for the model's opset."""
        if axis is None:
            return self.op(op_type, x, keepdims=0)
        if op_type == "ReduceSum" or self.opset >= 18:  # (only ReduceSum takes axes as an input at opset 13-17)
            return self.op(op_type, x, self.axes1(), keepdims=keepdims)
        return self.op(op_type, x, axes=[axis], keepdims=keepdims)

    def noise(self, kind: str, scale: float, num_classes: int, like: str) -> str:
        """Noise shaped like ``like`` (N, K): float32 N(0, scale^2) ("normal") or float64 Laplace(0, scale).

        ``noise="input"``: an extra graph input (recorded in :attr:`noise_inputs`) that the
        caller fills; ``noise="graph"``: drawn in the graph, without a seed (fresh at every run).
        """
        if self.noise_mode == "input":
            name = self.name(f"noise_{kind}")
            elem = self.TensorProto.FLOAT if kind == "normal" else self.TensorProto.DOUBLE
            self.inputs.append(self.helper.make_tensor_value_info(name, elem, ["batch", num_classes]))
            self.noise_inputs.append(NoiseInput(name, kind, scale, num_classes))
            return name
        if kind == "normal":
            return self.op("RandomNormalLike", like, dtype=self.TensorProto.FLOAT, mean=0.0, scale=float(scale))
        # Laplace(0, b) by the inverse CDF in float64: u ~ U(-1/2, 1/2), -b sign(u) log(1 - 2|u|)
        u = self.op("RandomUniformLike", like, dtype=self.TensorProto.DOUBLE, low=-0.5, high=0.5)
        tail = self.op("Max", self.op("Sub", self.f64(1.0), self.op("Mul", self.f64(2.0), self.op("Abs", u))), self.f64(_TINY))
        return self.op("Mul", self.op("Mul", self.f64(-float(scale)), self.op("Sign", u)), self.op("Log", tail))
