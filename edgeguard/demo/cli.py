"""``edgeguard demo``: a thin click layer over :func:`edgeguard.demo.run_demo`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

__all__ = ["demo_command"]

_HELP = """Show the whole story on bundled models: the attack, vetting, and output filters.

\b
Loads an honest and a vicious Fashion-MNIST classifier shipped with edgeguard (small
ONNX files, see edgeguard/assets/manifest.json), and
  1. shows the attack: the vicious model's raw outputs, run through its provider's
     secret decoder, give back the private input images (attack.png), the honest
     model's do not, and filters stop it;
  2. vets both files (`edgeguard vet`) and prints the verdicts;
  3. prints what each output filter (none, softmax>round:2, gaussian:1, argmax) does
     to accuracy and leakage (`edgeguard bench`).

\b
Data: the Fashion-MNIST test set from $EDGEGUARD_FASHION_MNIST_DIR or
/usr/share/datasets/fashion-mnist when installed, else a 3000-image test subset
shipped with edgeguard. Nothing is downloaded.

\b
Files written to --out: attack.png, vet_honest.json, vet_vicious.json, filters.csv,
bench/ (full bench reports), summary.json, summary.txt.

\b
Exit codes:
  0  done, and the vet passed the honest model and flagged the vicious one
  2  error (missing or modified assets, unreadable data)
  3  done, but a verdict was not the expected one (see the summary)
  4  usage error
"""


def _progress(message: str) -> None:
    click.echo(f"[demo] {message}", err=True)


@click.command("demo", help=_HELP)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("edgeguard-demo"),
    show_default=True,
    help="Output folder (created if needed).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="CI mode: 3000 images, filters scored on 500, 1 attacker epoch; the verdicts are still real.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data splits and the vet.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime, torch and BLAS threads."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def demo_command(
    ctx: click.Context, out_dir: Path, quick: bool, seed: int, output_format: str, threads: int, quiet: bool
) -> int:
    # On a shared CPU, OpenMP threads that spin while waiting slow torch down many times (torch is not imported yet).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from edgeguard.demo.run import run_demo

    command = "edgeguard " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]) if sys.argv[1:2] == ["demo"] else None
    result = run_demo(
        out_dir,
        quick=quick,
        seed=seed,
        threads=threads,
        progress=None if quiet else _progress,
        bench_progress=not quiet,
        command=command,
    )
    click.echo(result.to_json() if output_format == "json" else result.to_text(), nl=False)
    if not result.as_expected:
        _progress("the verdicts were not the expected ones (exit code 3)")
    ctx.exit(result.exit_code)
    return result.exit_code  # pragma: no cover - ctx.exit raises
