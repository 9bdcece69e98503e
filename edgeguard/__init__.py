"""edgeguard: run a provider's classifier on the device, and share only safe outputs."""

from edgeguard._version import __version__
from edgeguard.errors import *  # noqa: F401,F403
from edgeguard.errors import __all__ as _error_names
from edgeguard.filters import (
    Argmax,
    ClassLabels,
    ClippedLaplace,
    FilterPipeline,
    GaussianNoise,
    HighConfidence,
    LabelConfidence,
    LabelPreservingNoise,
    LaplaceNoise,
    OutputFilter,
    PrivacyAccountant,
    ReverseSigmoid,
    Round,
    Rounded,
    Sigmoid,
    Softmax,
    TopK,
    Truncate,
    device_secret,
    pipeline_capacity_bits,
)
from edgeguard.guard import GuardResult, InspectReport, guard_model, inspect_guarded
from edgeguard.model import LoadedModel, ModelInfo, load_model, model_sha256
from edgeguard.safe_model import SafeModel, ViciousModelWarning
from edgeguard.vectors import VectorSet, load_vectors
from edgeguard.vetting import VetReport, vet

__all__ = [
    "__version__",
    *_error_names,
    "SafeModel",
    "ViciousModelWarning",
    "model_sha256",
    "load_model",
    "LoadedModel",
    "ModelInfo",
    "OutputFilter",
    "FilterPipeline",
    "pipeline_capacity_bits",
    "Softmax",
    "Sigmoid",
    "Round",
    "Truncate",
    "TopK",
    "Argmax",
    "LabelConfidence",
    "GaussianNoise",
    "LaplaceNoise",
    "LabelPreservingNoise",
    "ClippedLaplace",
    "PrivacyAccountant",
    "Rounded",
    "HighConfidence",
    "ReverseSigmoid",
    "ClassLabels",
    "device_secret",
    "vet",
    "VetReport",
    "VectorSet",
    "load_vectors",
    "guard_model",
    "GuardResult",
    "inspect_guarded",
    "InspectReport",
]
