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

Noise comes from :meth:`GraphBuilder.noise`, in one of three modes (the emitters are
the same for all):

- ``"input"`` (SafeModel): each random stage gets an extra graph input holding its
  scaled noise, which Python draws exactly as the numpy filter would;
- ``"uniform"`` (guarded files): the graph takes ONE extra input,
  :data:`UNIFORM_INPUT`, float64 (batch, M) of independent U(0, 1) values that the app
  draws from its platform's CSPRNG at every run; every random stage reads its own
  columns and transforms them (Box-Muller for Gaussian noise, the inverse CDF for
  Laplace noise, a linear map for the input dither);
- ``"graph"``: ``RandomNormalLike`` / ``RandomUniformLike`` without a seed. NOT used for
  files: onnxruntime seeds these from one process-wide clock value, so every new session
  in a process repeats the same noise, and its generator (``std::default_random_engine``)
  has a 31-bit state. Kept for the test that documents this.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import FilterError
from edgeguard.filters.base import OutputFilter, secure_rng

__all__ = [
    "GraphBuilder",
    "NotFusible",
    "NoiseInput",
    "onnx_emitter",
    "emitter_for",
    "emit_stage",
    "ONNX_EMITTERS",
    "UNIFORM_INPUT",
    "NOISE_MODES",
    "uniform_noise",
]

#: Smallest uniform draw used by the samplers (keeps log finite).
_TINY = 1e-300
#: The name of the one U(0, 1) noise input of a graph built with ``noise="uniform"``.
UNIFORM_INPUT = "edgeguard_uniform"
NOISE_MODES = ("input", "uniform", "graph")

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
    """The emitter of ``stage``'s exact class; NotFusible when it has none (the built-in emitters are
    registered when ``edgeguard.filters`` is imported, which importing this module does first)."""
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
    if kind == "uniform":  # the input dither: U(-scale, scale), float32
        return rng.uniform(-scale, scale, size).astype(np.float32)
    return rng.laplace(0.0, scale, size)


@dataclass(frozen=True)
class NoiseInput:
    """An extra graph input that carries one random stage's scaled noise, shape (N, K)."""

    name: str
    kind: str  # "normal" (float32 N(0, scale^2)) | "laplace" (float64 Laplace(0, scale)) | "uniform" (dither)
    # | "u01" (a guarded file's U(0, 1) input, drawn by uniform_noise)
    scale: float
    num_classes: int  # values per row
    shape: tuple[int, ...] = ()  # the per-row shape when it is not (num_classes,) (the dither: (C, H, W))

    def draw(self, rng: np.random.Generator | None, rows: int) -> np.ndarray:
        """Noise for ``rows`` rows: from ``rng`` (a seed was given) or this thread's secure buffer.

        With a generator the draws are exactly those the numpy filter makes. Without one
        they are sliced from blocks drawn 256 values per fresh OS seed (the rule of
        :func:`edgeguard.filters.secure_rng`); every value is used once.
        """
        if self.kind == "u01":  # a guarded file's edgeguard_uniform input: always the OS CSPRNG (no seed)
            return uniform_noise(rows, self.num_classes)
        shape = (rows, *(self.shape or (self.num_classes,)))
        if rng is not None:
            return _draw(self.kind, self.scale, rng, rows * self.num_classes).reshape(shape)
        pid = os.getpid()
        if getattr(_BUFFERS, "pid", None) != pid:  # a forked child never hands out its parent's buffered noise
            _BUFFERS.by_key, _BUFFERS.pid = {}, pid
        buffers = _BUFFERS.by_key
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
        return block[used : used + rows].reshape(shape)


class GraphBuilder:
    """Collects new nodes, initializers and inputs for ``graph`` under unique ``prefix``-ed names."""

    def __init__(self, graph: Any, opset: int, *, prefix: str, noise: str = "input", uniform_offset: int = 0) -> None:
        from onnx import TensorProto, helper, numpy_helper

        if noise not in NOISE_MODES:
            raise FilterError(f"expected noise in {NOISE_MODES}, got {noise!r}")
        #: columns of UNIFORM_INPUT used so far (noise="uniform")
        self.uniform_offset = uniform_offset
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

    def uniform(self, count: int, shape: tuple[int, ...], *, floor: bool = True) -> str:
        """The next ``count`` columns of :data:`UNIFORM_INPUT` (float64 U(0, 1)), reshaped to (N, *shape).

        ``floor``: raised to a tiny positive value first, for a stage that takes its log (an app's 0.0
        cannot make it infinite); stages that stay finite at 0 skip that node.
        """
        start = self.uniform_offset
        self.uniform_offset += count
        columns = self.op(
            "Slice",
            UNIFORM_INPUT,
            self.const([start], np.int64),
            self.const([start + count], np.int64),
            self.const([1], np.int64),
        )
        if tuple(shape) != (count,):
            columns = self.op("Reshape", columns, self.const([0, *shape], np.int64))
        return self.op("Max", columns, self.f64(_TINY)) if floor else columns

    def noise(self, kind: str, scale: float, num_classes: int, like: str) -> str:
        """Noise shaped like ``like`` (N, K): float32 N(0, scale^2) ("normal") or float64 Laplace(0, scale).

        See the module docstring for the three modes.
        """
        if self.noise_mode == "input":
            name = self.name(f"noise_{kind}")
            elem = self.TensorProto.FLOAT if kind == "normal" else self.TensorProto.DOUBLE
            self.inputs.append(self.helper.make_tensor_value_info(name, elem, ["batch", num_classes]))
            self.noise_inputs.append(NoiseInput(name, kind, scale, num_classes))
            return name
        if self.noise_mode == "graph":
            if kind == "normal":
                return self.op("RandomNormalLike", like, dtype=self.TensorProto.FLOAT, mean=0.0, scale=float(scale))
            u = self.op("RandomUniformLike", like, dtype=self.TensorProto.DOUBLE, low=0.0, high=1.0)
            return self._laplace(u, scale)
        if kind == "normal":  # Box-Muller in float64: scale sqrt(-2 log u1) cos(2 pi u2) = sqrt(-2 scale^2 log u1) ...
            u1 = self.uniform(num_classes, (num_classes,))
            u2 = self.uniform(num_classes, (num_classes,), floor=False)  # cos is finite at 0
            radius = self.op("Sqrt", self.op("Mul", self.f64(-2.0 * float(scale) ** 2), self.op("Log", u1)))
            z = self.op("Mul", radius, self.op("Cos", self.op("Mul", self.f64(2.0 * np.pi), u2)))
            return self.op("Cast", z, to=self.TensorProto.FLOAT)  # (the scale folded in: one rounding, in float64)
        # the inverse CDF floors its own log argument, so u needs no floor
        return self._laplace(self.uniform(num_classes, (num_classes,), floor=False), scale)

    def _laplace(self, u: str, scale: float) -> str:
        """Laplace(0, b) from U(0, 1) by the inverse CDF in float64: v = u - 1/2, -b sign(v) log(1 - 2|v|)."""
        v = self.op("Sub", u, self.f64(0.5))
        tail = self.op(
            "Max", self.op("Sub", self.f64(1.0), self.op("Mul", self.f64(2.0), self.op("Abs", v))), self.f64(_TINY)
        )
        return self.op("Mul", self.op("Mul", self.f64(-float(scale)), self.op("Sign", v)), self.op("Log", tail))

    def uniform_input(self) -> Any:
        """The value info of :data:`UNIFORM_INPUT` for the columns used (None when none were)."""
        if self.uniform_offset == 0:
            return None
        return self.helper.make_tensor_value_info(
            UNIFORM_INPUT, self.TensorProto.DOUBLE, ["batch", self.uniform_offset]
        )


_UNIFORM_BLOCK = 8192  # values per os.urandom call behind uniform_noise (64 KiB); larger requests draw directly
_UNIFORMS = threading.local()


def _uniforms_from(raw: bytes) -> np.ndarray:
    bits = np.frombuffer(raw, dtype=np.uint64) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * 2.0**-53


def uniform_noise(rows: int, per_row: int) -> np.ndarray:
    """float64 (rows, per_row) U(0, 1) values from the OS CSPRNG: what an app feeds :data:`UNIFORM_INPUT`.

    Each value is (k + 0.5) / 2^53 for 53 random bits k (never 0 or 1); the JavaScript
    helper in ``clients/js`` computes the same from ``crypto.getRandomValues``. Small
    requests are served from a per-thread, per-process block of 8192 values drawn by one
    ``os.urandom`` call (a system call per run cost more than the guarded graph's nodes):
    every value is handed out once, a forked child never reuses its parent's block, and a
    returned array is never written to again.
    """
    import os

    count = rows * per_row
    if count > _UNIFORM_BLOCK // 2:
        return _uniforms_from(os.urandom(8 * count)).reshape(rows, per_row)
    pid = os.getpid()
    block, used, owner = getattr(_UNIFORMS, "state", (None, 0, None))
    if block is None or owner != pid or used + count > len(block):
        block, used = _uniforms_from(os.urandom(8 * _UNIFORM_BLOCK)), 0
    _UNIFORMS.state = (block, used + count, pid)
    return block[used : used + count].reshape(rows, per_row)
