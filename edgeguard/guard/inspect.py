"""``inspect_guarded``: read a guarded file's provenance back and re-check its structure.

The checks, each reported by name:

- ``metadata``: the ``edgeguard.guard.*`` keys are there and well formed;
- ``single_output``: the release is the graph's only output (no binding can fetch more);
- ``source_unchanged``: the source model's part of the graph (its nodes, initializers,
  inputs and outputs, the dither's rewiring undone) hashes to the recorded
  ``source_graph_sha256``;
- ``stages_as_claimed``: rebuilding the guarded graph from that source and the recorded
  spec (and dither flag) gives exactly the file's graph, opsets and provenance keys, so
  the appended stages and the capacity bound are the ones the metadata claims;
- with ``source=``: the source file's SHA-256 and graph hash are the recorded ones;
- with ``verdict=``: the vet report's hash is the recorded one, it names the source, and the
  recorded verdict is the one the decision rule re-derives from the report's own scores.

What it cannot show without ``source=``: a forger who edits the source weights *and*
rewrites the recorded graph hash passes the first three checks, since the file is then
consistent with itself. Binding the file to the model that was vetted needs the source
file (or its SHA-256 from the vet report) -- pass ``source=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.errors import EdgeguardError, GuardIntegrityError, ModelRefusedError
from edgeguard.guard.build import RESERVED_PREFIXES, _rewire
from edgeguard.guard.metadata import PREFIX, GuardMetadata, graph_sha256

__all__ = ["InspectReport", "GuardCheck", "inspect_guarded", "inspect_proto"]


@dataclass(frozen=True)
class GuardCheck:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class InspectReport:
    """The checks on one guarded file; ``ok`` when every one passed."""

    path: str
    checks: tuple[GuardCheck, ...]
    metadata: GuardMetadata | None = None
    capacity_bits: float | None = None  # trusted only when ok
    release_name: str | None = None
    input_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the source model as the file holds it, and its ModelInfo (None when it could not be read):
    #: what the checks derived, kept so that open_guarded does not derive it again
    source_proto: Any = field(default=None, repr=False, compare=False)
    source_info: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[GuardCheck]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "checks": [check.to_dict() for check in self.checks],
            "metadata": None if self.metadata is None else self.metadata.to_dict(),
        }


def _source_of(proto: Any, metadata: GuardMetadata) -> Any:
    """The source model as the guarded file holds it: appended parts removed, rewiring undone."""
    import onnx

    source = onnx.ModelProto()
    source.CopyFrom(proto)
    graph = source.graph
    keep = [node for node in graph.node if not node.name.startswith(RESERVED_PREFIXES)]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [init for init in graph.initializer if not init.name.startswith(RESERVED_PREFIXES)]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    inputs = [value for value in graph.input if not value.name.startswith(RESERVED_PREFIXES)]
    del graph.input[:]
    graph.input.extend(inputs)
    dithered = metadata.input_dither.get("dithered_input")
    if dithered:
        initializers = {init.name for init in graph.initializer}
        names = [value.name for value in graph.input if value.name not in initializers]
        if len(names) == 1:
            _rewire(graph, str(dithered), names[0])
    del graph.output[:]
    graph.output.extend(metadata.source_output_values())
    props = [entry for entry in source.metadata_props if not entry.key.startswith(PREFIX)]
    del source.metadata_props[:]
    source.metadata_props.extend(props)
    return source


def _first_difference(found: Any, expected: Any) -> str:
    if len(found.node) != len(expected.node):
        return f"the file has {len(found.node)} nodes, the claimed pipeline gives {len(expected.node)}"
    for index, (a, b) in enumerate(zip(found.node, expected.node)):
        if a != b:
            return f"node {index} is {a.op_type} {a.name!r}, the claimed pipeline gives {b.op_type} {b.name!r}"
    for what in ("initializer", "input", "output", "value_info"):
        if list(getattr(found, what)) != list(getattr(expected, what)):
            return f"the graph's {what}s differ from those the claimed pipeline gives"
    return "the graphs differ"


def inspect_proto(
    proto: Any,
    *,
    path: str = "<model>",
    source: str | os.PathLike | None = None,
    verdict: str | os.PathLike | None = None,
) -> InspectReport:
    """Check a loaded guarded ModelProto (see the module docstring)."""
    from edgeguard.guard.api import assemble_guarded
    from edgeguard.model import ModelInfo

    checks: list[GuardCheck] = []
    try:
        metadata = GuardMetadata.from_model(proto)
    except GuardIntegrityError as error:
        return InspectReport(path, (GuardCheck("metadata", False, str(error)),))
    checks.append(
        GuardCheck("metadata", True, f"spec {metadata.filters!r}, built by edgeguard {metadata.edgeguard_version}")
    )
    outputs = [value.name for value in proto.graph.output]
    single = outputs == [metadata.release.get("name")]
    checks.append(
        GuardCheck(
            "single_output",
            single,
            "the release is the only output"
            if single
            else f"expected one output {metadata.release.get('name')!r}, got {outputs[:8]}",
        )
    )
    source_proto = _source_of(proto, metadata)
    digest = graph_sha256(source_proto.graph)
    unchanged = digest == metadata.source_graph_sha256
    checks.append(
        GuardCheck(
            "source_unchanged",
            unchanged,
            "the source model's nodes and initializers hash as recorded"
            if unchanged
            else f"expected the source graph sha256 {metadata.source_graph_sha256[:16]}..., got {digest[:16]}...: "
            "the model's nodes or weights were edited",
        )
    )
    capacity = None
    info = None
    try:
        info = ModelInfo.from_model(source_proto)
        vet = (metadata.vet_report_sha256, metadata.vet_verdict) if metadata.vet_report_sha256 else None
        rebuilt, claimed, _ = assemble_guarded(
            source_proto,
            info,
            metadata.filters,
            source_sha256=metadata.source_sha256,
            input_dither=bool(metadata.input_dither.get("enabled")),
            vet=vet,
        )
    except EdgeguardError as error:
        checks.append(GuardCheck("stages_as_claimed", False, f"the claimed pipeline cannot be rebuilt: {error}"))
    else:
        found_props = {e.key: e.value for e in proto.metadata_props if e.key.startswith(PREFIX)}
        expected_props = {e.key: e.value for e in rebuilt.metadata_props if e.key.startswith(PREFIX)}
        for props in (found_props, expected_props):
            props.pop(PREFIX + "edgeguard_version", None)
        same_graph = rebuilt.graph == proto.graph
        same_opsets = list(rebuilt.opset_import) == list(proto.opset_import)
        if same_graph and same_opsets and found_props == expected_props:
            capacity = claimed.capacity_bits
            detail = f"the appended stages are exactly {metadata.filters!r} (capacity {claimed.to_props()[PREFIX + 'capacity_bits']} bits)"
            checks.append(GuardCheck("stages_as_claimed", True, detail))
        else:
            if not same_graph:
                detail = _first_difference(proto.graph, rebuilt.graph)
            elif not same_opsets:
                detail = "the opset imports differ from those the claimed pipeline gives"
            else:
                keys = sorted(
                    k for k in found_props.keys() | expected_props.keys() if found_props.get(k) != expected_props.get(k)
                )
                detail = f"the provenance keys {keys} differ from the rebuilt ones"
            checks.append(GuardCheck("stages_as_claimed", False, detail))
    if source is not None:
        checks.append(_check_source_file(source, metadata))
    if verdict is not None:
        checks.append(_check_verdict(verdict, metadata))
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value.name for value in proto.graph.input if value.name not in initializers]
    return InspectReport(
        path,
        tuple(checks),
        metadata,
        capacity if all(check.passed for check in checks) else None,
        metadata.release.get("name"),
        inputs[0] if len(inputs) == 1 else None,
        source_proto=source_proto,
        source_info=info,
    )


def _check_source_file(source: str | os.PathLike, metadata: GuardMetadata) -> GuardCheck:
    from edgeguard.model import load_model

    loaded = load_model(source, require_info=False)
    if loaded.sha256 != metadata.source_sha256:
        return GuardCheck(
            "source_file",
            False,
            f"expected the source sha256 {metadata.source_sha256[:16]}..., got {loaded.sha256[:16]}... for {source}",
        )
    if graph_sha256(loaded.proto.graph) != metadata.source_graph_sha256:
        return GuardCheck("source_file", False, f"{source} has the recorded sha256 but another graph")
    return GuardCheck("source_file", True, f"{Path(source).name} is the recorded source (sha256 and graph)")


def _check_verdict(verdict: str | os.PathLike, metadata: GuardMetadata) -> GuardCheck:
    from edgeguard.guard.metadata import edgeguard_version
    from edgeguard.verdicts.verify import read_report, verdict_as_run, verify_report

    try:
        read = read_report(verdict)  # the one reader of vet reports; its digest is of the file's bytes
    except ModelRefusedError as error:
        return GuardCheck("vet_report", False, str(error))
    if read.sha256 != metadata.vet_report_sha256:
        return GuardCheck(
            "vet_report",
            False,
            f"expected the recorded vet report {str(metadata.vet_report_sha256)[:16]}..., got {read.sha256[:16]}...",
        )
    try:  # re-decided from its own scores (with the thresholds it carries: the file may predate this edgeguard)
        verified = verify_report(
            read.record, model_sha256=metadata.source_sha256, version=edgeguard_version(), accept_thresholds=True
        )
    except ModelRefusedError as error:
        return GuardCheck("vet_report", False, str(error))
    if verdict_as_run(verified) != metadata.vet_verdict:
        return GuardCheck(
            "vet_report",
            False,
            f"expected the recorded verdict {metadata.vet_verdict!r} to follow from the report, got "
            f"{verdict_as_run(verified)!r}; guard the source again with its report",
        )
    return GuardCheck("vet_report", True, f"verdict {metadata.vet_verdict!r} for the recorded source, re-decided")


def inspect_guarded(
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    verdict: str | os.PathLike | None = None,
) -> InspectReport:
    """Read ``path`` (with edgeguard's loader and its checks) and run every check on it."""
    from edgeguard.model import load_model

    loaded = load_model(path, require_info=False, prepare=False)  # the file exactly as written
    return inspect_proto(loaded.proto, path=str(path), source=source, verdict=verdict)
