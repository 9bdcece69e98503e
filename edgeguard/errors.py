"""The exceptions edgeguard raises.

Every error derives from :class:`EdgeguardError` *and* from the matching built-in, so
callers can catch either ``EdgeguardError`` or e.g. ``ValueError``. Messages follow the
pattern "expected X, got Y" followed by how to fix it.
"""

from __future__ import annotations

__all__ = [
    "EdgeguardError",
    "InvalidInputError",
    "DataError",
    "DataNotFoundError",
    "ModelLoadError",
    "ModelTooLargeError",
    "UnsafeModelError",
    "UnsupportedOpError",
    "FilterError",
    "PrivacyBudgetExceededError",
    "ModelRefusedError",
    "InferenceError",
    "ConfigError",
    "MissingDependencyError",
    "GuardError",
    "GuardIntegrityError",
]


class EdgeguardError(Exception):
    """Root of every error edgeguard raises."""


class InvalidInputError(EdgeguardError, ValueError):
    """An input array has the wrong shape, dtype or range, or holds NaN/inf."""


class DataError(EdgeguardError, ValueError):
    """A dataset or probe set is malformed (bad IDX header, labels do not match images...)."""


class DataNotFoundError(EdgeguardError, FileNotFoundError):
    """A dataset or probe set is not where it was expected."""


class ModelLoadError(EdgeguardError, ValueError):
    """An ONNX file cannot be read, checked or run."""


class ModelTooLargeError(ModelLoadError):
    """An ONNX file declares tensors or shapes above the size limits (refused before allocating)."""


class UnsafeModelError(EdgeguardError, ValueError):
    """An ONNX file must not be loaded at all (e.g. external data escaping its folder)."""


class UnsupportedOpError(EdgeguardError, ValueError):
    """The ONNX-to-torch interpreter met an operator (or attribute) it does not implement."""


class FilterError(EdgeguardError, ValueError):
    """An output filter is misconfigured or does not fit the model's outputs."""


class PrivacyBudgetExceededError(EdgeguardError, RuntimeError):
    """A privacy budget is spent: the release was refused."""


class ModelRefusedError(EdgeguardError, PermissionError):
    """The vet policy refuses to run a model that was flagged as vicious."""


class InferenceError(EdgeguardError, RuntimeError):
    """onnxruntime failed while running the model; no output was released."""


class ConfigError(EdgeguardError, ValueError):
    """A setting is out of range or of the wrong type (settings dataclasses, CLI options, settings files)."""


class GuardError(EdgeguardError, ValueError):
    """A model or pipeline cannot be made into a guarded ONNX file (nothing was written)."""


class GuardIntegrityError(GuardError):
    """A guarded ONNX file does not match what its metadata claims (edited after ``edgeguard guard``)."""


class MissingDependencyError(EdgeguardError, ImportError):
    """An optional package that a feature needs is not installed (the message names the extra to install)."""
