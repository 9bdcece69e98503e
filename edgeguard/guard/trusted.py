"""Open a guarded file for SafeModel: trusted only after every check of :mod:`edgeguard.guard.inspect` passes.

:func:`open_guarded` re-runs the checks on the loaded proto, then describes the file's graph
in the terms SafeModel runs a graph by (a :class:`GuardedGraph` whose fusion holds every
stage, its release as the only output, and the one U(0, 1) noise input when present). The
capacity SafeModel reports is the recorded spec's, which ``stages_as_claimed`` proved is the
spec the graph computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeguard.errors import GuardIntegrityError
from edgeguard.filters import FilterPipeline, parse_filter_spec
from edgeguard.filters.fusion import FusedPipeline
from edgeguard.filters.onnx_graph import UNIFORM_INPUT, NoiseInput
from edgeguard.guard.build import GuardedGraph
from edgeguard.guard.inspect import InspectReport, inspect_proto
from edgeguard.guard.metadata import PREFIX

__all__ = ["TrustedGuarded", "is_guarded", "open_guarded"]


def is_guarded(proto: Any) -> bool:
    """Whether ``proto`` carries guarded-file metadata (``edgeguard.guard.*`` keys)."""
    return any(entry.key.startswith(PREFIX) for entry in proto.metadata_props)


@dataclass(frozen=True)
class TrustedGuarded:
    """A guarded file whose checks passed: its report, the source's task, the recorded filters, the graph."""

    report: InspectReport
    source_info: Any  # ModelInfo of the source model
    source_proto: Any
    pipeline: FilterPipeline
    graph: GuardedGraph


def open_guarded(proto: Any, *, path: str = "<model>") -> TrustedGuarded:
    """Check ``proto`` (a loaded guarded file) and describe it; GuardIntegrityError naming every failed check.

    The source model and its ModelInfo are the ones the checks derived (``report.source_proto``,
    ``report.source_info``), not derived a second time.
    """
    report = inspect_proto(proto, path=path)
    if not report.ok:
        failures = "; ".join(f"{check.name}: {check.detail}" for check in report.failures)
        raise GuardIntegrityError(
            f"expected a guarded file whose every check passes, got {failures}; run `edgeguard inspect {path}` "
            "and guard the source model again"
        )
    metadata = report.metadata
    source, info = report.source_proto, report.source_info
    pipeline = FilterPipeline(
        parse_filter_spec(metadata.filters).build(), input_kind=info.output_kind, task_type=info.task_type
    )
    noise: tuple[NoiseInput, ...] = ()
    if metadata.noise_input:
        noise = (NoiseInput(UNIFORM_INPUT, "u01", 0.0, int(metadata.noise_input["per_row"])),)
    terminal = metadata.release.get("dtype") == "int64"
    fusion = FusedPipeline(
        proto=None,
        fused=tuple(pipeline.filters),
        rest=None,
        release_name=str(metadata.release["name"]),
        raw_name=None,
        noise=noise,
        terminal=terminal,
        labels=False,
        gated=info.output_kind == "probabilities",
        checks_input=True,
        checks_release=True,
        op_types=frozenset(node.op_type for node in proto.graph.node),
        uniform_per_row=int(metadata.noise_input["per_row"]) if metadata.noise_input else 0,
    )
    graph = GuardedGraph(
        proto,
        fusion,
        metadata.input_dither.get("dithered_input"),
        fusion.release_name,
        None,
        noise,
        fusion.uniform_per_row,
    )
    return TrustedGuarded(report, info, source, pipeline, graph)
