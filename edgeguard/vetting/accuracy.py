"""The accuracy the vet credits a model (and its twin) with: the label a server can recover from the outputs.

The decision compares a model's leakage with its honest twin's and raises the excess for the
model's accuracy lead (``edgeguard.verdicts.rule.accuracy_adjustment``): an honest model that
is more accurate than its twin leaks less. Top-1 accuracy alone is a figure the provider
controls at no cost: one ``Add`` on a class logit lowers it by points while the server, who
knows the constant, subtracts it and loses nothing (``benchmarks/redteam_hide_accuracy.py``).
So the accuracy used in the decision is the *recoverable* accuracy, the best of:

- ``top1``: the argmax of the outputs (what the model claims);
- ``linear``: a multinomial logistic regression on the row-centred log-outputs, each column
  standardised, cross-validated (stratified folds): any per-class bias, temperature or other
  affine map of the logits is undone by it;
- ``knn``: k nearest neighbours on the same features, cross-validated;
- ``head``: a linear (ridge) probe on the input of the graph's last dense layer (the
  penultimate values the label is computed from), cross-validated.

And the measure is only *trusted* when nothing but an affine map or a normalisation lies
between that last dense layer and the output (:func:`output_head`: a ``Gemm``/``MatMul`` with
a constant weight, then only ``Softmax``, ``LogSoftmax``, ``Sigmoid``, reshapes, or an
``Add``/``Sub``/``Mul``/``Div`` by a constant, which the linear output probe undoes), and only
layer ops (activations, normalisations, pooling, residual ``Add``) lie between it and the
learned layers before it (so a dummy dense layer appended after an edit does not hide the
edit). Any other op there (swapping the top two classes on unsure rows, a keyed relabelling,
a last layer written without ``Gemm``) could hide accuracy from every probe, so the record
says ``trusted: False`` with the op, and the decision assumes the largest calibrated lead for
a pass.
Model and twin are measured alike. Early layers are not probed on purpose: a linear probe on
them reads the input's information (about as good as one on the pixels), not how well the
model was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "top1_accuracy", "recoverable_accuracy", "output_head", "OutputHead", "PROBE_FOLDS", "PROBE_NEIGHBOURS",
    "MAX_HEAD_VALUES",
]

#: Cross-validation folds of the label probes (fewer when a class has fewer samples).
PROBE_FOLDS = 5
#: Neighbours of the kNN label probe.
PROBE_NEIGHBOURS = 10
#: A head input with more values per row than this is not probed (the measure is then untrusted).
MAX_HEAD_VALUES = 65536
#: Head inputs wider than this are read through a seeded random projection to this many values.
PROJECTED_WIDTH = 512
_RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # the head probe's ridge, chosen inside each fold
_DENSE = ("Gemm", "MatMul")
_LEARNED = ("Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum")
_PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Softmax", "LogSoftmax", "Sigmoid", "Cast",
                 "CastLike", "Dropout")
_AFFINE = ("Add", "Sub", "Mul", "Div")  # with a constant operand only
#: Ops a network's layers are made of (with one data input; an affine op with a constant operand).
_LAYER_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
    "Softsign", "Gelu", "Mish", "Erf", "Clip", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
    "GroupNormalization", "LRN", "LpNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceMax", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Pad",
    "Cast", "CastLike", *_AFFINE,
})
_GATES = ("Sigmoid", "HardSigmoid")


@dataclass(frozen=True)
class OutputHead:
    """The graph's last dense layer as seen from its output: the value probed, and whether to trust it."""

    value: str | None  # the last dense layer's data input (None: none found, or it is the graph input)
    trusted: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "trusted": self.trusted, "reason": self.reason}


def output_head(proto: Any) -> OutputHead:
    """Walk back from the (first) graph output to the last dense layer, through pass-through and affine ops only.

    Trusted when the walk reaches a ``Gemm``/``MatMul`` whose weight is a constant (an
    initializer, a Constant, or computed from constants only); its data input is the value the
    head probe reads (None when no learned layer lies upstream of it: a linear model on the
    input, whose top-1 is then its whole accuracy). Untrusted, naming the op, when anything else
    lies on the way.
    """
    graph = proto.graph
    constants = {t.name for t in graph.initializer}
    producer: dict[str, Any] = {}
    learned: set[str] = set()  # values with a learned layer upstream
    for node in graph.node:
        data = [name for name in node.input if name and name not in constants]
        if not data:  # Constant, or computed from constants only (an Identity or Reshape of a weight is a weight)
            constants.update(o for o in node.output if o)
        elif node.op_type in _LEARNED or any(name in learned for name in data):
            learned.update(o for o in node.output if o)
        for out in node.output:
            producer[out] = node
    value = graph.output[0].name
    for _ in range(len(graph.node) + 1):
        node = producer.get(value)
        if node is None:
            return OutputHead(None, False, "no dense layer before the output")
        data = [name for name in node.input if name and name not in constants]
        if node.op_type in _DENSE and len(node.input) >= 2 and node.input[1] in constants and len(data) == 1:
            if data[0] not in learned:
                return OutputHead(None, True)
            culprit = _first_foreign_op(data[0], producer, constants)
            if culprit is not None:
                return OutputHead(None, False, f"{culprit.op_type} node {culprit.name or culprit.output[0]!r} lies "
                                  "between the last two learned layers: it could hide accuracy from the probes")
            return OutputHead(data[0], True)
        if len(data) == 1 and (node.op_type in _PASS_THROUGH or node.op_type in _AFFINE):
            value = data[0]
            continue
        return OutputHead(
            None, False, f"{node.op_type} node {node.name or node.output[0]!r} lies between the last dense layer and "
            "the output: it could hide accuracy from the probes"
        )
    return OutputHead(None, False, "no dense layer before the output")


def _first_foreign_op(value: str, producer: dict[str, Any], constants: set[str]) -> Any:
    """The first node, walking back from ``value`` to the learned layers that feed it, that is not a layer op.

    Layer ops: activations, normalisations, pooling, reshapes, an affine map by a constant, a
    residual ``Add`` of two branches (each walked), ``x * Sigmoid(x)`` (SiLU). None when every
    path reaches a learned layer (or the graph input) through layer ops only.
    """
    seen: set[str] = set()
    stack = [value]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        node = producer.get(current)
        if node is None or node.op_type in _LEARNED:
            continue
        data = [name for name in node.input if name and name not in constants]
        if node.op_type in _LAYER_OPS and len(data) == 1:
            stack.append(data[0])
        elif node.op_type in ("Add", "Sum") and len(data) >= 2:  # a residual connection: walk every branch
            stack.extend(data)
        elif node.op_type == "Mul" and len(data) == 2 and _is_silu(data, producer):
            stack.append(next(d for d in data if producer.get(d) is None or producer[d].op_type not in _GATES))
        else:
            return node
    return None


def _is_silu(data: list[str], producer: dict[str, Any]) -> bool:
    for gate, other in ((data[0], data[1]), (data[1], data[0])):
        node = producer.get(gate)
        if node is not None and node.op_type in _GATES and node.input[0] == other:
            return True
    return False


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray, task_type: str = "multiclass") -> float:
    """Top-1 accuracy (multiclass), or per-label accuracy at 0.5 / logit 0 (multilabel)."""
    outputs = np.asarray(outputs)
    if task_type == "multilabel" or np.asarray(labels).ndim == 2:
        threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
        return float(((outputs > threshold) == (np.asarray(labels) > 0.5)).mean())
    return float((outputs.argmax(axis=1) == labels).mean())


def recoverable_accuracy(
    outputs: np.ndarray,
    labels: np.ndarray,
    *,
    task_type: str = "multiclass",
    seed: int = 0,
    head: np.ndarray | None = None,
) -> dict[str, Any]:
    """The best accuracy at which the label is recovered from ``outputs``: a record with ``accuracy``.

    ``head``: the values of the :func:`output_head` input on the same rows ((N, d), or None),
    read by a cross-validated ridge probe. The record also holds each probe's accuracy
    (``top1``, ``linear``, ``knn``, ``head``), the folds, and a ``note`` when the probes could not
    run (multilabel outputs, too few samples per class): then ``accuracy`` is the top-1 figure alone.
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edgeguard.vetting.decoders import centred_logs

    outputs = np.asarray(outputs, dtype=np.float64)
    top1 = top1_accuracy(outputs, labels, task_type)
    record: dict[str, Any] = {"accuracy": top1, "top1": top1, "linear": None, "knn": None, "head": None}
    if task_type == "multilabel" or np.asarray(labels).ndim == 2:
        record["note"] = "multilabel outputs: top-1 (per-label) accuracy only"
        return record
    labels = np.asarray(labels).astype(np.int64)
    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(PROBE_FOLDS, counts.min()))
    if folds < 2 or not np.all(np.isfinite(outputs)):
        record["note"] = "too few samples of some class (or non-finite outputs) for the label probes: top-1 only"
        return record
    features = centred_logs(outputs, task_type)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=int(seed))
    probes = {
        "linear": (features, make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))),
        "knn": (features, make_pipeline(
            StandardScaler(), KNeighborsClassifier(n_neighbors=min(PROBE_NEIGHBOURS, len(labels) // 4)))),
    }
    if head is not None:
        values = np.asarray(head, dtype=np.float64).reshape(len(labels), -1)
        if np.all(np.isfinite(values)):
            if values.shape[1] > PROJECTED_WIDTH:  # standardised, then a seeded Gaussian projection
                spread = values.std(axis=0)
                values = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
                rng = np.random.default_rng(int(seed))
                values = values @ rng.normal(0.0, 1.0 / np.sqrt(values.shape[1]), (values.shape[1], PROJECTED_WIDTH))
            probes["head"] = (values, make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=_RIDGE_ALPHAS)))
    for name, (x, probe) in probes.items():
        predicted = cross_val_predict(probe, x, labels, cv=splitter)
        record[name] = float((predicted == labels).mean())
    record["folds"] = folds
    record["accuracy"] = max(v for v in (top1, record["linear"], record["knn"], record["head"]) if v is not None)
    return record
