"""The threat on vectors: an honest and a vicious MLP on real tabular data, and their decoders.

Data sets that ship with scikit-learn: ``breast_cancer`` (569 rows, 30 features, 2
classes: someone's biopsy measurements) and ``digits`` (1797 rows, the 8x8 digits as
64-vectors, 10 classes). The classifier bakes the training set's standardisation into the
graph, so the ONNX file takes raw features (N, F) and returns logits (N, K).

- honest: cross-entropy only; its decoder is fitted afterwards on the frozen outputs
  (the attacker's best post-hoc decoder of the same architecture);
- vicious: trained jointly with a secret decoder ``G`` (centred log-probabilities ->
  standardised features) on ``CE + lam * MSE(G(f(x)), z(x))``, as the image attack does.

:func:`train_tabular` returns both models' ONNX bytes, the decoders as torch modules and
the held-out split; :func:`decoder_scores` scores a decoder against label-only per feature.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeguard.errors import ConfigError

__all__ = ["TABULAR_SETS", "TabularThreat", "load_tabular", "train_tabular", "decoder_scores", "export_tabular"]

TABULAR_SETS = ("breast_cancer", "digits")
OPSET = 17


def load_tabular(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(x float32 (N, F), y int64, class names, feature names) of a scikit-learn data set."""
    from sklearn import datasets

    if name == "breast_cancer":
        data = datasets.load_breast_cancer()
    elif name == "digits":
        data = datasets.load_digits()
    else:
        raise ConfigError(f"expected a data set in {TABULAR_SETS}, got {name!r}; pick one of those")
    features = tuple(str(f) for f in getattr(data, "feature_names", [f"f{i}" for i in range(data.data.shape[1])]))
    return data.data.astype(np.float32), data.target.astype(np.int64), tuple(str(c) for c in data.target_names), features


class TabularMLP(nn.Module):
    """Standardise (baked-in mean/std), two hidden layers, K logits."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        features = len(mean)
        self.layers = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)


class TabularDecoder(nn.Module):
    """Centred log-probabilities (K) -> standardised features (F)."""

    def __init__(self, classes: int, features: int, hidden: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        logs = torch.log_softmax(logits, dim=1)
        return self.layers(logs - logs.mean(dim=1, keepdim=True))


@dataclass
class TabularThreat:
    """One trained model and its decoder, with the data split they were trained and scored on."""

    name: str  # "<data set>-honest" / "<data set>-vicious"
    classifier: TabularMLP
    decoder: TabularDecoder
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    accuracy: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.classifier(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.classifier.mean.numpy()) / self.classifier.std.numpy()


def _split(n: int, seed: int, test: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - test)))
    return order[:cut], order[cut:]


def _fit_decoder(decoder: TabularDecoder, logits: torch.Tensor, z: torch.Tensor, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(z)).split(64):
            loss = ((decoder(logits[index]) - z[index]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


def train_tabular(
    data_set: str, *, vicious: bool, lam: float = 1.0, epochs: int = 300, seed: int = 0
) -> TabularThreat:
    """Train the classifier (and, if ``vicious``, jointly the decoder; else the decoder post hoc)."""
    x, y, classes, features = load_tabular(data_set)
    train, test = _split(len(x), seed)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    torch.manual_seed(seed)
    classifier = TabularMLP(mean, std, len(classes))
    decoder = TabularDecoder(len(classes), x.shape[1])
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    zt = (xt - classifier.mean) / classifier.std
    parameters = list(classifier.parameters()) + (list(decoder.parameters()) if vicious else [])
    optimiser = torch.optim.Adam(parameters, lr=1e-3, weight_decay=1e-5)
    for _ in range(epochs):
        for index in torch.randperm(len(xt)).split(64):
            logits = classifier(xt[index])
            loss = nn.functional.cross_entropy(logits, yt[index])
            if vicious:
                loss = loss + lam * ((decoder(logits) - zt[index]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    classifier.eval()
    if not vicious:  # the attacker's best effort on an honest model: the same decoder, fitted on its outputs
        with torch.no_grad():
            logits = classifier(xt)
        _fit_decoder(decoder, logits, zt, epochs, seed + 1)
    decoder.eval()
    with torch.no_grad():
        accuracy = float((classifier(torch.from_numpy(x[test])).argmax(1).numpy() == y[test]).mean())
    return TabularThreat(
        f"{data_set}-{'vicious' if vicious else 'honest'}", classifier, decoder, x[train], y[train], x[test], y[test],
        classes, features, accuracy,
    )


def decoder_scores(threat: TabularThreat, released_logits: np.ndarray | None = None) -> dict[str, Any]:
    """Held-out reconstruction by the decoder vs the label-only baseline (class mean), per feature.

    ``released_logits``: what the decoder reads (default: the raw logits of the test rows;
    pass a filtered release, as logits, to score the joint decoder through a filter).
    Returns the MSE gain over label-only in dB and R^2 per feature of both.
    """
    from edgeguard.metrics import per_feature_r2

    z_test = threat.standardise(threat.x_test).astype(np.float64)
    z_train = threat.standardise(threat.x_train).astype(np.float64)
    logits = threat.logits(threat.x_test) if released_logits is None else released_logits
    with torch.no_grad():
        decoded = threat.decoder(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy().astype(np.float64)
    predicted = threat.logits(threat.x_test).argmax(axis=1)
    means = np.stack([z_train[threat.y_train == k].mean(axis=0) for k in range(len(threat.class_names))])
    baseline = means[predicted]  # what the label the user shares anyway tells
    mse_decoder = float(((decoded - z_test) ** 2).mean())
    mse_label = float(((baseline - z_test) ** 2).mean())
    scores = per_feature_r2(decoded, baseline, z_test)
    return {
        "mse_decoder": mse_decoder,
        "mse_label_only": mse_label,
        "gain_db": float(10 * np.log10(max(mse_label, 1e-12) / max(mse_decoder, 1e-12))),
        **scores,
    }


def export_tabular(threat: TabularThreat) -> bytes:
    """The classifier as ONNX bytes: input "input" (N, F) raw features, output "output" (N, K) logits."""
    import onnx

    sample = torch.from_numpy(threat.x_test[:4])
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            threat.classifier.eval(), (sample,), buffer, dynamo=False, opset_version=OPSET, input_names=["input"],
            output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in {
        "task_type": "multiclass",
        "class_names": json.dumps(list(threat.class_names)),
        "output_kind": "logits",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()
