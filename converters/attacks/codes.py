"""Hand-built codes: the strongest code that survives a given release (rung 4 of the attacker ladder).

A provider who has read edgeguard's source does not need gradient training to get through a
release filter: it writes the code by hand. The shipped model computes the honest logits z
(its top-1 label is kept) and a *payload* (here the model's own raw outputs, which the
server's decoder turns into an image), quantises the payload to what the release lets
through, and writes the quantised symbols into the outputs in a form the filter does not
destroy. Everything below is arithmetic a few ONNX nodes compute (Sub, Mul, Floor, Log,
ArgMax, TopK); nothing is trained. The server reads the symbols back with exact arithmetic
and feeds the de-quantised payload to its decoder.

Codes (each maps raw rows (N, K) and symbols (N, n) to the coded model's raw rows, and a
release back to the symbols):

- :class:`DiffLattice`: the digits below a float release's resolution. The differences
  ``z_top - z_j`` of ``m`` runner-up classes are snapped to a 1/16 grid and ``b`` bits are
  written below it. Survives raw logits, softmax (read back through ``log p``) and
  ``top_k`` with ``k > m``.
- :class:`TopMass`: ``top_k:1`` on probabilities: ``b`` bits in the released top-1
  probability ``1 / (1 + r)``.
- :class:`Lattice`: noisy or rounded logits: symbols on a lattice of step ``delta``, centred on
  0 (so clipping to [-c, c] does not bite when the lattice fits), the top class ``margin``
  steps above the rest.
- :class:`ProbLattice`: rounded or noisy probabilities: ``n`` non-top classes get ``delta``
  times a symbol in [0, L), the rest 0, the top class the remainder (it stays the largest);
  the ranking and spacing of the non-top classes, within the release's capacity.
- :class:`Level`: ``label_confidence:L``: the confidence level (one of ``L`` bins of [1/K, 1]).
- :class:`ArgmaxTrade`: ``argmax``: the label itself, only on rows where the model is
  unsure (the top-2 margin below a quantile), swapped to the runner-up when the payload's
  bit says so: accuracy for bits. The server cannot read a bit it cannot locate, so it
  decodes the label only (the mean image of the released label, fitted through the code).

:class:`PayloadQuantiser` turns payload vectors into symbols for a code's radices, with one
codebook per top-1 class (the release shows the class, so the server knows which codebook to
read): transform coding (principal components, bits allocated greedily), or k-means at low
rates when it does better. :func:`hand_code_kit` (the entry point ``edgeguard.attack_trainers:
hand_codes``) lists the candidate codes for a release kind; ``edgeguard bench`` keeps, per
release, the candidate that reconstructs the attacker's own held-out images best while keeping
accuracy within 0.5 points of the base model.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError

__all__ = [
    "ArgmaxTrade",
    "DiffLattice",
    "HandCodeKit",
    "Lattice",
    "Level",
    "PayloadQuantiser",
    "ProbLattice",
    "TopMass",
    "hand_code_kit",
]

_COARSE = 16.0  # DiffLattice: logit differences are snapped to a 1/16 grid, the code lives below it
_MAX_DIFF = 30.0  # ... and clipped to 30 (exp(-30) is still a normal float32)
_FAR = 200.0  # a logit this far below the top vanishes from a float32 softmax


def _top(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows).argmax(axis=1)


def _others(num_classes: int, top: np.ndarray) -> np.ndarray:
    """(N, K-1) the non-top class indices of every row, in class order."""
    index = np.broadcast_to(np.arange(num_classes), (len(top), num_classes))
    return index[index != top[:, None]].reshape(len(top), num_classes - 1)


class _Code(abc.ABC):
    """What every code has: a name, the release kinds it reads, its radices; ``fit`` is a no-op by default."""

    name: str = "code"
    kinds: tuple[str, ...] = ()
    radices: tuple[int, ...] = ()

    @property
    def bits(self) -> float:
        return float(sum(math.log2(r) for r in self.radices))

    def fit(self, raw: np.ndarray) -> None:
        """Calibrate on the attacker's own raw outputs (most codes need nothing)."""
        return None

    @abc.abstractmethod
    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """The coded model's raw rows: ``raw`` (N, K) with ``symbols`` (N, len(radices)) written in."""

    @abc.abstractmethod
    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        """The symbols read back from a release of ``kind`` (None: this code cannot be read from it)."""


@dataclass
class DiffLattice(_Code):
    """``bits`` bits below a 1/16 grid in each of the ``carriers`` smallest differences ``z_top - z_j``."""

    num_classes: int
    depth: int
    carriers: int
    kinds: tuple[str, ...] = ("logits", "probabilities", "scores")

    def __post_init__(self) -> None:
        self.carriers = min(self.carriers, self.num_classes - 1)
        self.radices = (2**self.depth,) * self.carriers
        self.name = f"diff_lattice(b={self.depth},m={self.carriers})"

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64)
        rows = np.arange(len(z))
        top = _top(z)
        others = _others(self.num_classes, top)
        diff = z[rows, top][:, None] - np.take_along_axis(z, others, axis=1)  # > 0 (ties aside)
        # carriers: the runner-ups (they survive top_k), taken in class order (the order the server reads them in)
        carriers = np.sort(np.argsort(diff, axis=1, kind="stable")[:, : self.carriers], axis=1)
        coarse = np.clip(np.floor(diff * _COARSE) / _COARSE, 1 / _COARSE, _MAX_DIFF - 1)
        fine = (np.asarray(symbols, dtype=np.float64) + 0.5) / (2**self.depth * _COARSE)
        new = np.full_like(diff, _MAX_DIFF)  # non-carriers: far below every carrier
        np.put_along_axis(new, carriers, np.take_along_axis(coarse, carriers, axis=1) + fine, axis=1)
        out = np.empty_like(z)
        out[rows, top] = z[rows, top]
        np.put_along_axis(out, others, z[rows, top][:, None] - new, axis=1)
        return out.astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        r = np.asarray(release, dtype=np.float64)
        if r.ndim != 2:
            return None
        rows = np.arange(len(r))
        top = _top(r)
        if kind == "logits" or kind == "scores":
            values = r
            present = np.isfinite(r)
        else:
            present = r > 0
            values = np.log(np.where(present, r, 1.0))
        diff = values[rows, top][:, None] - values
        diff[rows, top] = np.inf
        diff[~present] = np.inf
        order = np.argsort(diff, axis=1, kind="stable")[:, : self.carriers]  # the carriers: smallest differences
        carriers = np.sort(order, axis=1)  # in class order
        d = np.take_along_axis(diff, carriers, axis=1)
        with np.errstate(invalid="ignore"):
            fine = (d - np.floor(d * _COARSE) / _COARSE) * _COARSE * 2**self.depth - 0.5
            symbols = np.rint(np.where(np.isfinite(fine), fine, 0.0)).astype(np.int64)
        return np.clip(symbols, 0, 2**self.depth - 1)


@dataclass
class TopMass(_Code):
    """``bits`` bits in the top-1 probability 1 / (1 + r): one runner-up at log r, the rest far below."""

    num_classes: int
    depth: int
    kinds: tuple[str, ...] = ("probabilities",)

    def __post_init__(self) -> None:
        self.radices = (2**self.depth,)
        self.name = f"top_mass(b={self.depth})"

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64)
        rows = np.arange(len(z))
        top = _top(z)
        runner = np.argsort(-z, axis=1, kind="stable")[:, 1]
        r = (np.asarray(symbols[:, 0], dtype=np.float64) + 0.5) / 2**self.depth
        out = np.full_like(z, -_FAR)
        out[rows, top] = 0.0
        out[rows, runner] = np.log(r)
        return out.astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        r = np.asarray(release, dtype=np.float64)
        if r.ndim != 2 or kind != "probabilities":
            return None
        top = r.max(axis=1)
        mass = 1.0 / np.maximum(top, 1e-12) - 1.0
        return np.clip(np.floor(mass * 2**self.depth), 0, 2**self.depth - 1).astype(np.int64)[:, None]


@dataclass
class Lattice(_Code):
    """Non-top logits on ``offset + delta * symbol`` (symbol < levels); the top class ``margin`` steps above."""

    num_classes: int
    delta: float
    levels: int
    margin: int = 2
    kinds: tuple[str, ...] = ("logits", "scores")

    def __post_init__(self) -> None:
        self.radices = (self.levels,) * (self.num_classes - 1)
        self.offset = -self.delta * round((self.levels - 1 + self.margin) / 2)
        self.name = f"lattice(delta={self.delta:g},L={self.levels})"

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64)
        rows = np.arange(len(z))
        top = _top(z)
        out = np.empty_like(z)
        out[rows, top] = self.offset + self.delta * (self.levels - 1 + self.margin)
        values = self.offset + self.delta * np.asarray(symbols, dtype=np.float64)
        np.put_along_axis(out, _others(self.num_classes, top), values, axis=1)
        return out.astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        r = np.asarray(release, dtype=np.float64)
        if r.ndim != 2 or kind not in self.kinds:
            return None
        others = np.take_along_axis(r, _others(self.num_classes, _top(r)), axis=1)
        symbols = np.rint((others - self.offset) / self.delta)
        return np.clip(np.nan_to_num(symbols), 0, self.levels - 1).astype(np.int64)


@dataclass
class ProbLattice(_Code):
    """``carriers`` non-top classes at probability ``delta * symbol`` (symbol < levels), others 0, top the rest."""

    num_classes: int
    delta: float
    levels: int
    carriers: int
    kinds: tuple[str, ...] = ("probabilities",)

    def __post_init__(self) -> None:
        self.radices = (self.levels,) * self.carriers
        self.name = f"prob_lattice(delta={self.delta:g},L={self.levels},n={self.carriers})"

    @staticmethod
    def max_levels(delta: float, carriers: int) -> int:
        """The most levels for which the top class (1 - the carriers' mass) stays at least ``levels * delta``."""
        levels = 1
        while 1.0 - carriers * levels * delta >= (levels + 1) * delta - 1e-9 and levels < 4096:
            levels += 1
        return levels

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64)
        rows = np.arange(len(z))
        top = _top(z)
        others = _others(self.num_classes, top)[:, : self.carriers]
        p = np.zeros_like(z)
        np.put_along_axis(p, others, self.delta * np.asarray(symbols, dtype=np.float64), axis=1)
        p[rows, top] = 1.0 - p.sum(axis=1)
        logits = np.log(np.maximum(p, 1e-30))
        return (logits - logits[rows, top][:, None]).astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        r = np.asarray(release, dtype=np.float64)
        if r.ndim != 2 or kind != "probabilities":
            return None
        total = r.sum(axis=1, keepdims=True)
        r = r / np.where(total > 0, total, 1.0)
        others = _others(self.num_classes, _top(r))[:, : self.carriers]
        symbols = np.rint(np.take_along_axis(r, others, axis=1) / self.delta)
        return np.clip(symbols, 0, self.levels - 1).astype(np.int64)


@dataclass
class Level(_Code):
    """The top-1 probability at the centre of one of ``levels`` bins of [1/K, 1]; the others share the rest."""

    num_classes: int
    levels: int
    kinds: tuple[str, ...] = ("probabilities",)

    def __post_init__(self) -> None:
        self.radices = (self.levels,)
        self.name = f"level(L={self.levels})"
        low = 1.0 / self.num_classes
        self.width = (1.0 - low) / self.levels
        self.low = low

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64)
        rows = np.arange(len(z))
        top = _top(z)
        q = self.low + (np.asarray(symbols[:, 0], dtype=np.float64) + 0.5) * self.width
        rest = (1.0 - q) / (self.num_classes - 1)
        out = np.repeat(np.log(rest)[:, None], self.num_classes, axis=1)
        out[rows, top] = np.log(q)
        return out.astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        r = np.asarray(release, dtype=np.float64)
        if r.ndim != 2 or kind != "probabilities":
            return None
        index = np.floor((r.max(axis=1) - self.low) / self.width)
        return np.clip(index, 0, self.levels - 1).astype(np.int64)[:, None]


@dataclass
class ArgmaxTrade(_Code):
    """On the ``fraction`` of rows with the smallest top-2 margin, release the runner-up when the payload bit is 1."""

    num_classes: int
    fraction: float
    threshold: float = 0.0
    kinds: tuple[str, ...] = ("labels",)

    def __post_init__(self) -> None:
        self.radices = (2,)
        self.name = f"argmax_trade(f={self.fraction:g})"

    def fit(self, raw: np.ndarray) -> None:
        top2 = -np.sort(-np.asarray(raw, dtype=np.float64), axis=1)[:, :2]
        self.threshold = float(np.quantile(top2[:, 0] - top2[:, 1], self.fraction)) if self.fraction > 0 else -1.0

    def unsure(self, raw: np.ndarray) -> np.ndarray:
        top2 = -np.sort(-np.asarray(raw, dtype=np.float64), axis=1)[:, :2]
        return top2[:, 0] - top2[:, 1] < self.threshold

    def encode(self, raw: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        z = np.asarray(raw, dtype=np.float64).copy()
        rows = np.arange(len(z))
        order = np.argsort(-z, axis=1, kind="stable")
        swap = self.unsure(raw) & (np.asarray(symbols[:, 0]) == 1)
        first, second = order[swap, 0], order[swap, 1]
        z[rows[swap], first], z[rows[swap], second] = z[rows[swap], second], z[rows[swap], first]
        return z.astype(np.float32)

    def decode(self, release: np.ndarray, kind: str) -> np.ndarray | None:
        return None  # the server cannot tell which rows were traded: it reads the label only


class _Transform:
    """Transform coding: principal components, bits allocated greedily (largest remaining error first)."""

    def __init__(self, payload: np.ndarray, bits: int) -> None:
        self.mean = payload.mean(axis=0)
        centred = payload - self.mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        self.basis = vt  # (D, D) rows: components
        scores = centred @ vt.T
        self.low = np.quantile(scores, 0.001, axis=0)
        self.high = np.quantile(scores, 0.999, axis=0)
        variance = scores.var(axis=0)
        self.depth = np.zeros(len(variance), dtype=np.int64)
        for _ in range(bits):
            i = int(np.argmax(variance / 4.0**self.depth))
            if self.depth[i] >= 16:
                break
            self.depth[i] += 1
        self.radices = [2 ** int(d) for d in self.depth]

    def numbers(self, payload: np.ndarray) -> list[int]:
        scores = (payload - self.mean) @ self.basis.T
        steps = np.asarray(self.radices, dtype=np.float64)
        scaled = (scores - self.low) / np.maximum(self.high - self.low, 1e-12) * steps
        levels = np.clip(np.floor(scaled), 0, steps - 1).astype(np.int64)
        out = []
        for row in levels:
            value = 0
            for level, radix in zip(row[::-1], self.radices[::-1]):
                value = value * radix + int(level)
            out.append(value)
        return out

    def payload(self, numbers: list[int]) -> np.ndarray:
        levels = np.empty((len(numbers), len(self.radices)))
        for i, value in enumerate(numbers):
            for d, radix in enumerate(self.radices):
                value, levels[i, d] = divmod(value, radix)
        steps = np.asarray(self.radices, dtype=np.float64)
        scores = np.where(steps > 1, self.low + (levels + 0.5) / steps * (self.high - self.low), 0.0)
        return scores @ self.basis + self.mean


class _Vector:
    """Vector quantisation: k-means with 2^bits centroids."""

    def __init__(self, payload: np.ndarray, bits: int, seed: int) -> None:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=2**bits, n_init=1, random_state=seed, max_iter=50).fit(payload)
        self.centroids = model.cluster_centers_

    def numbers(self, payload: np.ndarray) -> list[int]:
        distances = ((payload[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return [int(i) for i in distances.argmin(axis=1)]

    def payload(self, numbers: list[int]) -> np.ndarray:
        return self.centroids[np.clip(np.asarray(numbers, dtype=np.int64), 0, len(self.centroids) - 1)]


def _fit_one(payload: np.ndarray, bits: int, seed: int) -> Any:
    """The better (lower payload MSE on its own rows) of transform coding and, at low rates, k-means."""
    best, best_error = None, np.inf
    candidates: list[Any] = [_Transform(payload, bits)] if bits >= 1 else []
    if 1 <= bits <= min(10, int(math.log2(max(len(payload) // 4, 2)))):
        candidates.append(_Vector(payload, bits, seed))
    for candidate in candidates:
        error = float(np.mean((candidate.payload(candidate.numbers(payload)) - payload) ** 2))
        if error < best_error:
            best, best_error = candidate, error
    return best


@dataclass
class PayloadQuantiser:
    """Payload vectors (N, D) <-> symbols for ``radices``, one codebook per top-1 class (fitted on the attacker's data).

    The release shows the top-1 class of (nearly) every row, so the server knows which class's
    codebook to read: each class gets its own quantiser of ``payload_bits`` bits (transform
    coding: principal components with greedily allocated bits; at low rates k-means when it
    does better), and the number it outputs is written as mixed-radix digits of ``radices``.
    """

    radices: tuple[int, ...]
    payload_bits: int = 0
    books: dict[int, Any] = field(default_factory=dict, repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def fit(
        cls, payload: np.ndarray, radices: tuple[int, ...], seed: int = 0, labels: np.ndarray | None = None
    ) -> "PayloadQuantiser":
        payload = np.asarray(payload, dtype=np.float64)
        labels = np.argmax(payload, axis=1) if labels is None else np.asarray(labels)
        bits = int(math.floor(sum(math.log2(r) for r in radices) + 1e-9))
        quantiser = cls(tuple(int(r) for r in radices), bits, mean=payload.mean(axis=0))
        if bits >= 1:
            for k in np.unique(labels):
                rows = payload[labels == k]
                if len(rows) >= 8:
                    quantiser.books[int(k)] = _fit_one(rows, bits, seed)
        return quantiser

    def symbols(self, payload: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, n) mixed-radix digits of each row's number (least significant first) in its class's codebook."""
        payload = np.asarray(payload, dtype=np.float64)
        numbers = np.zeros(len(payload), dtype=object)
        for k, book in self.books.items():
            rows = np.flatnonzero(np.asarray(labels) == k)
            if len(rows):
                numbers[rows] = book.numbers(payload[rows])
        out = np.zeros((len(payload), len(self.radices)), dtype=np.int64)
        for i, value in enumerate(numbers):
            value = int(value)
            for j, radix in enumerate(self.radices):
                value, out[i, j] = divmod(value, radix)
        return out

    def from_symbols(self, symbols: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The de-quantised payload of every row (the mean payload where the class has no codebook)."""
        numbers = []
        for row in np.asarray(symbols, dtype=np.int64):
            value = 0
            for digit, radix in zip(row[::-1], self.radices[::-1]):
                value = value * radix + int(digit)
            numbers.append(value)
        out = np.repeat(self.mean[None, :], len(numbers), axis=0)
        labels = np.asarray(labels)
        for k, book in self.books.items():
            rows = np.flatnonzero(labels == k)
            if len(rows):
                out[rows] = book.payload([numbers[i] for i in rows])
        return out.astype(np.float32)


@dataclass
class HandCodeKit:
    """The candidate codes for a model with ``num_classes`` classes (what the entry point returns)."""

    num_classes: int

    def candidates(self, release_kind: str) -> list[_Code]:
        """Every code that can read a release of ``release_kind`` (logits, probabilities, scores or labels)."""
        k = self.num_classes
        if k < 2:
            raise ConfigError(f"expected a classifier with at least 2 classes, got {k}")
        codes: list[_Code] = []
        if release_kind == "labels":
            return [ArgmaxTrade(k, f) for f in (0.005, 0.01, 0.02, 0.05, 0.1)]
        carriers = sorted({k - 1, 2, 1})
        codes += [DiffLattice(k, b, m) for b in (6, 8, 10, 12, 14) for m in carriers]
        if release_kind in ("logits", "scores"):
            deltas = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
            codes += [Lattice(k, d, levels) for d in deltas for levels in (2, 3, 4, 8, 16, 256, 4096)]
        if release_kind == "probabilities":
            codes += [TopMass(k, b) for b in (8, 12, 14, 16, 18, 20, 22)]
            for delta in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
                for carriers_count in range(1, k):
                    levels = ProbLattice.max_levels(delta, carriers_count)
                    if levels >= 2:
                        codes.append(ProbLattice(k, delta, levels, carriers_count))
            codes += [Level(k, levels) for levels in (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 32, 64, 128, 256)]
        return codes

    def quantiser(self, payload: np.ndarray, radices: tuple[int, ...], seed: int = 0) -> PayloadQuantiser:
        """A payload quantiser for ``radices`` with one codebook per top-1 class of ``payload``."""
        return PayloadQuantiser.fit(payload, radices, seed)


def hand_code_kit(num_classes: int) -> HandCodeKit:
    """Entry point ``edgeguard.attack_trainers: hand_codes``: the hand-built codes for ``num_classes`` classes."""
    return HandCodeKit(int(num_classes))
