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

Caveats: the noise is sampled in floating point, which does not formally achieve the
stated epsilon (Mironov, CCS 2012, "On significance of the least significant bits for
differential privacy"); rounding the release afterwards (Round) reduces that gap. The
budget lives in memory only.
"""

from __future__ import annotations

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
            return True

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"total_epsilon": self.total_epsilon, "users": len(self._spent)}

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

    def noise_scale(self, num_classes: int) -> float:
        """The Laplace scale b = L1 sensitivity / epsilon = 2 * clip * K / epsilon."""
        return 2.0 * self.clip * num_classes / self.epsilon

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None) -> np.ndarray:
        rows, num_classes = outputs.shape
        if not self.budget.try_spend(user_id, rows * self.epsilon):
            if self.on_exhausted == "refuse":
                raise PrivacyBudgetExceededError(
                    f"expected at most {self.budget.remaining(user_id):.6g} epsilon to be needed for this user, "
                    f"got a request for {rows * self.epsilon:.6g} ({rows} rows x epsilon {self.epsilon:g}); the "
                    f"total of {self.budget.total_epsilon:g} is spent. Use a new budget, or on_exhausted='argmax'"
                )
            one_hot = np.zeros_like(outputs)
            one_hot[np.arange(rows), outputs.argmax(axis=1)] = 1.0
            return one_hot
        noisy = rng.laplace(0.0, self.noise_scale(num_classes), size=outputs.shape)
        noisy += np.clip(outputs, -self.clip, self.clip)
        return noisy.astype(outputs.dtype, copy=False)

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        return domain.continuous("logits" if domain.kind == "logits" else "scores")

    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        bits = self.epsilon * math.log2(math.e)
        return max(bits, math.log2(num_classes)) if self.on_exhausted == "argmax" else bits

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["noise_scale"] = "2 * clip * K / epsilon"
        return out
