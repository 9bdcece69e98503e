"""Guarded models: one ONNX file whose only output is the release, for any onnxruntime binding.

- :mod:`edgeguard.guard.build`: the one builder of guarded graphs (files and SafeModel);
- :mod:`edgeguard.guard.metadata`: the provenance keys a guarded file carries;
- :mod:`edgeguard.guard.api`: :func:`guard_model` writes a guarded file (atomically);
- :mod:`edgeguard.guard.inspect`: :func:`inspect_guarded` re-checks one.
"""

from edgeguard.filters.onnx_graph import UNIFORM_INPUT, uniform_noise
from edgeguard.guard.api import GuardResult, guard_model
from edgeguard.guard.build import GuardedGraph, build_guarded_graph, dither_half_width, guarded_feeds
from edgeguard.guard.inspect import GuardCheck, InspectReport, inspect_guarded
from edgeguard.guard.metadata import GuardMetadata

__all__ = [
    "guard_model",
    "GuardResult",
    "inspect_guarded",
    "InspectReport",
    "GuardCheck",
    "GuardMetadata",
    "build_guarded_graph",
    "GuardedGraph",
    "dither_half_width",
    "guarded_feeds",
    "uniform_noise",
    "UNIFORM_INPUT",
]
