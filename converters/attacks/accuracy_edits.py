"""Training-free edits that hide a model's accuracy from its own outputs, and the server's exact undo.

The vet raises a model's excess leakage over its honest twin by the model's accuracy lead
(``edgeguard.verdicts.rule.accuracy_adjustment``): honest models leak less the better they
are trained. A provider who has read that would like its model to *look* less accurate,
at no cost to its own server. Each edit here lowers the top-1 accuracy a client sees with a
few ONNX nodes of the default-allowed operator set, and each is exactly invertible by a
server that knows it (:func:`undo_bias_shift`, :func:`undo_swap_unsure`), so the server
keeps the base model's whole gain:

- :func:`bias_shift`: ``+b`` on one class's logit (one ``Add``). Undone by the vet's
  recoverable accuracy (``edgeguard.vetting.accuracy``): a linear label probe refits the bias.
- :func:`swap_unsure`: on rows whose top-two margin is below ``margin``, the top two logits
  trade places (``ReduceMax``/``Relu``/``Clip``/``Mul``/``Add`` only). The margin is unchanged
  by the swap, so applying the edit again undoes it. A linear or kNN label probe on the
  outputs does not undo it: the red team of the recoverable accuracy
  (``benchmarks/redteam_hide_accuracy.py``).

- :func:`head_without_gemm` (combined with either): the model's last ``Gemm`` rewritten as
  ``ReduceSum(Mul(h, W))``, the same function without a ``Gemm``: the red team of the vet's
  layer probe, which reads the inputs of dense layers (it counts a ``Mul`` by a constant
  weight matrix as one, so this edit alone does not hide the penultimate values;
  ``weight_from_input=True`` computes the weight as ``W + 0 * mean(h)``, no longer a constant).

All cost the client-visible top-1 accuracy, which is also what the server would lose if the
release were label-only: the price the provider pays only when the vet stops the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from converters.attacks.graph_edits import GraphEdit, _Graph, _load, run_model
from edgeguard.errors import InvalidInputError

__all__ = [
    "ACCURACY_EDITS",
    "bias_shift",
    "swap_unsure",
    "undo_bias_shift",
    "undo_swap_unsure",
    "hide_accuracy",
    "head_without_gemm",
    "ACCURACY_GRAPH_EDITS",
    "HIDDEN_POINTS",
    "recover",
]

#: How much top-1 accuracy the zoo's accuracy-hiding families give up (the provider's server loses none of it).
HIDDEN_POINTS = 0.05

_ONE_HOT = 1.0e4  # slope of the Relu one-hots: 1 on the top entry, 0 on any entry 1e-4 below it
_MASK = 1.0e4  # what the top entry is lowered by to find the second one


def bias_shift(model: Any, *, bias: float, class_index: int = 0) -> onnx.ModelProto:
    """``model`` with ``+bias`` on the logit of class ``class_index`` (one Add)."""
    base = _load(model)
    graph = _Graph(base)
    out = graph.add_model(base, "b_")
    classes = base.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    if not classes or not 0 <= class_index < classes:
        raise InvalidInputError(f"expected a class index in [0, {classes}), got {class_index}")
    vector = np.zeros((1, classes), np.float32)
    vector[0, class_index] = bias
    return graph.finish(graph.op("Add", [out, graph.const(vector)]), "bias_shift")


def undo_bias_shift(outputs: np.ndarray, *, bias: float, class_index: int = 0) -> np.ndarray:
    """The server's undo of :func:`bias_shift`."""
    restored = np.array(outputs, dtype=np.float64, copy=True)
    restored[:, class_index] -= bias
    return restored


def swap_unsure(model: Any, *, margin: float) -> onnx.ModelProto:
    """``model`` with the top two logits swapped on rows whose top-two margin is below ``margin``."""
    if not margin > 0:
        raise InvalidInputError(f"expected a positive margin, got {margin}")
    base = _load(model)
    graph = _Graph(base)
    z = graph.add_model(base, "s_")
    big, one = graph.const(_ONE_HOT), graph.const(1.0)
    top = graph.reduce_rows("ReduceMax", z, [1])
    is_top = graph.op("Relu", [graph.op("Sub", [one, graph.op("Mul", [graph.op("Sub", [top, z]), big])])])
    masked = graph.op("Sub", [z, graph.op("Mul", [is_top, graph.const(_MASK)])])
    second = graph.reduce_rows("ReduceMax", masked, [1])
    is_second = graph.op("Relu", [graph.op("Sub", [one, graph.op("Mul", [graph.op("Sub", [second, masked]), big])])])
    gap = graph.op("Sub", [top, second])
    gate = graph.op("Clip", [graph.op("Mul", [graph.op("Sub", [graph.const(margin), gap]), big]),
                             graph.const(0.0), graph.const(1.0)])
    delta = graph.op("Mul", [graph.op("Neg", [gap]), gate])  # second - top on gated rows
    moved = graph.op("Add", [z, graph.op("Mul", [delta, graph.op("Sub", [is_top, is_second])])])
    return graph.finish(moved, "swap_unsure")


def undo_swap_unsure(outputs: np.ndarray, *, margin: float) -> np.ndarray:
    """The server's undo of :func:`swap_unsure` (the swap keeps the margin, so it is its own inverse)."""
    restored = np.array(outputs, dtype=np.float64, copy=True)
    order = np.argsort(restored, axis=1)
    rows = np.arange(len(restored))
    first, second = order[:, -1], order[:, -2]
    gated = restored[rows, first] - restored[rows, second] < margin
    r = rows[gated]
    restored[r, first[gated]], restored[r, second[gated]] = restored[r, second[gated]], restored[r, first[gated]]
    return restored


def head_without_gemm(model: Any, *, weight_from_input: bool = False) -> onnx.ModelProto:
    """``model`` with its last ``Gemm`` (``h W^T + b``, transB=1, or ``h W + b``) as ``ReduceSum(Mul(h, W)) + b``.

    ``weight_from_input``: the weight enters as ``W + 0 * mean(h)`` (the same values, but not a
    constant of the graph).
    """
    from onnx import helper, numpy_helper

    base = _load(model)
    gemms = [i for i, n in enumerate(base.graph.node) if n.op_type == "Gemm"]
    if not gemms:
        raise InvalidInputError("expected a model with a Gemm layer, got none")
    index = gemms[-1]
    node = base.graph.node[index]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise InvalidInputError("expected a plain Gemm (no transA, alpha = beta = 1), got another")
    inits = {t.name: t for t in base.graph.initializer}
    if node.input[1] not in inits:
        raise InvalidInputError(f"expected the last Gemm's weight as an initializer, got {node.input[1]!r}")
    weight = numpy_helper.to_array(inits[node.input[1]])
    weight = weight if attrs.get("transB", 0) else weight.T  # (K, d)
    stem = f"{node.output[0]}_nogemm"
    extra = [numpy_helper.from_array(weight.astype(np.float32)[None], f"{stem}_w"),
             numpy_helper.from_array(np.array([1], np.int64), f"{stem}_axis1"),
             numpy_helper.from_array(np.array([-1], np.int64), f"{stem}_axis2")]
    nodes = [helper.make_node("Unsqueeze", [node.input[0], f"{stem}_axis1"], [f"{stem}_h"])]
    w = f"{stem}_w"
    if weight_from_input:
        extra.append(numpy_helper.from_array(np.array(0.0, np.float32), f"{stem}_zero"))
        nodes += [helper.make_node("ReduceMean", [node.input[0]], [f"{stem}_mean"], keepdims=1),
                  helper.make_node("Mul", [f"{stem}_mean", f"{stem}_zero"], [f"{stem}_nothing"]),
                  helper.make_node("Add", [w, f"{stem}_nothing"], [f"{stem}_w_live"])]
        w = f"{stem}_w_live"
    nodes += [helper.make_node("Mul", [f"{stem}_h", w], [f"{stem}_prod"]),
             helper.make_node("ReduceSum", [f"{stem}_prod", f"{stem}_axis2"], [f"{stem}_sum"], keepdims=0)]
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [f"{stem}_sum", node.input[2]], [node.output[0]]))
    else:
        nodes.append(helper.make_node("Identity", [f"{stem}_sum"], [node.output[0]]))
    del base.graph.node[index]
    if sum(node.input[1] in n.input for n in base.graph.node) == 0:  # the old weight is now unused
        base.graph.initializer.remove(inits[node.input[1]])
    for offset, new in enumerate(nodes):
        base.graph.node.insert(index + offset, new)
    base.graph.initializer.extend(extra)
    onnx.checker.check_model(base)
    return base


ACCURACY_EDITS = {
    "bias-shift": (bias_shift, undo_bias_shift, "bias"),
    "swap-unsure": (swap_unsure, undo_swap_unsure, "margin"),
}


def hide_accuracy(
    edit: str, logits: np.ndarray, labels: np.ndarray, target_accuracy: float, *, step: float = 0.25, limit: float = 40.0
) -> dict[str, Any]:
    """The smallest parameter (a multiple of ``step``) of ``edit`` taking top-1 on ``logits`` to ``target_accuracy``.

    Computed on the outputs (numpy form of the edit), to build the graph with. Returns the
    parameter, the top-1 accuracy before and after, and whether the target was reached.
    """
    if edit not in ACCURACY_EDITS:
        raise InvalidInputError(f"expected an edit in {sorted(ACCURACY_EDITS)}, got {edit!r}")
    _, undo, name = ACCURACY_EDITS[edit]
    before = float((logits.argmax(1) == labels).mean())
    value, after = 0.0, before
    while after > target_accuracy and value < limit:
        value += step
        # each undo is the edit's own numpy form up to a sign: bias by -value, the swap by itself
        edited = undo(logits, **{name: -value}) if edit == "bias-shift" else undo(logits, **{name: value})
        after = float((edited.argmax(1) == labels).mean())
    return {"edit": edit, name: value, "accuracy_before": before, "accuracy_after": after,
            "reached": after <= target_accuracy}


def _hiding(edit: str) -> Any:
    def build(honest: Any, vicious: Any, *, images: np.ndarray, labels: np.ndarray,
              points: float = HIDDEN_POINTS) -> tuple[onnx.ModelProto, dict[str, float]]:
        base = _load(vicious)
        logits = run_model(base, images)
        target = float((logits.argmax(1) == labels).mean()) - points
        found = hide_accuracy(edit, logits, labels, target)
        builder, _, name = ACCURACY_EDITS[edit]
        return builder(base, **{name: found[name]}), {name: found[name]}

    build.__name__ = edit.replace("-", "_")
    return build


def recover(edit: str, outputs: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """The provider's view: the vicious logits back from an accuracy-hiding edit's outputs (its exact undo)."""
    _, undo, _ = ACCURACY_EDITS[edit]
    return undo(outputs, **params)


#: The zoo's accuracy-hiding red-team families (benchmarks/zoo.py): built on the vicious model of a pair, each
#: gives up HIDDEN_POINTS of top-1 on the builder's labelled images; ``build(honest, vicious, images=, labels=)``
#: returns (model, parameters) and :func:`recover` undoes it for the server.
ACCURACY_GRAPH_EDITS: dict[str, GraphEdit] = {
    "bias-shift": GraphEdit(
        "bias-shift", _hiding("bias-shift"),
        "recoverable accuracy (the linear output probe refits the bias), then the leakage audit",
    ),
    "swap-unsure": GraphEdit(
        "swap-unsure", _hiding("swap-unsure"),
        "accuracy measure not trusted (ops after the last dense layer: a pass assumes the largest lead); leakage audit",
    ),
}
