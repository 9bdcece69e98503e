"""``guard_model``: write a guarded ONNX file whose only output is the release."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeguard.errors import FilterError, GuardError, ModelRefusedError
from edgeguard.filters import FilterPipeline, FilterSpec, parse_filter_spec, sentinel_capacity_bits
from edgeguard.filters.onnx_graph import UNIFORM_INPUT
from edgeguard.guard.build import GuardedGraph, build_guarded_graph, dither_half_width
from edgeguard.guard.metadata import PREFIX, GuardMetadata, edgeguard_version, encode_outputs, graph_sha256
from edgeguard.verdicts.verify import verdict_as_run, verify_report

__all__ = ["GuardResult", "guard_model", "assemble_guarded", "write_atomic"]


@dataclass(frozen=True)
class GuardResult:
    """What ``guard_model`` wrote: the file, its provenance, and the release's name."""

    path: Path
    metadata: GuardMetadata
    input_name: str
    release_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "input": self.input_name,
            **self.metadata.to_dict(),
        }


def _spec(filters: str | FilterSpec) -> FilterSpec:
    spec = (
        filters if isinstance(filters, FilterSpec) else parse_filter_spec(filters) if isinstance(filters, str) else None
    )
    if spec is None:
        raise GuardError(
            f"expected a filter spec string such as 'softmax>round:2', got {type(filters).__name__}; a guarded "
            "file records its pipeline as a spec, so filter objects cannot be guarded"
        )
    if spec.is_raw:
        raise GuardError(
            "expected at least one filter stage, got 'none'; a guarded file never releases raw outputs "
            "(use e.g. --filters argmax or softmax>round:2)"
        )
    return spec


def _release(built: GuardedGraph, num_classes: int) -> dict[str, Any]:
    fusion = built.fusion
    if fusion.terminal:
        return {"name": built.release_name, "dtype": "int64", "shape": ["batch"], "failed_check": -1}
    return {"name": built.release_name, "dtype": "float32", "shape": ["batch", num_classes], "failed_check": "NaN"}


def assemble_guarded(
    source: Any,
    info: Any,
    filters: str | FilterSpec,
    *,
    source_sha256: str,
    input_dither: bool = False,
    vet: tuple[str, str] | None = None,
) -> tuple[Any, GuardMetadata, GuardedGraph]:
    """The guarded ModelProto of ``source`` (not modified), with its metadata (``vet``: report sha, verdict)."""
    spec = _spec(filters)
    if any(entry.key.startswith(PREFIX) for entry in source.metadata_props):
        raise GuardError(
            f"expected an unguarded model, got one with {PREFIX}* metadata; guard the provider's original model"
        )
    try:
        pipeline = FilterPipeline(spec.build(), input_kind=info.output_kind, task_type=info.task_type)
    except FilterError as error:
        raise GuardError(f"expected filters that fit this model, got {spec.text!r}: {error}") from None
    built = build_guarded_graph(source, info, pipeline, input_dither=input_dither, noise="uniform")
    capacity = sentinel_capacity_bits(pipeline.capacity_bits(info.num_classes))  # the failed-check rows count too
    metadata = GuardMetadata(
        edgeguard_version=edgeguard_version(),
        filters=spec.text,
        capacity_bits=capacity,
        release=_release(built, info.num_classes),
        input_dither={
            "enabled": bool(input_dither),
            "half_width": dither_half_width(info.pixel_range) if input_dither else 0.0,
            "dithered_input": built.dithered_input,
        },
        random=bool(pipeline.is_random or input_dither),
        noise_input=(
            {"name": UNIFORM_INPUT, "dtype": "float64", "per_row": built.uniform_per_row, "distribution": "U(0,1)"}
            if built.uniform_per_row
            else None
        ),
        source_sha256=source_sha256,
        source_graph_sha256=graph_sha256(source.graph),
        source_outputs=encode_outputs(source.graph),
        vet_report_sha256=vet[0] if vet else None,
        vet_verdict=vet[1] if vet else None,
    )
    proto = built.proto
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto, metadata, built


def _read_vet_report(
    path: str | os.PathLike,
    source_sha256: str,
    *,
    key: bytes | str | os.PathLike | None = None,
    accept_thresholds: bool = False,
) -> tuple[str, str]:
    """(sha256 of the report file, the verdict it supports), checked exactly as SafeModel(verdict=...) does.

    :func:`edgeguard.verdicts.verify.verify_report`: a full report for this file, made by this
    edgeguard with the installed thresholds, whose verdict the decision rule re-derives from its
    own scores, signed under ``key`` when one is given. The recorded verdict is the re-derived one,
    "honest" only when the vet also checked batch size 1.
    """
    try:
        verified = verify_report(
            path, model_sha256=source_sha256, version=edgeguard_version(), key=key, accept_thresholds=accept_thresholds
        )
    except ModelRefusedError as error:
        raise GuardError(
            f"{error} (edgeguard guard --verdict records only a vet report that holds up; run `edgeguard vet MODEL "
            "--format json --output-file REPORT.json` on this very file)"
        ) from None
    return verified.sha256, verdict_as_run(verified)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (nothing on failure)."""
    folder = path.parent
    if not folder.is_dir():
        raise GuardError(f"expected an existing folder for the output, got {folder}; create it first")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise GuardError(
            f"expected a writable folder for the output, got {folder} ({type(error).__name__}); pick another --out"
        ) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise GuardError(
                f"expected to write {path}, got {type(error).__name__}: {error.strerror}; nothing was written"
            ) from None
        raise


def guard_model(
    model: str | os.PathLike,
    filters: str | FilterSpec,
    out: str | os.PathLike,
    *,
    verdict: str | os.PathLike | None = None,
    input_dither: bool = False,
    verdict_key: bytes | str | os.PathLike | None = None,
    accept_thresholds: bool = False,
) -> GuardResult:
    """Write ``out``: ``model`` with ``filters`` and the input checks in its graph, the release its only output.

    ``filters`` is a spec of the ``edgeguard bench --filters`` grammar; every stage must
    run in the graph (refused otherwise, with the stage's name and the reason).
    ``verdict``: a vet report (JSON) of this very file, checked as ``SafeModel(verdict=...)``
    checks it (the verdict re-derived from the report's scores with the installed thresholds;
    a hand-made or edited report is refused) and recorded by hash with the re-derived verdict;
    a "vicious" verdict is refused unless the pipeline releases labels only (at most log2 K bits).
    ``verdict_key``: the reviewer's key (bytes or a key file, ``edgeguard vet --sign-key``); the
    report must then carry a valid signature under it. ``accept_thresholds``: accept a report made
    with other thresholds or another edgeguard version (still re-decided from its own scores).
    ``input_dither``: add uniform noise of +-half a grey level to the input in the graph.
    Nothing is written when anything fails (temporary file, then rename).
    """
    from edgeguard.model import load_model

    source_path = Path(model)
    out_path = Path(out)
    if out_path.exists() and source_path.exists() and os.path.samefile(out_path, source_path):
        raise GuardError(f"expected --out to differ from the source model, got {out_path} twice; pick a new file name")
    loaded = load_model(source_path)
    info = loaded.info
    if verdict is None and verdict_key is not None:
        raise GuardError("expected a vet report to check with verdict_key, got none; pass verdict=REPORT, or drop verdict_key")
    vet = (
        _read_vet_report(verdict, loaded.sha256, key=verdict_key, accept_thresholds=accept_thresholds)
        if verdict is not None
        else None
    )
    proto, metadata, built = assemble_guarded(
        loaded.proto, info, filters, source_sha256=loaded.sha256, input_dither=input_dither, vet=vet
    )
    labels_only = sentinel_capacity_bits(math.log2(max(info.num_classes, 2)))  # argmax, its sentinel counted
    if vet is not None and vet[1] == "vicious" and not metadata.capacity_bits <= labels_only:
        raise GuardError(
            f"expected a model that vetting did not flag, got a vicious verdict; guard it with a labels-only "
            f"pipeline ('argmax', at most log2(K + 1) = {labels_only:.3g} bits with the sentinel), got "
            f"{metadata.filters!r} ({metadata.capacity_bits:g} bits)"
        )
    _check_structure(proto)
    try:
        data = proto.SerializeToString()
    except Exception as error:  # noqa: BLE001 - protobuf refuses > 2 GiB
        raise GuardError(f"expected a guarded model under 2 GiB, got {type(error).__name__}") from None
    write_atomic(out_path, data)
    return GuardResult(out_path, metadata, info.input_name, built.release_name)


def _check_structure(proto: Any) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except Exception as error:  # noqa: BLE001 - onnx's ValidationError
        raise GuardError(
            f"expected the guarded graph to pass onnx.checker, got: {str(error).splitlines()[0][:300]}; "
            "report this with the model's opset"
        ) from None
