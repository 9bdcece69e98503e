"""The claimed tasks: one class per image, or binary attributes derived from Fashion-MNIST classes.

The attribute task makes Fashion-MNIST a genuinely multi-label problem (an image can be
``upper_body``, ``long_sleeves`` and ``warm`` at once), like the paper's CelebA
attributes, while needing no extra data.
"""

from __future__ import annotations

import numpy as np

from edgeguard.data import FASHION_MNIST_CLASSES, Dataset
from edgeguard.errors import DataError

__all__ = [
    "FASHION_ATTRIBUTES",
    "attribute_matrix",
    "to_attribute_dataset",
    "prepare_task",
    "predict",
    "accuracy",
    "label_only_baseline",
]

#: Attribute name -> the Fashion-MNIST classes that have it (several overlap: multi-label).
FASHION_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "upper_body": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
    "footwear": ("Sandal", "Sneaker", "Ankle boot"),
    "bag": ("Bag",),
    "covers_legs": ("Trouser", "Dress"),
    "long_sleeves": ("Pullover", "Coat", "Shirt"),
    "warm": ("Pullover", "Coat", "Ankle boot"),
    "summer": ("T-shirt/top", "Dress", "Sandal"),
}


def attribute_matrix(class_names: tuple[str, ...] = FASHION_MNIST_CLASSES) -> np.ndarray:
    """(num_classes, num_attributes) 0/1 matrix: row c lists the attributes of class c."""
    unknown = sorted({name for members in FASHION_ATTRIBUTES.values() for name in members} - set(class_names))
    if unknown:
        raise DataError(
            f"expected the Fashion-MNIST class names {list(FASHION_MNIST_CLASSES)} to derive attributes, "
            f"got class names {list(class_names)}; use --task classes, "
            "or a dataset that already has 0/1 attribute labels"
        )
    matrix = np.zeros((len(class_names), len(FASHION_ATTRIBUTES)), dtype=np.float32)
    for column, members in enumerate(FASHION_ATTRIBUTES.values()):
        for name in members:
            matrix[class_names.index(name), column] = 1.0
    return matrix


def to_attribute_dataset(data: Dataset) -> Dataset:
    """Replace Fashion-MNIST class labels by the 0/1 attributes of :data:`FASHION_ATTRIBUTES`."""
    if data.multilabel:
        return data
    class_names = data.class_names or FASHION_MNIST_CLASSES
    labels = attribute_matrix(tuple(class_names))[data.y]
    return Dataset(data.x, labels, tuple(FASHION_ATTRIBUTES))


def prepare_task(data: Dataset, task: str) -> Dataset:
    """The dataset with labels for ``task`` ("classes" or "attributes")."""
    if task == "attributes":
        return to_attribute_dataset(data)
    if data.multilabel:
        raise DataError(
            f"expected one class label per image for --task classes, got 0/1 labels of shape {data.y.shape}; "
            "use --task attributes"
        )
    return data


def predict(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    """Predicted labels from raw scores (logits): argmax, or score > 0 for each attribute."""
    if multilabel:
        return (scores > 0).astype(np.float32)
    return scores.argmax(axis=1)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy, or the mean over attributes of per-attribute accuracy (multi-label)."""
    if labels.ndim == 2:
        return float((predictions == labels).mean(axis=0).mean())
    return float((predictions == labels).mean())


def label_only_baseline(train: Dataset, predictions: np.ndarray) -> np.ndarray:
    """The best guess of an attacker who only sees the predicted label: the mean training image of that label.

    For attributes the "label" is the whole predicted 0/1 vector; a vector never seen in
    training falls back to the mean of all training images.
    """
    overall = train.x.mean(axis=0)
    if train.multilabel:
        keys_train = [row.tobytes() for row in train.y.astype(np.uint8)]
        keys_pred = [row.tobytes() for row in predictions.astype(np.uint8)]
    else:
        keys_train, keys_pred = train.y.tolist(), np.asarray(predictions).tolist()
    groups: dict[object, list[int]] = {}
    for index, key in enumerate(keys_train):
        groups.setdefault(key, []).append(index)
    means = {key: train.x[index].mean(axis=0) for key, index in groups.items()}
    return np.stack([means.get(key, overall) for key in keys_pred]).astype(np.float32)
