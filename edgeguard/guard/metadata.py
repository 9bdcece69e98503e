"""What a guarded file says about itself: provenance keys in its ``metadata_props``.

Every key starts with ``edgeguard.guard.``; values are strings (JSON for structures).
The source model's own keys (task_type, class_names, input_shape, pixel_range,
output_kind) are kept, so an app can still read the class names.

==================================  ===========================================================
key                                 value
==================================  ===========================================================
edgeguard.guard.format              "1"
edgeguard.guard.edgeguard_version   the edgeguard version that built the file
edgeguard.guard.filters             the pipeline spec (grammar of ``edgeguard bench --filters``)
edgeguard.guard.capacity_bits       bits per row, the failed-check sentinel counted ("inf": none):
                                    log2(2**b + 1) for a pipeline bound b (sentinel_capacity_bits)
edgeguard.guard.release             JSON: output name, dtype, shape, what a failed check gives
edgeguard.guard.input_dither        JSON: enabled, half_width, the dithered tensor's name
edgeguard.guard.random              "true" when the release is random (noise stages or dither)
edgeguard.guard.noise_input         JSON: the U(0,1) input the app must fill at every run, or null
edgeguard.guard.source_sha256       SHA-256 of the source model file (as ``model_sha256``)
edgeguard.guard.source_graph_sha256 SHA-256 of the source model's serialized graph
edgeguard.guard.source_outputs      JSON: the source graph's outputs (base64 ValueInfoProto)
edgeguard.guard.vet_report_sha256   SHA-256 of the vet report file (only with a report)
edgeguard.guard.vet_verdict         the report's verdict (only with a report)
==================================  ===========================================================
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from edgeguard.errors import GuardIntegrityError

__all__ = ["PREFIX", "FORMAT", "GuardMetadata", "edgeguard_version", "graph_sha256"]

PREFIX = "edgeguard.guard."
FORMAT = "1"


def edgeguard_version() -> str:
    """The installed edgeguard version (:mod:`edgeguard._version`)."""
    from edgeguard._version import __version__

    return __version__


def graph_sha256(graph: Any) -> str:
    """SHA-256 of a GraphProto's serialization (nodes, initializers, inputs, outputs, value_info)."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class GuardMetadata:
    """The provenance of one guarded file (see the module docstring for the keys)."""

    edgeguard_version: str
    filters: str
    capacity_bits: float
    release: dict[str, Any]
    input_dither: dict[str, Any]
    random: bool
    noise_input: dict[str, Any] | None
    source_sha256: str
    source_graph_sha256: str
    source_outputs: tuple[str, ...]  # base64 ValueInfoProto, in order
    vet_report_sha256: str | None = None
    vet_verdict: str | None = None

    def to_props(self) -> dict[str, str]:
        props = {
            "format": FORMAT,
            "edgeguard_version": self.edgeguard_version,
            "filters": self.filters,
            "capacity_bits": "inf" if math.isinf(self.capacity_bits) else repr(float(self.capacity_bits)),
            "release": json.dumps(self.release, sort_keys=True),
            "input_dither": json.dumps(self.input_dither, sort_keys=True),
            "random": "true" if self.random else "false",
            "noise_input": json.dumps(self.noise_input, sort_keys=True),
            "source_sha256": self.source_sha256,
            "source_graph_sha256": self.source_graph_sha256,
            "source_outputs": json.dumps(list(self.source_outputs)),
        }
        if self.vet_report_sha256 is not None:
            props["vet_report_sha256"] = self.vet_report_sha256
            props["vet_verdict"] = str(self.vet_verdict)
        return {PREFIX + key: value for key, value in props.items()}

    @classmethod
    def from_model(cls, proto: Any) -> "GuardMetadata":
        """Read the keys back; GuardIntegrityError when they are missing or malformed."""
        props = {
            entry.key[len(PREFIX) :]: entry.value for entry in proto.metadata_props if entry.key.startswith(PREFIX)
        }
        if not props:
            raise GuardIntegrityError(
                f"expected a guarded model ({PREFIX}* metadata keys), got none; make one with `edgeguard guard`"
            )
        if props.get("format") != FORMAT:
            raise GuardIntegrityError(f"expected {PREFIX}format {FORMAT!r}, got {props.get('format')!r}")
        try:
            capacity = props["capacity_bits"]
            return cls(
                edgeguard_version=props["edgeguard_version"],
                filters=props["filters"],
                capacity_bits=math.inf if capacity == "inf" else float(capacity),
                release=dict(json.loads(props["release"])),
                input_dither=dict(json.loads(props["input_dither"])),
                random={"true": True, "false": False}[props["random"]],
                noise_input=json.loads(props["noise_input"]),
                source_sha256=props["source_sha256"],
                source_graph_sha256=props["source_graph_sha256"],
                source_outputs=tuple(str(v) for v in json.loads(props["source_outputs"])),
                vet_report_sha256=props.get("vet_report_sha256"),
                vet_verdict=props.get("vet_verdict"),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise GuardIntegrityError(
                f"expected well-formed {PREFIX}* metadata, got {type(error).__name__} on {str(error)[:80]}; "
                "the file was edited after `edgeguard guard`: guard the source model again"
            ) from None

    def source_output_values(self) -> list[Any]:
        """The source graph's outputs as ValueInfoProto messages."""
        from onnx import ValueInfoProto

        values = []
        for text in self.source_outputs:
            value = ValueInfoProto()
            try:
                value.ParseFromString(base64.b64decode(text, validate=True))
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and binascii errors alike
                raise GuardIntegrityError(
                    f"expected base64 ValueInfoProto entries in {PREFIX}source_outputs, got an unreadable one; "
                    "the file was edited after `edgeguard guard`"
                ) from None
            values.append(value)
        return values

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgeguard_version": self.edgeguard_version,
            "filters": self.filters,
            "capacity_bits": None if math.isinf(self.capacity_bits) else self.capacity_bits,
            "release": self.release,
            "input_dither": self.input_dither,
            "random": self.random,
            "noise_input": self.noise_input,
            "source_sha256": self.source_sha256,
            "source_graph_sha256": self.source_graph_sha256,
            "vet_report_sha256": self.vet_report_sha256,
            "vet_verdict": self.vet_verdict,
        }


def encode_outputs(graph: Any) -> tuple[str, ...]:
    return tuple(base64.b64encode(v.SerializeToString(deterministic=True)).decode("ascii") for v in graph.output)
