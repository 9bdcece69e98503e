"""Training-free graph edits: a few ONNX nodes on top of an honest and a vicious model.

The cheapest attacker a provider who has read edgeguard's source can build. Every builder
takes ``onnx.ModelProto`` objects (or paths) and returns a new, checked ``ModelProto`` with
the honest model's input, output name and metadata (the metadata keeps saying what the
honest model said). None of them trains anything. Each keeps the honest model's top-1
label: where they release the vicious outputs, they do so only on rows where both models agree
on the label (a smooth gate, ``sum_k softmax(50 h)_k softmax(50 v)_k``), and the honest outputs
elsewhere. :func:`label_agreement` measures it and :func:`check_label_kept` enforces the
0.5-point accuracy rule.

Classes (``GRAPH_EDITS`` maps each name to its builder and to the vet mechanism meant to
stop it, issue 17):

1. :func:`grid_switch` (input-statistic switch): vicious outputs on inputs on the 8-bit
   pixel grid (decoded images), honest outputs on anything else. Two grid detectors:
   ``detector="sin"`` (``mean sin^2(pi * 255 x) < tau``) and ``detector="magic"``
   (float32 magic-number rounding ``(255 x + 1.5 * 2^23) - 1.5 * 2^23``). Stopped by the
   clean (un-augmented) probe audit, the continuity test (x vs dithered / re-quantised x),
   SafeModel's run-time dither (the switch never fires in deployment), the float64
   re-evaluation (magic) and default-deny on the output path (Sin, Where, Less).
2. :func:`kind_confusion` (output-kind lie): ``Softmax`` appended while the metadata still
   says logits. Stopped by deciding probabilities versus logits from the values.
3. :func:`scale_inflation`: ``v + 40 * softmax(50 v)``; the spike on the top class blows up
   one global feature scale. Stopped by per-class standardisation and features with the
   top class removed.
4. :func:`lattice_code` (lattice steganography): the honest logits snapped to a lattice of
   step ``step`` and a code (the payload model's outputs, quantised to ``levels`` levels)
   placed below the step. Snapping variants: ``"magic"`` (Add/Sub of 1.5 * 2^23, no
   rounding op), ``"smooth"`` (iterating ``u - sin(2 pi u) / (2 pi)``), ``"function"``
   (``Round`` and ``Cast`` inside a model-local function), ``"float16"`` (a ``Cast`` to
   float16 and back, on the grid where float16 holds integers), and ``"round"`` (an
   explicit ``Round``: the control the old vet already caught), and, invented against the v3
   vet, ``"relu"`` (a staircase of steep ``Clip`` ramps summed by ``ReduceSum``: only ops every
   classifier uses, no rounding, float32 and float64 agree). :class:`LatticeCode`
   decodes the payload exactly (server side). Stopped by the float64 re-evaluation
   (magic, float16), the static scan of function bodies (function), the 16-bit-cast flag
   (float16), default-deny on the output path (smooth: Sin) and the steganalysis features.
5. Classes invented against the v3 vet:

   - :func:`noise_gate` (input noise-level gate): vicious outputs whenever the image's
     border strips are clean (an image as decoded, or as SafeModel dithers it: half a
     grey level moves no strip), honest outputs as soon as the vet's augmentation noise
     lights the border up. Only Conv / Exp / Log / ReduceSum / Sigmoid / Mul / Add (ops
     every exported classifier uses); continuous (no jump under dither, re-quantisation or
     a 1% brightness change); survives the run-time dither. Meant to be stopped by
     scoring clean probe images (and the clean-vs-augmented gap).
   - :func:`probe_balance_switch` (batch-statistics switch): honest whenever the batch
     looks like a labelled probe (predicted classes spread over many classes), vicious on
     small or one-class batches (an app's one image at a time). Smooth, no Shape op.
     Meant to be stopped by the consistency test (batch 1 vs batched) and SafeModel's
     batch limit.
   - :func:`batch_size_switch` (the older control): ``Where(Equal(Shape(x)[0], 1), v, h)``,
     stopped by the consistency test and the shape-value-flow finding.
6. :func:`blend` (dilution, against any finite-power statistic): ``h + alpha * (v - h)`` on
   label-agreeing rows, ``alpha`` in :data:`BLEND_ALPHAS` (``blend-0.25``, ...). No switch and
   no odd op: only the leakage audit can stop it, and only while its excess over the twin clears
   the margin (it does not at alpha 0.5-0.75 on held-out pairs: benchmarks/results/redteam_blend.md).
   The provider cannot recover ``v``: it fits a fresh post-hoc decoder on the blended outputs.

Server side (what the provider does with the release): :func:`recover_vicious` maps the
edited model's outputs on clean inputs back to the vicious logits the provider's decoder
expects (identity for the switches and the gate, log and re-centring for the kind lie,
spike removal for the inflation, exact decoding for the lattice).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeguard.errors import InvalidInputError

__all__ = [
    "GRAPH_EDITS",
    "GraphEdit",
    "LatticeCode",
    "SNAP_VARIANTS",
    "GRID_DETECTORS",
    "MAGIC",
    "grid_switch",
    "kind_confusion",
    "scale_inflation",
    "lattice_code",
    "noise_gate",
    "probe_balance_switch",
    "batch_size_switch",
    "blend",
    "BLEND_ALPHAS",
    "recover_vicious",
    "run_model",
    "label_agreement",
    "check_label_kept",
    "on_grid",
]

#: float32 magic number: (u + MAGIC) - MAGIC rounds u to the nearest integer for |u| < 2^22.
MAGIC = 1.5 * 2.0**23
SNAP_VARIANTS = ("magic", "smooth", "function", "float16", "relu", "round")
#: Width (in lattice steps) of each ramp of the ``relu`` staircase: wide enough that float32 and
#: float64 agree to ~2e-5 of the output scale, narrow enough that ~0.5% of values sit on a ramp.
RAMP_WIDTH = 0.005
GRID_DETECTORS = ("sin", "magic")
#: The dilutions registered as families ``blend-<alpha>`` (the share of the vicious model's outputs).
BLEND_ALPHAS = (0.25, 0.5, 0.75)
_FLOAT16_OFFSET = 1536.0  # float16 holds exactly the integers of [1024, 2048)
_FUNCTION_DOMAIN = "local.postprocess"


# -- building blocks --------------------------------------------------------------------------------------------


def _load(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    return onnx.load(str(model))


def _opset(model: onnx.ModelProto) -> int:
    return max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [17])


class _Graph:
    """A new graph sharing the base model's input, output name and metadata."""

    def __init__(self, base: onnx.ModelProto) -> None:
        self.base = base
        self.input = base.graph.input[0]
        self.input_name = self.input.name
        self.output_name = base.graph.output[0].name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.functions: list[onnx.FunctionProto] = []
        self.opset = _opset(base)
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"ge_{stem}_{self._count}"

    def add_model(self, model: onnx.ModelProto, prefix: str) -> str:
        """Inline ``model`` (names prefixed) reading the shared input; returns its output's name."""
        if _opset(model) > self.opset:
            self.opset = _opset(model)
        prefixed = onnx.compose.add_prefix(model, prefix)
        graph = prefixed.graph
        self.nodes.append(helper.make_node("Identity", [self.input_name], [graph.input[0].name]))
        self.nodes.extend(graph.node)
        self.inits.extend(graph.initializer)
        self.functions.extend(prefixed.functions)
        return graph.output[0].name

    def const(self, value: Any, dtype: Any = np.float32, stem: str = "c") -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, domain: str = "", **attrs: Any) -> str:
        out = self.fresh(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain, **attrs))
        return out

    def finish(self, result: str, name: str, *, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [result], [self.output_name]))
        classes = _num_classes(self.base)
        output = helper.make_tensor_value_info(self.output_name, TensorProto.FLOAT, ["batch", classes])
        graph = helper.make_graph(self.nodes, name, [self.input], [output], self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        if self.functions:
            opsets.append(helper.make_opsetid(_FUNCTION_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, functions=self.functions)
        model.ir_version = max(8, self.base.ir_version)
        for prop in self.base.metadata_props:
            if metadata is None or prop.key not in metadata:
                model.metadata_props.append(prop)
        for key, value in (metadata or {}).items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        onnx.checker.check_model(model)
        return model

    # small compositions
    def snap(self, u: str, variant: str, span: tuple[int, int] = (-1024, 1024)) -> str:
        """Nearest integer of ``u`` by one of :data:`SNAP_VARIANTS` (``relu``: for u within ``span``)."""
        if variant == "relu":
            # a staircase of steep ramps: lo + sum_k clip((u - k - 1/2) / w + 1/2, 0, 1), Clip/ReduceSum only
            low, high = span
            edges = np.arange(low, high, dtype=np.float32) + 0.5
            t = self.op("Sub", [self.op("Unsqueeze", [u, self.const([-1], np.int64)]), self.const(edges)])
            scaled = self.op("Add", [self.op("Mul", [t, self.const(1.0 / RAMP_WIDTH)]), self.const(0.5)])
            ramps = self.op("Clip", [scaled, self.const(0.0), self.const(1.0)])
            total = self.op("ReduceSum", [ramps, self.const([-1], np.int64)], keepdims=0)
            return self.op("Add", [total, self.const(float(low))])
        if variant == "magic":
            big = self.const(MAGIC, stem="magic")
            return self.op("Sub", [self.op("Add", [u, big]), big])
        if variant == "smooth":
            two_pi = self.const(2.0 * np.pi)
            inv = self.const(1.0 / (2.0 * np.pi))
            for _ in range(20):  # u - sin(2 pi u) / (2 pi): integers are superattracting fixed points
                u = self.op("Sub", [u, self.op("Mul", [self.op("Sin", [self.op("Mul", [u, two_pi])]), inv])])
            return u
        if variant == "function":
            if not any(f.name == "Canon" for f in self.functions):
                self.functions.append(_canon_function(self.opset))
            return self.op("Canon", [u], domain=_FUNCTION_DOMAIN)
        if variant == "float16":
            offset = self.const(_FLOAT16_OFFSET)
            low, high = self.const(-511.0), self.const(511.0)
            shifted = self.op("Add", [self.op("Clip", [u, low, high]), offset])
            half = self.op("Cast", [shifted], to=TensorProto.FLOAT16)
            return self.op("Sub", [self.op("Cast", [half], to=TensorProto.FLOAT), offset])
        if variant == "round":
            return self.op("Round", [u])
        raise InvalidInputError(f"expected a snapping variant in {SNAP_VARIANTS}, got {variant!r}")

    def agreeing(self, h: str, v: str) -> str:
        """``h + a * (v - h)`` with a = sum_k softmax(50 h)_k softmax(50 v)_k: the vicious outputs on rows
        where both models give the same label (a ~ 1), the honest ones elsewhere (a ~ 0), so the edit keeps
        the honest label (smooth, Softmax / Mul / ReduceSum only)."""
        fifty = self.const(50.0)
        ph = self.op("Softmax", [self.op("Mul", [h, fifty])], axis=-1)
        pv = self.op("Softmax", [self.op("Mul", [v, fifty])], axis=-1)
        a = self.reduce_rows("ReduceSum", self.op("Mul", [ph, pv]), [1])
        return self.op("Add", [h, self.op("Mul", [a, self.op("Sub", [v, h])])])

    def pixels01(self, low: float, high: float) -> str:
        """The input mapped to [0, 1] (from the declared pixel range)."""
        x = self.input_name
        if (low, high) == (0.0, 1.0):
            return x
        return self.op("Div", [self.op("Sub", [x, self.const(low)]), self.const(high - low)])

    def reduce_rows(self, op_type: str, x: str, axes: list[int]) -> str:
        """ReduceSum / ReduceMean / ReduceMax over ``axes``, keepdims (axes an input: ReduceSum, or opset >= 18)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const(axes, np.int64)], keepdims=1)
        return self.op(op_type, [x], axes=axes, keepdims=1)


def _canon_function(opset: int) -> onnx.FunctionProto:
    """A model-local function whose body rounds (``Round``, then a ``Cast`` to int32 and back)."""
    nodes = [
        helper.make_node("Round", ["X"], ["r"]),
        helper.make_node("Cast", ["r"], ["i"], to=TensorProto.INT32),
        helper.make_node("Cast", ["i"], ["Y"], to=TensorProto.FLOAT),
    ]
    return helper.make_function(_FUNCTION_DOMAIN, "Canon", ["X"], ["Y"], nodes, [helper.make_opsetid("", opset)])


def _num_classes(model: onnx.ModelProto) -> int | str:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].dim_value:
        return int(dims[1].dim_value)
    return "classes"


def _pixel_range(model: onnx.ModelProto) -> tuple[float, float]:
    import json

    props = {p.key: p.value for p in model.metadata_props}
    if "pixel_range" in props:
        low, high = json.loads(props["pixel_range"])
        return float(low), float(high)
    return 0.0, 1.0


def _input_chw(model: onnx.ModelProto) -> tuple[int, int, int]:
    import json

    props = {p.key: p.value for p in model.metadata_props}
    if "input_shape" in props:
        c, h, w = json.loads(props["input_shape"])
        return int(c), int(h), int(w)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.dim_value for d in dims[1:]):
        raise InvalidInputError("expected an image classifier with a fixed (C, H, W) input, got " + str(dims))
    return tuple(int(d.dim_value) for d in dims[1:])  # type: ignore[return-value]


def _pair(honest: Any, vicious: Any, name: str) -> tuple[_Graph, str, str]:
    honest_model, vicious_model = _load(honest), _load(vicious)
    if _input_chw(honest_model) != _input_chw(vicious_model):
        raise InvalidInputError(
            f"expected the honest and vicious models to share one input shape, got "
            f"{_input_chw(honest_model)} and {_input_chw(vicious_model)}; build the pair from one task"
        )
    graph = _Graph(honest_model)
    h = graph.add_model(honest_model, "h_")
    v = graph.add_model(vicious_model, "v_")
    return graph, h, v


# -- 1. input-statistic switch ----------------------------------------------------------------------------------


def grid_switch(honest: Any, vicious: Any, *, detector: str = "sin", tolerance: float = 1e-4) -> onnx.ModelProto:
    """Vicious outputs on inputs on the 8-bit pixel grid, honest ones elsewhere (``detector``: sin or magic)."""
    graph, h, v = _pair(honest, vicious, "grid_switch")
    low, high = _pixel_range(graph.base)
    z = graph.op("Mul", [graph.pixels01(low, high), graph.const(255.0)])
    if detector == "sin":
        s = graph.op("Sin", [graph.op("Mul", [z, graph.const(np.pi)])])
        off_grid = graph.op("Mul", [s, s])
    elif detector == "magic":
        off_grid = graph.op("Abs", [graph.op("Sub", [z, graph.snap(z, "magic")])])
    else:
        raise InvalidInputError(f"expected a grid detector in {GRID_DETECTORS}, got {detector!r}")
    score = graph.op("Flatten", [graph.reduce_rows("ReduceMean", off_grid, [1, 2, 3])], axis=1)  # (N, 1)
    on = graph.op("Less", [score, graph.const(tolerance)])
    return graph.finish(graph.op("Where", [on, graph.agreeing(h, v), h]), f"grid_switch_{detector}")


# -- 2. output-kind confusion ----------------------------------------------------------------------------------


def kind_confusion(vicious: Any, *, honest: Any = None) -> onnx.ModelProto:
    """``Softmax`` appended to the vicious logits while the metadata still says ``output_kind=logits``.

    With ``honest``, rows where the two labels differ get the honest logits (the label is kept).
    """
    graph, v = _single(vicious, honest)
    return graph.finish(graph.op("Softmax", [v], axis=-1), "kind_confusion", metadata={"output_kind": "logits"})


def _single(vicious: Any, honest: Any) -> tuple[_Graph, str]:
    """A graph on the vicious model, label-gated by the honest one when it is given."""
    if honest is None:
        model = _load(vicious)
        graph = _Graph(model)
        return graph, graph.add_model(model, "v_")
    graph, h, v = _pair(honest, vicious, "single")
    return graph, graph.agreeing(h, v)


# -- 3. scale inflation ----------------------------------------------------------------------------------------


def scale_inflation(
    vicious: Any, *, honest: Any = None, spike: float = 40.0, sharpness: float = 50.0
) -> onnx.ModelProto:
    """``v + spike * softmax(sharpness * v)``: a spike on the top class that dominates a global scale.

    With ``honest``, rows where the two labels differ get the honest logits (the label is kept).
    """
    graph, v = _single(vicious, honest)
    soft = graph.op("Softmax", [graph.op("Mul", [v, graph.const(sharpness)])], axis=-1)
    return graph.finish(graph.op("Add", [v, graph.op("Mul", [soft, graph.const(spike)])]), "scale_inflation")


# -- 4. lattice steganography -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatticeCode:
    """The server's key to a :func:`lattice_code` model: lattice step, code levels and payload range.

    Outputs are ``step * (base + c)`` with ``base`` an integer and ``c = (q + 0.5) / levels - 0.5``
    for the payload level ``q`` in ``0 .. levels - 1``.
    """

    step: float = 1.0 / 32.0
    levels: int = 256
    low: float = -30.0
    high: float = 30.0
    span: float = 24.0  # the relu staircase snaps honest logits minus their row max within [-span, 0]

    def __post_init__(self) -> None:
        if not (self.step > 0 and 2 <= self.levels <= 4096 and self.low < self.high):
            raise InvalidInputError(
                f"expected step > 0, 2 <= levels <= 4096 and low < high, got {self.step}, {self.levels}, "
                f"[{self.low}, {self.high}]"
            )

    def decode_levels(self, outputs: np.ndarray) -> np.ndarray:
        """The payload levels (int64) carried below the lattice."""
        u = np.asarray(outputs, dtype=np.float64) / self.step
        c = u - np.round(u)
        return np.clip(np.round((c + 0.5) * self.levels - 0.5), 0, self.levels - 1).astype(np.int64)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """The payload values (the quantised payload model's outputs)."""
        return self.low + self.decode_levels(outputs) / (self.levels - 1) * (self.high - self.low)

    def quantise(self, payload: np.ndarray) -> np.ndarray:
        """The levels the graph computes for payload values (round half to even, as ``Round``)."""
        t = (np.clip(np.asarray(payload, np.float64), self.low, self.high) - self.low) / (self.high - self.low)
        return np.round(t * (self.levels - 1)).astype(np.int64)

    def lattice(self, outputs: np.ndarray) -> np.ndarray:
        """The honest part: the outputs snapped to the lattice (what the label and the vet mostly see)."""
        return np.round(np.asarray(outputs, np.float64) / self.step) * self.step

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "levels": self.levels, "low": self.low, "high": self.high, "span": self.span}


def lattice_code(
    honest: Any, payload: Any, *, snap: str = "magic", code: LatticeCode | None = None, centre: str = "max"
) -> tuple[onnx.ModelProto, LatticeCode]:
    """The honest logits snapped to ``code.step`` with ``payload``'s outputs, quantised, below the step.

    ``payload`` is another model on the same input (the vicious model: its logits are the
    code); ``snap`` one of :data:`SNAP_VARIANTS`. Returns the model and the decoding key.
    """
    if snap not in SNAP_VARIANTS:
        raise InvalidInputError(f"expected a snapping variant in {SNAP_VARIANTS}, got {snap!r}")
    code = code or LatticeCode()
    graph, h, p = _pair(honest, payload, "lattice")
    t = graph.op("Div", [graph.op("Sub", [p, graph.const(code.low)]), graph.const(code.high - code.low)])
    t = graph.op("Clip", [t, graph.const(0.0), graph.const(1.0)])
    q = graph.snap(graph.op("Mul", [t, graph.const(float(code.levels - 1))]), snap, (0, code.levels - 1))
    c = graph.op(
        "Sub",
        [graph.op("Mul", [graph.op("Add", [q, graph.const(0.5)]), graph.const(1.0 / code.levels)]), graph.const(0.5)],
    )
    limit = int(np.ceil(code.span / code.step))
    window = (-limit, 1)
    if centre == "mean":  # row-mean centring (ReduceMean: an op the twin interpreter can train through)
        h = graph.op("Sub", [h, graph.reduce_rows("ReduceMean", h, [1])])
        h = graph.op("Clip", [h, graph.const(-code.span), graph.const(code.span)])
        window = (-limit, limit + 1)
    elif snap in ("float16", "relu"):  # both snap a bounded range only: release logits minus their row max
        h = graph.op("Sub", [h, graph.reduce_rows("ReduceMax", h, [1])])
        if snap == "relu":  # the staircase covers [-span, 0]: logits further below the top are clipped
            h = graph.op("Clip", [h, graph.const(-code.span), graph.const(0.0)])
    base = graph.snap(graph.op("Div", [h, graph.const(code.step)]), snap, window)
    out = graph.op("Mul", [graph.op("Add", [base, c]), graph.const(code.step)])
    return graph.finish(out, f"lattice_{snap}"), code


# -- 5. invented against the v3 vet -----------------------------------------------------------------------------


def noise_gate(
    honest: Any, vicious: Any, *, threshold: float = 2e-3, sharpness: float = 1e4, border: int = 1
) -> onnx.ModelProto:
    """Vicious while the image border is clean, honest once augmentation noise lights it up.

    ``e`` = a smooth minimum over the four border strips' mean pixel value (one Conv with
    four fixed full-image kernels); gate = sigmoid(sharpness * (threshold - e)); outputs
    ``h + gate * (v - h)``. Clean images have at least one black strip (e <= 0); SafeModel's
    half-grey-level dither keeps e near 5e-4; the vet's Gaussian noise of std s gives
    e ~ 0.4 s, past the threshold from s ~ 0.007.
    """
    graph, h, v = _pair(honest, vicious, "noise_gate")
    low, high = _pixel_range(graph.base)
    channels, height, width = _input_chw(graph.base)
    kernels = np.zeros((4, channels, height, width), np.float32)
    kernels[0, :, :border, :] = 1.0
    kernels[1, :, height - border :, :] = 1.0
    kernels[2, :, :, :border] = 1.0
    kernels[3, :, :, width - border :] = 1.0
    kernels /= kernels.reshape(4, -1).sum(1)[:, None, None, None]
    strips = graph.op("Flatten", [graph.op("Conv", [graph.pixels01(low, high), graph.const(kernels)])], axis=1)
    k = 2000.0  # smooth minimum: -log(sum exp(-k m)) / k
    total = graph.reduce_rows("ReduceSum", graph.op("Exp", [graph.op("Mul", [strips, graph.const(-k)])]), [1])
    e = graph.op("Mul", [graph.op("Log", [total]), graph.const(-1.0 / k)])
    gate = graph.op(
        "Sigmoid", [graph.op("Mul", [graph.op("Sub", [graph.const(threshold), e]), graph.const(sharpness)])]
    )
    v = graph.agreeing(h, v)
    out = graph.op("Add", [h, graph.op("Mul", [gate, graph.op("Sub", [v, h])])])
    return graph.finish(out, "noise_gate")


def probe_balance_switch(
    honest: Any, vicious: Any, *, balanced_share: float = 0.3, sharpness: float = 100.0
) -> onnx.ModelProto:
    """Honest when the batch's predicted classes look like a labelled probe, vicious on small batches.

    share = the largest class share of the batch (a smooth maximum over ``mean_batch
    softmax(50 h)``); gate = sigmoid(sharpness * (share - balanced_share)); outputs
    ``h + gate * (v - h)``. One image at a time: share 1, vicious. A 100-per-class probe
    batch: share 0.1, honest.
    """
    graph, h, v = _pair(honest, vicious, "probe_balance_switch")
    hard = graph.op("Softmax", [graph.op("Mul", [h, graph.const(50.0)])], axis=-1)
    shares = graph.reduce_rows("ReduceMean", hard, [0])  # (1, K)
    k = 60.0  # smooth maximum: log(sum exp(k s)) / k
    top = graph.op(
        "Mul",
        [
            graph.op(
                "Log",
                [graph.reduce_rows("ReduceSum", graph.op("Exp", [graph.op("Mul", [shares, graph.const(k)])]), [1])],
            ),
            graph.const(1.0 / k),
        ],
    )
    gate = graph.op(
        "Sigmoid", [graph.op("Mul", [graph.op("Sub", [top, graph.const(balanced_share)]), graph.const(sharpness)])]
    )
    v = graph.agreeing(h, v)
    out = graph.op("Add", [h, graph.op("Mul", [gate, graph.op("Sub", [v, h])])])
    return graph.finish(out, "probe_balance_switch")


def batch_size_switch(honest: Any, vicious: Any) -> onnx.ModelProto:
    """``Where(Equal(Shape(x)[0], 1), v, h)``: vicious one image at a time (an app), honest in batches (the vet)."""
    graph, h, v = _pair(honest, vicious, "batch_size_switch")
    rows = graph.op("Gather", [graph.op("Shape", [graph.input_name]), graph.const(0, np.int64)], axis=0)
    single = graph.op("Equal", [rows, graph.const(1, np.int64)])
    return graph.finish(graph.op("Where", [single, graph.agreeing(h, v), h]), "batch_size_switch")


def blend(honest: Any, vicious: Any, *, alpha: float = 0.5) -> onnx.ModelProto:
    """``h + alpha * a * (v - h)`` with ``a`` the label-agreement gate: a diluted vicious model (no switch)."""
    if not 0.0 < alpha <= 1.0:
        raise InvalidInputError(f"expected a blend share 0 < alpha <= 1, got {alpha!r}")
    graph, h, v = _pair(honest, vicious, "blend")
    diff = graph.op("Sub", [graph.agreeing(h, v), h])
    return graph.finish(graph.op("Add", [h, graph.op("Mul", [diff, graph.const(alpha)])]), "blend")


# -- the catalogue ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphEdit:
    """One graph-edit class: how to build it from (honest, vicious), and what is meant to stop it."""

    name: str
    build: Callable[..., Any]
    stopped_by: str


def _lattice(snap: str, centre: str = "max") -> Callable[..., Any]:
    def build(honest: Any, vicious: Any, **options: Any) -> tuple[onnx.ModelProto, LatticeCode]:
        return lattice_code(honest, vicious, snap=snap, centre=centre, **options)

    build.__name__ = f"lattice_{snap}"
    return build


GRAPH_EDITS: dict[str, GraphEdit] = {
    "grid-switch-sin": GraphEdit(
        "grid-switch-sin",
        lambda h, v, **o: grid_switch(h, v, detector="sin", **o),
        "clean-probe audit and continuity test (dither, re-quantisation); run-time dither; default-deny (Sin, Where)",
    ),
    "grid-switch-magic": GraphEdit(
        "grid-switch-magic",
        lambda h, v, **o: grid_switch(h, v, detector="magic", **o),
        "clean-probe audit and continuity test; run-time dither; float64 re-evaluation (magic-number rounding)",
    ),
    "kind-confusion": GraphEdit(
        "kind-confusion",
        lambda h, v, **o: kind_confusion(v, honest=h, **o),
        "output kind decided from the values (rows on the simplex), not the metadata",
    ),
    "scale-inflation": GraphEdit(
        "scale-inflation",
        lambda h, v, **o: scale_inflation(v, honest=h, **o),
        "per-class standardisation and features with the top class removed",
    ),
    "lattice-magic": GraphEdit("lattice-magic", _lattice("magic"), "float64 re-evaluation; steganalysis residues"),
    "lattice-smooth": GraphEdit(
        "lattice-smooth", _lattice("smooth"), "default-deny on the output path (Sin); steganalysis residues"
    ),
    "lattice-function": GraphEdit(
        "lattice-function", _lattice("function"), "static scan of model-local function bodies (Round, Cast)"
    ),
    "lattice-float16": GraphEdit("lattice-float16", _lattice("float16"), "16-bit cast flag; float64 re-evaluation"),
    "lattice-relu": GraphEdit(
        "lattice-relu",
        _lattice("relu"),
        "steganalysis residues of the outputs and the leakage audit (only allowed ops, float64-stable, no function)",
    ),
    "lattice-relu-mean": GraphEdit(
        "lattice-relu-mean",
        _lattice("relu", centre="mean"),
        "as lattice-relu, with row-mean centring (ReduceMean) so that the twin interpreter can re-train the graph",
    ),
    "noise-gate": GraphEdit(
        "noise-gate", noise_gate, "leakage audit of clean (un-augmented) probe images; clean-vs-augmented gap"
    ),
    "batch-size-switch": GraphEdit(
        "batch-size-switch", batch_size_switch, "consistency test (batch 1 vs batched); shape-value-flow finding"
    ),
    "probe-balance-switch": GraphEdit(
        "probe-balance-switch", probe_balance_switch, "consistency test (batch 1 vs batched); SafeModel's batch limit"
    ),
    **{
        f"blend-{a:g}": GraphEdit(
            f"blend-{a:g}", lambda h, v, a=a, **o: blend(h, v, alpha=a, **o), "leakage audit (excess over the twin)"
        )
        for a in BLEND_ALPHAS
    },
}


# -- server side and checks ------------------------------------------------------------------------------------


def run_model(model: onnx.ModelProto | str | os.PathLike, images: np.ndarray, *, batch: int | None = 256) -> np.ndarray:
    """The model's outputs on ``images`` (N, C, H, W) by onnxruntime (``batch`` rows at a time; None: one run)."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = np.asarray(images, np.float32)
    if batch is None:
        return np.asarray(session.run(None, {name: images})[0])
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def recover_vicious(
    edit: str,
    outputs: np.ndarray,
    *,
    code: LatticeCode | None = None,
    row_mean: float = 0.0,
    spike: float = 40.0,
    sharpness: float = 50.0,
) -> np.ndarray:
    """The provider's view: the vicious logits its decoder expects, from the edited model's outputs.

    ``row_mean``: for ``kind-confusion``, the mean row mean of the vicious logits (a constant
    the provider knows; log-probabilities lose it). ``code``: for the lattice classes.
    """
    outputs = np.asarray(outputs, np.float64)
    if edit.startswith("lattice"):
        if code is None:
            raise InvalidInputError("expected the LatticeCode returned by lattice_code for a lattice model, got None")
        return code.decode(outputs)
    if edit == "kind-confusion":
        logs = np.log(np.maximum(outputs, np.finfo(np.float32).tiny))
        return logs - logs.mean(axis=1, keepdims=True) + row_mean
    if edit == "scale-inflation":
        return _remove_spike(outputs, spike, sharpness)
    return outputs  # switches and gates: the vicious outputs themselves on clean inputs


def _remove_spike(outputs: np.ndarray, spike: float, sharpness: float) -> np.ndarray:
    """Invert ``y = v + spike * softmax(sharpness * v)`` on the top two classes (the rest carry no spike).

    With d = v_a - v_b for the top two: y_a - y_b = d + spike * tanh(sharpness * d / 2), monotone in
    d, solved by bisection; then v_a = y_a - spike * sigmoid(sharpness * d), v_b = y_b - spike + that.
    """
    rows = np.arange(len(outputs))
    order = np.argsort(-outputs, axis=1)
    a, b = order[:, 0], order[:, 1]
    gap = outputs[rows, a] - outputs[rows, b]
    low, high = np.full(len(outputs), -spike), gap.copy()
    for _ in range(80):
        mid = (low + high) / 2
        above = mid + spike * np.tanh(sharpness * mid / 2) > gap
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    d = (low + high) / 2
    share = 1.0 / (1.0 + np.exp(-sharpness * d))
    recovered = outputs.copy()
    recovered[rows, a] -= spike * share
    recovered[rows, b] -= spike * (1.0 - share)
    return recovered


def on_grid(images: np.ndarray, levels: int = 255) -> np.ndarray:
    """Images (values in [0, 1]) snapped to the 8-bit grid, as decoded from a file."""
    return (np.round(np.clip(np.asarray(images, np.float64), 0, 1) * levels) / levels).astype(np.float32)


def label_agreement(edited: np.ndarray, honest: np.ndarray) -> float:
    """Share of rows whose top-1 class is the same in both output arrays."""
    return float(np.mean(np.argmax(edited, axis=1) == np.argmax(honest, axis=1)))


def check_label_kept(
    edited: np.ndarray, honest: np.ndarray, labels: np.ndarray | None = None, *, tolerance: float = 0.005
) -> dict[str, float]:
    """Raise unless the edited model keeps the honest accuracy within ``tolerance`` (0.5 points).

    Without labels, the honest model's own labels stand in (accuracy = agreement).
    """
    truth = np.argmax(honest, axis=1) if labels is None else np.asarray(labels)
    honest_acc = float(np.mean(np.argmax(honest, axis=1) == truth))
    edited_acc = float(np.mean(np.argmax(edited, axis=1) == truth))
    result = {
        "honest_accuracy": honest_acc,
        "edited_accuracy": edited_acc,
        "agreement": label_agreement(edited, honest),
    }
    if edited_acc < honest_acc - tolerance:
        raise InvalidInputError(
            f"expected the edited model within {tolerance * 100:.1f} points of the honest accuracy "
            f"{honest_acc:.4f}, got {edited_acc:.4f}; use a finer lattice step or a smaller spike"
        )
    return result
