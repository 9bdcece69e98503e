"""The clipped-Laplace mechanism with a per-user privacy budget.

Derivation (pure epsilon-differential privacy for the *whole input*). Clip every logit
to [-c, c]. For any two inputs x, x' the clipped vectors z, z' differ by at most 2c per
coordinate, so the L1 sensitivity of the release is Delta_1 = max ||z - z'||_1 = 2cK
(K classes). Adding independent Laplace(0, b) noise to each coordinate with
b = Delta_1 / epsilon = 2cK / epsilon gives densities whose ratio for any output y is

    p(y | x) / p(y | x') = exp((||y - z'||_1 - ||y - z||_1) / b) <= exp(||z - z'||_1 / b) <= e^epsilon,

i.e. one released row is epsilon-DP with respect to replacing the input entirely. It
follows that the mutual information between an input and its released row is at most
epsilon nats = epsilon * log2(e) bits, which is this filter's capacity bound. Releases
compose: k rows released for one user cost k * epsilon (basic composition), which the
:class:`PrivacyAccountant` charges per user id; once a user's total is spent the
filter refuses (PrivacyBudgetExceededError) or falls back to a one-hot argmax
(log2 K bits per row, no budget).

Sampling (why OpenDP). A textbook floating-point Laplace sampler (``numpy``'s
``rng.laplace``: ``-b * log(u)`` in doubles) leaks through the low-order bits of its
outputs: the set of doubles that ``z + noise`` can take depends on ``z``, so one release
can tell neighbouring inputs apart with certainty (Mironov, CCS 2012, "On significance
of the least significant bits for differential privacy"). This filter draws its noise
with OpenDP's ``make_laplace`` over a vector of floats with an explicit granularity
``2^k``: OpenDP rounds the clipped values to the grid ``2^k Z`` and adds exactly
sampled *discrete* Laplace noise on that grid (Canonne, Kamath and Steinke 2020), so
every released value is an integer multiple of ``2^k`` whatever the input, and OpenDP's
privacy map (which includes the rounding slack) certifies the epsilon. ``k`` is chosen
from the scale (``2^k`` about ``b / 2^14``) so that released values stay exact in
float32, and the scale is raised above ``2cK / epsilon`` just enough that OpenDP's map
of the sensitivity ``2cK`` is at most ``epsilon`` (:meth:`ClippedLaplace.row_epsilon`). OpenDP draws from the OS's randomness and cannot be seeded: the
``rng`` argument is ignored.

Composition. One released row costs :meth:`ClippedLaplace.row_epsilon`; a batch of n
rows costs n of them (OpenDP's map of the whole batch, a vector of n K values with L1
sensitivity n 2cK, is the same sum). The per-user budget (:class:`PrivacyAccountant`)
adds up every release under basic sequential composition, *including repeats of the
same input*: a repeated query is a new draw and is charged again (averaging k repeats
is exactly what composition prices at k epsilon). The budget lives in memory only: a
restarted app starts from zero.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgeguard.errors import FilterError, PrivacyBudgetExceededError
from edgeguard.filters.base import OutputDomain, OutputFilter

__all__ = ["PrivacyAccountant", "ClippedLaplace"]

_SPEND_TOLERANCE = 1e-9


class PrivacyAccountant:
    """Epsilon spent per user id, against one total per user (thread-safe).

    ``user_id=None`` is one shared bucket for callers that do not name a user.
    """

    def __init__(self, total_epsilon: float) -> None:
        if isinstance(total_epsilon, bool) or not isinstance(total_epsilon, int | float):
            raise FilterError(f"expected total_epsilon to be a positive number, got {total_epsilon!r}")
        if not (math.isfinite(total_epsilon) and total_epsilon > 0):
            raise FilterError(f"expected total_epsilon to be a positive finite number, got {total_epsilon!r}")
        self.total_epsilon = float(total_epsilon)
        self._spent: dict[Any, float] = {}
        self._count: dict[Any, int] = {}
        self._lock = threading.Lock()

    def spent(self, user_id: Any = None) -> float:
        with self._lock:
            return self._spent.get(user_id, 0.0)

    def remaining(self, user_id: Any = None) -> float:
        return max(self.total_epsilon - self.spent(user_id), 0.0)

    def try_spend(self, user_id: Any, epsilon: float) -> bool:
        """Charge ``epsilon`` to ``user_id`` if it fits in the budget (atomic); return whether it did."""
        with self._lock:
            spent = self._spent.get(user_id, 0.0)
            if spent + epsilon > self.total_epsilon * (1.0 + _SPEND_TOLERANCE):
                return False
            self._spent[user_id] = spent + epsilon
            self._count[user_id] = self._count.get(user_id, 0) + 1
            return True

    def releases(self, user_id: Any = None) -> int:
        """How many charges (batches) were accepted for ``user_id``."""
        with self._lock:
            return self._count.get(user_id, 0)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_epsilon": self.total_epsilon,
                "users": len(self._spent),
                "composition": "basic sequential: every release is charged, repeats included",
            }

    def __repr__(self) -> str:
        return f"PrivacyAccountant(total_epsilon={self.total_epsilon!r})"


@dataclass(frozen=True, repr=False, eq=False)
class ClippedLaplace(OutputFilter):
    """Clip values to [-clip, clip] and add Laplace noise of scale 2 * clip * K / epsilon (epsilon-DP per row).

    ``budget`` is a total epsilon per user (a new :class:`PrivacyAccountant`) or an
    accountant to share between filters/models. Each released row costs ``epsilon``;
    a batch is charged all at once or not at all. ``on_exhausted``: "refuse" raises
    :class:`PrivacyBudgetExceededError`, "argmax" releases one-hot argmax rows of the
    unclipped outputs (ties: lowest index) without charging.
    """

    clip: float
    epsilon: float
    budget: Any
    on_exhausted: str = "refuse"

    name: ClassVar[str] = "clipped_laplace"
    is_random: ClassVar[bool] = True
    produces: ClassVar[str] = "same"
    capacity_rule: ClassVar[str] = (
        "epsilon * log2(e) bits per row (epsilon-DP w.r.t. the whole input); with on_exhausted='argmax', "
        "max(epsilon * log2(e), log2 K)"
    )

    def __post_init__(self) -> None:
        for key in ("clip", "epsilon"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise FilterError(f"expected {key} to be a positive finite number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if not isinstance(self.budget, PrivacyAccountant):
            object.__setattr__(self, "budget", PrivacyAccountant(self.budget))
        if self.on_exhausted not in ("refuse", "argmax"):
            raise FilterError(f"expected on_exhausted 'refuse' or 'argmax', got {self.on_exhausted!r}")

    @property
    def accountant(self) -> PrivacyAccountant:
        return self.budget

    def sensitivity(self, num_classes: int) -> float:
        """L1 sensitivity of one clipped row: 2 * clip * K (any input replaced by any other)."""
        return 2.0 * self.clip * num_classes

    def noise_scale(self, num_classes: int) -> float:
        """The Laplace scale b: 2 * clip * K / epsilon, raised (by ~1e-4 relative) until OpenDP's map certifies epsilon."""
        return _calibrated(self.clip, self.epsilon, num_classes)[0]

    def granularity(self, num_classes: int) -> float:
        """The output grid 2^k: every released value is an integer multiple of it."""
        return 2.0 ** _calibrated(self.clip, self.epsilon, num_classes)[1]

    def row_epsilon(self, num_classes: int) -> float:
        """The epsilon one released row costs, as OpenDP's privacy map computes it (<= ``epsilon``)."""
        return _calibrated(self.clip, self.epsilon, num_classes)[2]

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        rows, num_classes = outputs.shape
        cost = rows * self.row_epsilon(num_classes)
        if not self.budget.try_spend(user_id, cost):
            if self.on_exhausted == "refuse":
                # Only budget figures: never an output value (values_free: the pipeline keeps this message).
                refusal = PrivacyBudgetExceededError(
                    f"expected at most {self.budget.remaining(user_id):.6g} epsilon to be needed for this user, "
                    f"got a request for {cost:.6g} ({rows} rows x epsilon {self.row_epsilon(num_classes):.6g}); the "
                    f"total of {self.budget.total_epsilon:g} is spent. Use a new budget, or on_exhausted='argmax'"
                )
                refusal.values_free = True
                raise refusal
            one_hot = np.zeros_like(outputs)
            one_hot[np.arange(rows), outputs.argmax(axis=1)] = 1.0
            return one_hot
        clipped = np.clip(np.asarray(outputs, dtype=np.float64), -self.clip, self.clip)
        noisy = np.asarray(_sampler(self.clip, self.epsilon, num_classes, rows)(clipped.ravel().tolist()))
        return noisy.reshape(outputs.shape).astype(outputs.dtype, copy=False)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        return domain.continuous("logits" if domain.kind == "logits" else "scores")

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        bits = self.epsilon * math.log2(math.e)
        return max(bits, math.log2(num_classes)) if self.on_exhausted == "argmax" else bits

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["noise_scale"] = "2 * clip * K / epsilon (raised slightly so that OpenDP's map certifies epsilon)"
        out["sampler"] = "OpenDP make_laplace (discrete Laplace on the grid 2^k)"
        return out


# --- OpenDP ----------------------------------------------------------------------------------
#: Bits of float32 mantissa kept for the noise: the grid 2^k is about scale / 2^14, so values up
#: to 2^10 scales (the tail beyond has probability e^-1024) are exact float32 numbers.
_GRID_BELOW_SCALE = 14


def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _measurement(scale: float, k: int, size: int) -> Any:
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=size), dp.l1_distance(T=float)
    return dp.m.make_laplace(*space, scale=scale, k=k)


@functools.lru_cache(maxsize=256)
def _calibrated(clip: float, epsilon: float, num_classes: int) -> tuple[float, int, float]:
    """(scale, k, row epsilon): the smallest scale >= 2cK/epsilon whose OpenDP map of 2cK is <= epsilon."""
    sensitivity = 2.0 * clip * num_classes
    scale = sensitivity / epsilon
    for _ in range(60):
        k = math.floor(math.log2(scale)) - _GRID_BELOW_SCALE
        spent = float(_measurement(scale, k, num_classes).map(sensitivity))
        if spent <= epsilon:
            return scale, k, spent
        scale *= max(spent / epsilon, 1.0 + 1e-12)
    raise FilterError(f"expected OpenDP to certify epsilon {epsilon:g} for clip {clip:g}, got no scale that does")


@functools.lru_cache(maxsize=64)
def _sampler(clip: float, epsilon: float, num_classes: int, rows: int) -> Any:
    """OpenDP's Laplace measurement for a batch of ``rows`` rows (one vector of rows * K values)."""
    scale, k, _ = _calibrated(clip, epsilon, num_classes)
    return _measurement(scale, k, rows * num_classes)
