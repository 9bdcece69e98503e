"""The accuracy the vet credits a model (and its twin) with: the label a server can recover from the outputs.

The decision compares a model's leakage with its honest twin's and raises the excess for the
model's accuracy lead (``edgeguard.verdicts.rule.accuracy_adjustment``): an honest model that
is more accurate than its twin leaks less. Top-1 accuracy alone is a figure the provider
controls at no cost: one ``Add`` on a class logit lowers it by points while the server, who
knows the constant, subtracts it and loses nothing (``benchmarks/redteam_bias_shift.py``).
So the accuracy used in the decision is the *recoverable* accuracy, the best of:

- ``top1``: the argmax of the outputs (what the model claims);
- ``linear``: a multinomial logistic regression on the row-centred log-outputs, each column
  standardised, cross-validated (stratified folds): any per-class bias, temperature or other
  affine map of the logits is undone by it;
- ``knn``: k nearest neighbours on the same features, cross-validated: a deterministic
  relabelling of a region of output space (swapping the top two classes on unsure rows, say)
  is undone by it, because neighbours share the relabelling.

Model and twin are measured alike, so an honest model loses nothing by the maximum (its top-1
is usually the best of the three). An edit that throws the label away for real (noise the
server cannot undo either) does lower it: that costs the provider real accuracy, which the
report shows next to the twin's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["top1_accuracy", "recoverable_accuracy", "PROBE_FOLDS", "PROBE_NEIGHBOURS"]

#: Cross-validation folds of the label probes (fewer when a class has fewer samples).
PROBE_FOLDS = 5
#: Neighbours of the kNN label probe.
PROBE_NEIGHBOURS = 10


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray, task_type: str = "multiclass") -> float:
    """Top-1 accuracy (multiclass), or per-label accuracy at 0.5 / logit 0 (multilabel)."""
    outputs = np.asarray(outputs)
    if task_type == "multilabel" or np.asarray(labels).ndim == 2:
        threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
        return float(((outputs > threshold) == (np.asarray(labels) > 0.5)).mean())
    return float((outputs.argmax(axis=1) == labels).mean())


def recoverable_accuracy(
    outputs: np.ndarray, labels: np.ndarray, *, task_type: str = "multiclass", seed: int = 0
) -> dict[str, Any]:
    """The best accuracy at which the label is recovered from ``outputs``: a record with ``accuracy``.

    The record also holds each probe's accuracy (``top1``, ``linear``, ``knn``), the folds, and
    a ``note`` when the probes could not run (multilabel outputs, too few samples per class):
    then ``accuracy`` is the top-1 figure alone.
    """
    from sklearn.linear_model import LogisticRegression
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
    record["folds"] = folds
    record["accuracy"] = max(top1, record["linear"], record["knn"])
    return record
