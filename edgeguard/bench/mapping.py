"""What the server's decoder is fed when the user releases something other than the raw output.

The decoder was trained on the classifier's raw ONNX output (logits or probabilities).
A filter may release another kind of value, so the bench maps every release to the
decoder's input kind first, the same way for the decoder as trained and for the
attacker who fine-tunes it (the fine-tune starts from a sensible input):

=====================  ===================================  ============================================
decoder expects        release                              fed to the decoder
=====================  ===================================  ============================================
logits                 logits (rounded, noisy, clipped...)  the released values as they are
logits                 probabilities or scores (softmax,    centred log: ``log(max(p, floor))`` minus its row
                       rounded / noisy / top-k probs)       mean, plus the mean row-mean of the raw logits.
                                                            floor = half a rounding step (0.5 * 10^-d) when
                                                            the release is rounded to d decimals, else the
                                                            smallest float32 (softmax is then inverted
                                                            exactly, up to each row's shift)
logits                 labels (argmax index, one-hot)       one-hot row times the class table: the mean raw
                                                            logits of the attacker's samples predicted as
                                                            that class (a one-hot is not a logit vector)
probabilities          labels (argmax index, one-hot)       the one-hot row (a valid probability vector)
probabilities          probabilities or scores              the released values as they are
probabilities          logits                               softmax of the released values
=====================  ===================================  ============================================

The offset and the class table are fitted on the attacker's own split (raw outputs),
which the server has: it owns the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeguard.errors import FilterError
from edgeguard.filters import OutputDomain

__all__ = ["DecoderInputMap", "one_hot"]

_TINY = float(np.finfo(np.float32).tiny)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (N, K) rows with a 1 at each label (int array (N,))."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise FilterError(f"expected integer labels of shape (N,), got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise FilterError(f"expected labels in [0, {num_classes - 1}], got values in [{labels.min()}, {labels.max()}]")
    rows = np.zeros((len(labels), num_classes), dtype=np.float32)
    rows[np.arange(len(labels)), labels] = 1.0
    return rows


@dataclass(frozen=True)
class DecoderInputMap:
    """Maps a release of a given :class:`OutputDomain` to the decoder's input (see the module docstring)."""

    decoder_kind: str  # "logits" | "probabilities": the classifier's raw output, which the decoder consumes
    num_classes: int
    logit_offset: float = 0.0
    class_table: np.ndarray | None = None  # (K, K) mean raw output per predicted class

    def __post_init__(self) -> None:
        if self.decoder_kind not in ("logits", "probabilities"):
            raise FilterError(f"expected decoder_kind 'logits' or 'probabilities', got {self.decoder_kind!r}")

    @classmethod
    def fit(cls, raw_outputs: np.ndarray, decoder_kind: str) -> "DecoderInputMap":
        """Calibrate on raw outputs (N, K) of the attacker's samples: logit offset and class table."""
        raw = np.asarray(raw_outputs, dtype=np.float64)
        if raw.ndim != 2 or len(raw) == 0:
            raise FilterError(f"expected raw outputs of shape (N, K) with N > 0, got {raw.shape}")
        num_classes = raw.shape[1]
        predicted = raw.argmax(axis=1)
        fallback = raw.mean(axis=0)
        table = np.stack(
            [raw[predicted == k].mean(axis=0) if np.any(predicted == k) else fallback for k in range(num_classes)]
        )
        offset = float(raw.mean(axis=1).mean()) if decoder_kind == "logits" else 0.0
        return cls(decoder_kind, num_classes, offset, table.astype(np.float32))

    def rule(self, domain: OutputDomain) -> str:
        """One line saying what the decoder is fed for a release of ``domain``."""
        kind = "labels" if domain.terminal else domain.kind
        if kind == "labels":
            prefix = "argmax index -> one-hot" if domain.terminal else "one-hot"
            if self.decoder_kind == "logits":
                return f"{prefix} -> class table (mean raw logits of the class)"
            return prefix
        if self.decoder_kind == "logits":
            if kind == "logits":
                return "as released (logits)"
            floor = "half a rounding step" if domain.decimals is not None else "float32 tiny"
            return f"centred log of {kind} (floor: {floor}) + mean logit offset"
        if kind == "logits":
            return "softmax of the released logits"
        return f"as released ({kind})"

    def __call__(self, released: np.ndarray, domain: OutputDomain) -> np.ndarray:
        """The decoder input (float32 (N, K)) for ``released`` values of ``domain``."""
        released = np.asarray(released)
        if domain.terminal or released.ndim == 1:
            rows = one_hot(released.astype(np.int64), self.num_classes)
            kind = "labels"
        else:
            rows = released.astype(np.float32, copy=False)
            kind = domain.kind
        if rows.ndim != 2 or rows.shape[1] != self.num_classes:
            raise FilterError(f"expected released rows of shape (N, {self.num_classes}), got {rows.shape}")
        if kind == "labels":
            if self.decoder_kind == "logits":
                table = self.class_table if self.class_table is not None else np.eye(self.num_classes)
                return (rows @ table).astype(np.float32)
            return rows.copy()
        if self.decoder_kind == "logits":
            if kind == "logits":
                return rows.copy()
            floor = 0.5 * 10.0 ** (-domain.decimals) if domain.decimals is not None else _TINY
            logs = np.log(np.maximum(rows.astype(np.float64), floor))
            logs -= logs.mean(axis=1, keepdims=True)
            return (logs + self.logit_offset).astype(np.float32)
        if kind == "logits":
            shifted = rows.astype(np.float64) - rows.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return rows.copy()
