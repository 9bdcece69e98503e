"""``edgeguard guard`` and ``edgeguard inspect``: thin bodies over :mod:`edgeguard.guard`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeguard.verdicts import EXIT_FLAGGED, EXIT_OK

__all__ = ["guard_command", "inspect_command"]

_GUARD_HELP = """Write GUARDED.onnx: MODEL with the output filters and input checks inside its graph.

\b
The guarded file's only output is the release ("release"); the model's own outputs
become internal values that no onnxruntime binding can fetch. A failed input check
(pixel outside the declared range, NaN, inf) makes the whole release NaN (label
indices: -1). Run the file with any onnxruntime (Python, JavaScript, C, Java, Swift).
Stages that cannot run inside a graph (consistent noise, clipped_laplace,
label_preserving) are refused with the reason; nothing is written on any error.

\b
Example:  edgeguard guard model.onnx --filters 'softmax>round:2' --out guarded.onnx
"""


@click.command("guard", help=_GUARD_HELP)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--filters", "filters", required=True, help="Pipeline spec, grammar of `edgeguard bench --filters`.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The guarded file.")
@click.option(
    "--verdict",
    "verdict",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A vet report (JSON) of MODEL: checked as SafeModel(verdict=...) does (re-decided from its scores), "
    "recorded by hash with its verdict.",
)
@click.option(
    "--verdict-key",
    "verdict_key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The reviewer's key file (`edgeguard vet --sign-key`): the report must be signed with it.",
)
@click.option(
    "--accept-thresholds",
    "accept_thresholds",
    is_flag=True,
    help="Accept a report made with other thresholds or another edgeguard (still re-decided from its scores).",
)
@click.option(
    "--input-dither",
    "input_dither",
    is_flag=True,
    help="Add uniform noise of +-half a grey level to the input, in the graph.",
)
def guard_command(
    model: Path,
    filters: str,
    out: Path,
    verdict: Path | None,
    verdict_key: Path | None,
    accept_thresholds: bool,
    input_dither: bool,
) -> int:
    from edgeguard.guard import guard_model

    result = guard_model(
        model,
        filters,
        out,
        verdict=verdict,
        verdict_key=verdict_key,
        accept_thresholds=accept_thresholds,
        input_dither=input_dither,
    )
    click.echo(json.dumps(result.to_dict(), indent=2))
    click.echo(f"wrote {out} (release {result.release_name!r}, {result.metadata.filters})", err=True)
    return EXIT_OK


_INSPECT_HELP = """Read a guarded file's provenance and re-check its structure.

\b
Checks: the release is the only output; the source model's nodes and weights hash as
recorded; rebuilding from the recorded spec gives exactly the file's graph (so the
stages and the capacity bound are those claimed). --source binds the file to the
source model (its SHA-256, e.g. the one a vet report names). Exit 0 when every check
passes, 1 when one fails, 2 on an error.
"""


@click.command("inspect", help=_INSPECT_HELP)
@click.argument("guarded", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--source",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The source model the file claims to guard.",
)
@click.option(
    "--verdict",
    "verdict",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The vet report the file claims to record.",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def inspect_command(guarded: Path, source: Path | None, verdict: Path | None, output_format: str) -> int:
    from edgeguard.guard import inspect_guarded

    report = inspect_guarded(guarded, source=source, verdict=verdict)
    if output_format == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for check in report.checks:
            click.echo(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        click.echo(f"{guarded}: {'every check passed' if report.ok else 'FAILED'}")
    click.get_current_context().exit(EXIT_OK if report.ok else EXIT_FLAGGED)
    return EXIT_OK  # pragma: no cover - exit raises
