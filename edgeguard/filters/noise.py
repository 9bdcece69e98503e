"""Randomised filters: additive Gaussian/Laplace noise and a label-preserving variant.

Noise alone leaves continuous values, so these filters do not bound capacity by
themselves (follow them with Round, or use ClippedLaplace for a differential-privacy
bound). Randomness comes from the ``rng`` the caller passes; SafeModel and
FilterPipeline pass a generator freshly seeded from the OS CSPRNG unless a seed is given.

Fresh noise loses against repeats: an app that releases the same (or nearly the same)
input many times (video frames, retries) lets the receiver average the noise away (the
noise's standard deviation falls as 1/sqrt(repeats)). *Consistent noise* (``key=`` a
per-device secret, or ``consistent=true`` in a filter spec, which draws one) derives
each row's noise from HMAC-SHA256(key, SHA-256 of the input row's bytes): a repeat of
the same input returns the identical release, so averaging gains nothing, while
different inputs, and the same input on another device, get independent-looking noise.
The filter then needs the model inputs: ``FilterPipeline(...)(outputs, inputs=batch)``.
Inputs that differ in any bit (a re-encoded frame) get fresh noise, so consistent noise
defeats exact repeats, not near-duplicates.
"""

from __future__ import annotations

import copy
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from scipy.special import ndtri

from edgeguard.errors import FilterError
from edgeguard.filters.base import OutputDomain, OutputFilter

__all__ = ["GaussianNoise", "LaplaceNoise", "LabelPreservingNoise", "device_secret", "keyed_uniforms"]

_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise FilterError(f"expected {name} to be a positive finite number, got {value!r}")


#: Shortest device secret accepted for consistent noise (bytes).
MIN_KEY_BYTES = 16
_KEY_CONTEXT = b"edgeguard/consistent-noise/v1\0"


def device_secret() -> bytes:
    """A fresh 32-byte secret from the OS CSPRNG: generate once per device, store it, pass it as ``key=``."""
    return secrets.token_bytes(32)


def _check_key(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, bytes | bytearray) or len(value) < MIN_KEY_BYTES:
        got = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__
        raise FilterError(
            f"expected key to be None (fresh noise) or a secret of at least {MIN_KEY_BYTES} bytes, got {got}; "
            "use edgeguard.filters.device_secret() once per device and keep it"
        )


def keyed_uniforms(key: bytes, row_keys: Sequence[bytes], count: int, tag: bytes = b"") -> np.ndarray:
    """(N, count) float64 uniforms in (0, 1), row i a pseudo-random function of (key, tag, row_keys[i]).

    Counter-mode HMAC-SHA256: block j of row i is HMAC(key, context | tag | j | row_keys[i]),
    32 bytes = four 64-bit words; each word's top 53 bits make one uniform. Without the
    key the values cannot be predicted; with it they are reproducible.
    """
    blocks = -(-count // 4)
    prefix = _KEY_CONTEXT + tag + b"\0"
    counters = [j.to_bytes(4, "big") for j in range(blocks)]
    data = b"".join(hmac.digest(key, prefix + c + row, "sha256") for row in row_keys for c in counters)
    words = np.frombuffer(data, dtype="<u8").reshape(len(row_keys), blocks * 4)[:, :count]
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _keyed_noise(
    key: bytes, row_keys: Sequence[bytes], shape: tuple[int, ...], distribution: str, scale: float, tag: bytes
) -> np.ndarray:
    """Gaussian (std ``scale``) or Laplace (scale ``scale``) noise by inverse CDF of keyed uniforms."""
    uniforms = keyed_uniforms(key, row_keys, shape[1], tag)
    if distribution == "gaussian":
        return ndtri(uniforms) * scale
    centred = uniforms - 0.5
    return -scale * np.sign(centred) * np.log1p(-2.0 * np.abs(centred))


def _check_renormalize(value: Any) -> None:
    if value not in ("auto", True, False) or isinstance(value, int) and not isinstance(value, bool):
        raise FilterError(f"expected renormalize to be 'auto', True or False, got {value!r}")


def renormalize_rows(values: np.ndarray) -> np.ndarray:
    """Project rows onto the simplex in place: clip negatives to 0, divide by the row sum.

    A row with nothing left (all values <= 0) becomes uniform: it carries no information.
    """
    np.maximum(values, 0.0, out=values)
    totals = values.sum(axis=1, keepdims=True)
    empty = totals[:, 0] <= 0
    if empty.any():
        values[empty] = 1.0
        totals[empty] = values.shape[1]
    values /= totals
    return values


def _is_probability_row(outputs: np.ndarray) -> np.ndarray:
    """ART's is_probability, row by row: sum close to 1 (rel 1e-3) and all entries in [0, 1]."""
    return (np.abs(outputs.sum(axis=1) - 1.0) <= 1e-3) & (outputs.min(axis=1) >= 0.0) & (outputs.max(axis=1) <= 1.0)


class _AdditiveNoise(OutputFilter):
    """Shared logic: add zero-mean noise, then project back according to ``renormalize``.

    ``renormalize``: True = clip at 0 and renormalise rows (probabilities only); False =
    release the noisy values as they are; "auto" = decided by the declared kind when the
    filter is bound to a model (multiclass probabilities: renormalise; multilabel
    probabilities: clip to [0, 1]; logits: nothing) and, when the filter is called
    unbound, row by row like IBM ART (rows that look like probabilities are
    renormalised; with one column, negatives are clipped to 0).
    """

    is_random: ClassVar[bool] = True
    produces: ClassVar[str] = "same"
    capacity_rule: ClassVar[str] = "unbounded: continuous noise (round afterwards to bound it)"
    _bound_mode: ClassVar[str | None] = None
    _distribution: ClassVar[str] = "gaussian"
    renormalize: Any
    key: Any

    @property
    def needs_inputs(self) -> bool:
        return self.key is not None

    @property
    def consistent(self) -> bool:
        """True for consistent (keyed) noise: the same input gives the same release."""
        return self.key is not None

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("key", None)  # never print or serialise the device secret
        if self.key is not None:
            out["consistent"] = True
        return out

    def _noise_scale(self) -> float:
        raise FilterError(f"expected {type(self).__name__} to define _noise_scale(), got the base method")

    def _keyed(self, outputs: np.ndarray, row_keys: Sequence[bytes] | None) -> np.ndarray:
        if row_keys is None or len(row_keys) != len(outputs):
            raise FilterError(
                f"expected one key per row for consistent {self.name}, got "
                f"{'none' if row_keys is None else len(row_keys)}; call it with inputs=batch"
            )
        tag = f"{self.name}:{self._distribution}:{self._noise_scale()!r}".encode()
        noise = _keyed_noise(self.key, row_keys, outputs.shape, self._distribution, self._noise_scale(), tag)
        return noise.astype(outputs.dtype, copy=False) if outputs.dtype in _NATIVE_FLOATS else noise

    def check_input(self, domain: OutputDomain) -> None:
        super().check_input(domain)
        if self.renormalize is True and domain.kind != "probabilities":
            raise FilterError(
                f"expected probabilities for {type(self).__name__}(renormalize=True), got {domain.kind}; "
                "use renormalize=False or 'auto' on logits"
            )

    def _mode_for(self, domain: OutputDomain | None) -> str:
        if self.renormalize is True:
            return "simplex"
        if self.renormalize is False:
            return "none"
        if domain is None:
            return self._bound_mode or "sniff"
        if domain.kind == "probabilities":
            return "simplex" if domain.task_type == "multiclass" else "clip01"
        return "none"

    def _set_mode(self) -> None:
        object.__setattr__(self, "_mode", self._mode_for(None))  # read on every call

    def bind(self, domain: OutputDomain) -> OutputFilter:
        bound = copy.copy(self)
        object.__setattr__(bound, "_bound_mode", self._mode_for(domain))
        bound._set_mode()
        return bound

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        mode = self._mode_for(domain)
        if mode == "simplex":
            return domain.simplex()
        if mode == "clip01":
            return replace(domain.continuous("probabilities"), low=0.0, high=1.0)
        return domain.continuous("logits" if domain.kind == "logits" else "scores")

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        raise FilterError(f"expected {type(self).__name__} to define _noise(), got the base method")

    def _noisy(self, outputs: np.ndarray, rng: np.random.Generator, row_keys: Any = None) -> np.ndarray:
        if self.key is not None:
            noisy = self._keyed(outputs, row_keys)
        else:
            noisy = self._noise(outputs.shape, outputs.dtype, rng)
        noisy += outputs
        if noisy.dtype != outputs.dtype:
            noisy = noisy.astype(outputs.dtype)
        mode = self._mode
        if mode == "none":
            return noisy
        if mode == "simplex":
            renormalize_rows(noisy)
        elif mode == "clip01":
            np.clip(noisy, 0.0, 1.0, out=noisy)
        elif mode == "sniff":
            if outputs.shape[1] == 1:
                np.maximum(noisy, 0.0, out=noisy)
            else:
                rows = _is_probability_row(outputs)
                if rows.any():
                    noisy[rows] = renormalize_rows(noisy[rows])
        return noisy

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None, row_keys: Any = None) -> np.ndarray:
        return self._noisy(outputs, rng, row_keys)


def _gaussian(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, std: float) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=dtype if dtype in _NATIVE_FLOATS else np.float64)
    noise *= std
    return noise


def _laplace(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, scale: float) -> np.ndarray:
    return rng.laplace(0.0, scale, size=shape)


@dataclass(frozen=True, repr=False)
class GaussianNoise(_AdditiveNoise):
    """Add N(0, std^2) noise to every value (IBM ART's GaussianNoise; ART calls ``std`` "scale").

    On probabilities the noisy rows are clipped at 0 and renormalised (see ``renormalize``).
    ``key``: a per-device secret for consistent noise (module docstring); None = fresh noise.
    """

    std: float
    renormalize: bool | str = "auto"
    key: bytes | None = None

    name: ClassVar[str] = "gaussian_noise"

    def __post_init__(self) -> None:
        _check_positive("std", self.std)
        _check_renormalize(self.renormalize)
        _check_key(self.key)
        object.__setattr__(self, "std", float(self.std))
        self._set_mode()

    def _noise_scale(self) -> float:
        return self.std

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        return _gaussian(shape, dtype, rng, self.std)

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None, row_keys: Any = None) -> np.ndarray:
        if self._mode == "none" and outputs.dtype in _NATIVE_FLOATS and self.key is None:  # the hot path, flat
            noisy = rng.standard_normal(outputs.shape, dtype=outputs.dtype)
            noisy *= self.std
            noisy += outputs
            return noisy
        return self._noisy(outputs, rng, row_keys)


@dataclass(frozen=True, repr=False)
class LaplaceNoise(_AdditiveNoise):
    """Add Laplace(0, scale) noise to every value (std = scale * sqrt(2)); see ClippedLaplace for a DP bound."""

    scale: float
    renormalize: bool | str = "auto"
    key: bytes | None = None

    name: ClassVar[str] = "laplace_noise"
    _distribution: ClassVar[str] = "laplace"

    def __post_init__(self) -> None:
        _check_positive("scale", self.scale)
        _check_renormalize(self.renormalize)
        _check_key(self.key)
        object.__setattr__(self, "scale", float(self.scale))
        self._set_mode()

    def _noise_scale(self) -> float:
        return self.scale

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        return _laplace(shape, dtype, rng, self.scale)


@dataclass(frozen=True, repr=False)
class LabelPreservingNoise(_AdditiveNoise):
    """Noise that never changes the top-1 class: add noise, project back, then restore the original argmax.

    After the noise (and the projection ``renormalize`` asks for), the value at the
    noisy argmax and the value at the original argmax are swapped (a permutation, so a
    renormalised row stays on the simplex), and any other entry that ties with the new
    maximum is lowered by one ulp. Hence ``argmax(out) == argmax(outputs)`` for every
    row (numpy's first-index tie rule), while the other scores are noisy.
    """

    std: float
    distribution: str = "gaussian"
    renormalize: bool | str = "auto"
    key: bytes | None = None

    name: ClassVar[str] = "label_preserving_noise"
    capacity_rule: ClassVar[str] = "unbounded: continuous noise (the top-1 label is kept exactly)"

    def __post_init__(self) -> None:
        _check_positive("std", self.std)
        _check_renormalize(self.renormalize)
        _check_key(self.key)
        if self.distribution not in ("gaussian", "laplace"):
            raise FilterError(f"expected distribution 'gaussian' or 'laplace', got {self.distribution!r}")
        object.__setattr__(self, "std", float(self.std))
        object.__setattr__(self, "_distribution", self.distribution)
        self._set_mode()

    def _noise_scale(self) -> float:
        return self.std if self.distribution == "gaussian" else self.std / math.sqrt(2.0)

    def _noise(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        if self.distribution == "gaussian":
            return _gaussian(shape, dtype, rng, self.std)
        return _laplace(shape, dtype, rng, self.std / math.sqrt(2.0))  # same standard deviation

    def apply(self, outputs: np.ndarray, rng: Any, *, user_id: Any = None, row_keys: Any = None) -> np.ndarray:
        noisy = self._noisy(outputs, rng, row_keys)
        rows = np.arange(len(outputs))
        label = outputs.argmax(axis=1)
        moved = noisy.argmax(axis=1)
        at_label = noisy[rows, label]
        noisy[rows, label] = noisy[rows, moved]
        noisy[rows, moved] = at_label
        top = noisy[rows, label][:, None]
        ties = noisy >= top
        ties[rows, label] = False
        if ties.any():
            noisy[ties] = np.nextafter(np.broadcast_to(top, noisy.shape)[ties], -np.inf)
        return noisy
