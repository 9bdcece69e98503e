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
- ``knn``: k nearest neighbours on the same features, cross-validated (a relabelling of a
  well-sampled region of output space is partly undone by it);
- ``layers``: a linear (ridge) probe on the inputs of the graph's dense layers (``Gemm``/``MatMul``
  with a constant weight, computed from a learned layer: never the raw input), the values the
  last layers compute the label from. An edit *after* those layers (any few nodes on top of
  the logits, invertible by the server or not: a bias, swapping the top two classes on unsure
  rows, a keyed relabelling no output probe can learn) leaves them untouched.

Model and twin are measured alike, so an honest model loses little by the maximum (its top-1
is usually the best). What is left to a provider who wants to hide accuracy: degrade the
representation itself before every dense layer, which costs it accuracy its own server cannot
recover either, or write its last layers without ``Gemm``/``MatMul`` (then only the output
probes apply; the record lists the layers probed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["top1_accuracy", "recoverable_accuracy", "probed_layers", "PROBE_FOLDS", "PROBE_NEIGHBOURS", "MAX_LAYER_FEATURES"]

#: Cross-validation folds of the label probes (fewer when a class has fewer samples).
PROBE_FOLDS = 5
#: Neighbours of the kNN label probe.
PROBE_NEIGHBOURS = 10
#: Layers wider than this (values per row) are not probed.
MAX_LAYER_FEATURES = 4096
#: At most this many layers are probed (the last ones in graph order; dummy dense layers stacked
#: after an edit would have to outnumber it).
MAX_LAYERS = 16
_DENSE = ("Gemm", "MatMul")
_RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # the layer probe's ridge, chosen inside each fold
_LEARNED = ("Gemm", "MatMul", "Conv", "ConvTranspose")


def _matrix(dims: list[int] | None) -> bool:
    return dims is not None and sum(1 for d in dims if d > 1) >= 2


def probed_layers(proto: Any) -> list[str]:
    """The graph values the layer probe reads: data inputs of dense layers computed from a learned layer.

    A dense layer is a ``Gemm``/``MatMul`` whose weight is a constant (an initializer, a Constant,
    or computed from constants only), or a ``Mul``/``Einsum`` with a constant weight matrix (two
    or more axes longer than 1: a dense layer written by hand, not a per-channel scale);
    its data input counts only when some learned layer (Gemm, MatMul, Conv) lies upstream of it,
    so the raw (flattened, normalised) input is never probed. The last :data:`MAX_LAYERS` in
    graph order.
    """
    graph = proto.graph
    constants = {t.name for t in graph.initializer}
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    shapes.update({n.output[0]: list(a.t.dims) for n in graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"})
    learned: set[str] = set()
    names: list[str] = []
    for node in graph.node:
        data = [name for name in node.input if name and name not in constants]
        if not data:  # Constant, or computed from constants only (an Identity or Reshape of a weight is a weight)
            constants.update(o for o in node.output if o)
            continue
        if node.op_type in _DENSE and len(node.input) >= 2 and node.input[1] in constants:
            candidates = [node.input[0]]
        elif node.op_type in ("Mul", "Einsum") and any(_matrix(shapes.get(n)) for n in node.input if n in constants):
            candidates = data  # a weight matrix multiplied in by hand (Mul then ReduceSum, an Einsum)
        else:
            candidates = []
        names.extend(n for n in candidates if n in learned and n not in names)
        if node.op_type in _LEARNED or any(name in learned for name in data):
            learned.update(o for o in node.output if o)
    return names[-MAX_LAYERS:]


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
    layers: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The best accuracy at which the label is recovered from ``outputs``: a record with ``accuracy``.

    ``layers``: the values of :func:`probed_layers` on the same rows (name -> (N, d)), each
    read by a cross-validated linear probe. The record also holds each probe's accuracy
    (``top1``, ``linear``, ``knn``, ``layers``: name -> accuracy), the folds, and a ``note``
    when the probes could not run (multilabel outputs, too few samples per class): then
    ``accuracy`` is the top-1 figure alone.
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edgeguard.vetting.decoders import centred_logs

    outputs = np.asarray(outputs, dtype=np.float64)
    top1 = top1_accuracy(outputs, labels, task_type)
    record: dict[str, Any] = {"accuracy": top1, "top1": top1, "linear": None, "knn": None}
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
        "linear": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500)),
        "knn": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(PROBE_NEIGHBOURS, len(labels) // 4))),
    }
    for name, probe in probes.items():
        predicted = cross_val_predict(probe, features, labels, cv=splitter)
        record[name] = float((predicted == labels).mean())
    record["layers"] = {}
    for name, values in (layers or {}).items():
        values = np.asarray(values, dtype=np.float64).reshape(len(labels), -1)
        if values.shape[1] > MAX_LAYER_FEATURES or not np.all(np.isfinite(values)):
            continue
        probe = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=_RIDGE_ALPHAS))
        predicted = cross_val_predict(probe, values, labels, cv=splitter)
        record["layers"][name] = float((predicted == labels).mean())
    record["folds"] = folds
    record["accuracy"] = max([top1, record["linear"], record["knn"], *record["layers"].values()])
    return record
