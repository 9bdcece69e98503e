"""Counting helpers for capacity bounds (exact integer arithmetic, then log2)."""

from __future__ import annotations

import math

from edgeguard.filters.base import OutputDomain


def log2_int(value: int) -> float:
    """log2 of a (possibly huge) positive integer; 0 for 1."""
    return math.log2(value) if value > 0 else -math.inf


def count_nonnegative_with_sum_in(parts: int, low: int, high: int) -> int:
    """Number of vectors of ``parts`` non-negative integers whose sum lies in [low, high].

    Vectors with sum <= S number C(S + parts, parts) (stars and bars plus a slack part),
    so the count is C(high + parts, parts) - C(low - 1 + parts, parts).
    """
    low = max(low, 0)
    if high < low:
        return 0
    below = math.comb(low - 1 + parts, parts) if low > 0 else 0
    return math.comb(high + parts, parts) - below


def grid_sum_range(domain: OutputDomain, scale: int, num_classes: int, mode: str) -> tuple[int, int] | None:
    """Range of the integer row sum after rounding ('round') or truncating ('trunc') to a 1/scale grid.

    Needs non-negative entries and a known row-sum interval; None otherwise. Rounding
    moves each entry by at most 1/2 step (the sum by at most K/2 steps), truncation of
    non-negative values by less than one step (the sum by less than K steps).
    """
    if domain.row_sum is None or domain.low < 0:
        return None
    low_sum, high_sum = domain.row_sum
    if mode == "round":
        return math.ceil(low_sum * scale - num_classes / 2), math.floor(high_sum * scale + num_classes / 2)
    return math.ceil(low_sum * scale - num_classes), math.floor(high_sum * scale)


def grid_values_per_entry(low: float, high: float, scale: int, mode: str) -> int | None:
    """How many grid values one entry in [low, high] can take after rounding/truncation; None if unbounded."""
    if math.isinf(low) or math.isinf(high):
        return None
    if mode == "round":
        return math.floor(high * scale + 0.5) - math.ceil(low * scale - 0.5) + 1
    return math.floor(high * scale) - math.ceil(low * scale) + 1


def grid_bits(domain: OutputDomain, scale: int, num_classes: int, mode: str) -> float:
    """Bits of a K-vector snapped to a 1/scale grid, given what the domain bounds."""
    candidates = [math.inf]
    sums = grid_sum_range(domain, scale, num_classes, mode)
    if sums is not None:
        candidates.append(log2_int(count_nonnegative_with_sum_in(num_classes, *sums)))
    per_entry = grid_values_per_entry(domain.low, domain.high, scale, mode)
    if per_entry is not None:
        candidates.append(num_classes * math.log2(max(per_entry, 1)))
    return min(candidates)
