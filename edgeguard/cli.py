"""The ``edgeguard`` command line: a click group that commands register on.

Conventions for every command: data (reports) on stdout, progress and logs on stderr;
exit code 2 for an edgeguard error (bad file, bad data), 4 for a usage error (click's own
usage errors are mapped from 2 to 4 so that 2 always means "error").
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from edgeguard._version import __version__
from edgeguard.errors import EdgeguardError
from edgeguard.verdicts import EXIT_ERROR, EXIT_FLAGGED, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE
from edgeguard.vetting.decoders import DECODER_NAMES
from edgeguard.vetting.settings import FINETUNE_STATISTICS, OPTIMISERS, TESTS

__all__ = ["main", "EXIT_OK", "EXIT_FLAGGED", "EXIT_ERROR", "EXIT_INCONCLUSIVE", "EXIT_USAGE"]



class _Group(click.Group):
    """A click group whose usage errors exit with 4, and every error (edgeguard's or not) with 2.

    Exit code 1 means "flagged", so a crash must never produce it: any unexpected exception
    becomes one line on stderr and exit code 2 (``--debug`` prints the traceback too).
    """

    _debug = False

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        self._debug = False  # set by the group callback when --debug is given
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            error.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as error:
            error.show()
            sys.exit(EXIT_ERROR)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(130)
        except EdgeguardError as error:
            if self._debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as error:  # a bug or an unforeseen input: never exit 1 ("flagged") or dump a traceback
            if self._debug:
                traceback.print_exc(file=sys.stderr)
            message = " ".join(str(error).split())[:300] or "(no message)"
            click.echo(
                f"error: unexpected {type(error).__name__}: {message} (nothing was released; run with "
                "`edgeguard --debug ...` for the traceback and report it)",
                err=True,
            )
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgeguard")
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v info, -vv debug.")
@click.option("--debug", is_flag=True, help="Print the traceback of an error (exit code stays 2).")
def main(verbose: int, debug: bool) -> None:
    """Run a provider's ONNX classifier on the device and share only safe outputs.

    Exit codes: 0 ok/passed, 1 flagged, 2 error, 3 inconclusive, 4 usage error.
    """
    command = click.get_current_context().command
    if isinstance(command, _Group):
        command._debug = debug
    level = logging.WARNING if verbose == 0 else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True)


def _parse_floats(text: str | None, count: int, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected {count} comma-separated numbers for {what}, got {text!r}") from None
    if len(values) != count:
        raise click.BadParameter(f"expected {count} comma-separated numbers for {what}, got {text!r}")
    return values


def _parse_class_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    import json

    if text.strip().startswith("["):
        try:
            return tuple(str(name) for name in json.loads(text))
        except json.JSONDecodeError:
            raise click.BadParameter(f"expected a JSON list or comma-separated class names, got {text!r}") from None
    return tuple(name.strip() for name in text.split(","))


_VET_HELP = """Vet MODEL (an ONNX classifier) before any of its outputs is shared.

\b
MODEL may be several files, folders (every *.onnx below) or globs ("zoo/**/*.onnx"):
then one report per model goes to --output-dir, a summary table (or JSON with
--format json, one SARIF log with --format sarif) to stdout, a progress bar to
stderr; --jobs N vets N models at a time, --ray auto|ADDRESS on a Ray cluster.

\b
Runs a static audit of the file (nothing in it runs before that; ops outside those
exported classifiers use are named), then a consistency test (batch 1 vs batched), a
float64 re-evaluation (outputs that depend on float32 rounding), a continuity test
(sub-quantum dither, 8-bit re-quantisation, 1% brightness) and a leakage audit: several
client-side decoders fitted on the outputs of clean and augmented probe images, compared
with an architecture-matched honest twin trained here (--no-twin: none; --reference-model
/ --reference-data: yours). The verdict is honest only when every check ran and passed
and the upper 95% bound of the excess leakage is below its margin; vicious when a check
fails hard or the lower bound exceeds it; else inconclusive, with the reasons.
--release SPEC audits what SafeModel releases with those filters; --sign-key FILE signs
the report. The paper's fine-tune test runs with --tests finetune. The --leakage-* knobs
default to the settings the thresholds were calibrated with.

\b
--probe-data PROBE is labelled data of the claimed task: a folder with one
subfolder per class (named like the model's classes, or by index), an .npz with x
and y, or a folder with an IDX pair. It is resized and scaled from the model's
metadata (override with --input-shape / --pixel-range / --class-names). 1000
images (100 per class) are enough; the leakage audit needs at least 200.

\b
Exit codes:
  0  passed (honest)
  1  flagged (vicious)
  2  error (unreadable model or probe set, or a critical finding: file refused)
  3  inconclusive (probe smaller than calibrated or missing classes, a check could
     not run or did not pass, no honest twin, an interval straddles its margin,
     or high-severity findings blind the tests)
  4  usage error (bad option)
Several models: the worst code of any model, in the order 2 > 1 > 3 > 0
(an error is never hidden by a flagged or inconclusive model elsewhere).
"""


@main.command("vet", help=_VET_HELP)
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--probe-data", "-p", "probe", required=True, type=click.Path(path_type=str), help="Probe set.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Report format; sarif: SARIF 2.1.0 for code scanning.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Write one report per model here (named after its path); stdout gets the summary.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Models vetted at a time.")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS", help="Vet on Ray (pip install 'edgeguard[ray]').")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Keep finished vets here and reuse them (keyed by model and probe contents and settings).",
)
@click.option(
    "--output",
    "-o",
    "output_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Write the report here instead of stdout.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the probe splits and fine-tune batches.")
@click.option(
    "--tests",
    "tests",
    type=click.Choice(TESTS),
    multiple=True,
    help="Run only these checks (repeatable). Default: all but finetune.",
)
@click.option(
    "--probe-limit", type=click.IntRange(min=1), help="Use a seeded random subset of this many probe samples."
)
@click.option(
    "--min-per-class",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Fewest probe samples per class for a verdict.",
)
@click.option("--class-names", help="Class names, comma-separated or a JSON list (overrides the metadata).")
@click.option("--input-shape", help="One sample's input shape: C,H,W for images, F for vectors (overrides the metadata).")
@click.option(
    "--pixel-range", "--input-range", "pixel_range", help="Model input range LOW,HIGH (overrides the metadata)."
)
@click.option("--input-layout", type=click.Choice(["NCHW", "NHWC"]), help="Image layout, when the graph leaves it ambiguous.")
@click.option(
    "--model-output",
    "output",
    metavar="NAME",
    help="The graph output to vet, by name (API: output=; --output is the report file). Default: the first "
    "(N, K) scores, else a ZipMap, else an int64 label.",
)
@click.option(
    "--label-column", default="label", show_default=True, help="Label column of a .csv / .parquet vector probe set."
)
@click.option(
    "--output-kind",
    type=click.Choice(["logits", "probabilities"]),
    help="What the model outputs (overrides the metadata).",
)
@click.option(
    "--task-type", type=click.Choice(["multiclass", "multilabel"]), help="Claimed task (overrides the metadata)."
)
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="A thresholds JSON (default: the packaged one).",
)
@click.option(
    "--max-tensor-bytes",
    type=click.IntRange(min=1),
    default=1 << 30,
    show_default=True,
    help="Refuse files declaring larger tensors.",
)
@click.option("--finetune-steps", type=click.IntRange(min=1), help="Fine-tune steps.")
@click.option(
    "--finetune-learning-rate", "--finetune-lr", "finetune_learning_rate",
    type=click.FloatRange(min=0, min_open=True), help="Fine-tune learning rate.",
)
@click.option("--finetune-optimiser", type=click.Choice(OPTIMISERS), help="Fine-tune optimiser.")
@click.option("--finetune-batch-size", type=click.IntRange(min=1), help="Fine-tune mini-batch size.")
@click.option("--finetune-train-samples", type=click.IntRange(min=1), help="Probe samples to fine-tune on.")
@click.option("--finetune-eval-samples", type=click.IntRange(min=1), help="Held-out probe samples to compare on.")
@click.option("--finetune-statistic", type=click.Choice(FINETUNE_STATISTICS), help="Fine-tune statistic.")
@click.option(
    "--leakage-decoders", type=click.Choice(DECODER_NAMES), multiple=True,
    help="Client-side decoders of the leakage audit (repeatable; the statistic is the best of them).",
)
@click.option("--leakage-augmentations", type=click.IntRange(min=1), help="Fitting copies of each augmentation kind.")
@click.option("--leakage-max-fit", type=click.IntRange(min=50), help="Most fitting rows per fold.")
@click.option("--leakage-neighbours", type=click.IntRange(min=1), help="k of the k-NN decoder.")
@click.option(
    "--leakage-ridge-alpha", "--leakage-alpha", "leakage_ridge_alpha",
    type=click.FloatRange(min=0, min_open=True), help="Ridge penalty of the kernel ridge decoder.",
)
@click.option("--leakage-bootstrap", type=click.IntRange(min=0), help="Bootstrap rounds of the 95% intervals.")
@click.option(
    "--twin/--no-twin", default=True, show_default=True,
    help="Train an architecture-matched honest twin to compare the leakage with (without one: never honest).",
)
@click.option(
    "--sign-key", type=click.Path(dir_okay=False, exists=True, path_type=str),
    help="Sign the report with this secret key file (HMAC-SHA256; SafeModel(verdict_key=FILE) checks it).",
)
@click.option(
    "--augment-seed",
    type=int,
    help="Seed of the probe augmentations (default: a fresh one from the OS, recorded in the report).",
)
@click.option(
    "--release",
    metavar="SPEC",
    help="Also audit exactly what SafeModel releases with these filters (e.g. 'softmax>round:2').",
)
@click.option(
    "--reference-model",
    "reference_models",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=str),
    help="An honest model of the same architecture to compare leakage with (repeatable).",
)
@click.option(
    "--reference-data",
    type=click.Path(exists=True, path_type=str),
    help="Labelled data on which the vetted graph is re-initialised and trained honestly as a reference.",
)
@click.option("--reference-steps", type=click.IntRange(min=1), help="Training steps of the --reference-data reference.")
@click.option(
    "--reference-max-gmac",
    type=click.FloatRange(min=0, min_open=True),
    help="Largest estimated training cost (GMAC, from the graph: MACs per sample x steps x batch x 3) of the "
    "trained honest twin; costlier graphs get none (pass --reference-model instead).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def vet_command(
    ctx: click.Context,
    models: tuple[str, ...],
    probe: str,
    output_format: str,
    output_dir: str | None,
    jobs: int,
    ray_address: str | None,
    cache_dir: str | None,
    output_file: str | None,
    seed: int,
    tests: tuple[str, ...],
    probe_limit: int | None,
    min_per_class: int,
    class_names: str | None,
    input_shape: str | None,
    pixel_range: str | None,
    input_layout: str | None,
    output: str | None,
    label_column: str,
    output_kind: str | None,
    task_type: str | None,
    thresholds_file: str | None,
    max_tensor_bytes: int,
    finetune_steps: int | None,
    finetune_learning_rate: float | None,
    finetune_optimiser: str | None,
    finetune_batch_size: int | None,
    finetune_train_samples: int | None,
    finetune_eval_samples: int | None,
    finetune_statistic: str | None,
    leakage_decoders: tuple[str, ...],
    leakage_augmentations: int | None,
    leakage_max_fit: int | None,
    leakage_neighbours: int | None,
    leakage_ridge_alpha: float | None,
    leakage_bootstrap: int | None,
    twin: bool,
    sign_key: str | None,
    augment_seed: int | None,
    release: str | None,
    reference_models: tuple[str, ...],
    reference_data: str | None,
    reference_steps: int | None,
    reference_max_gmac: float | None,
    quiet: bool,
) -> int:
    from edgeguard.vetting.api import DEFAULT_TESTS
    from edgeguard.vetting.many import run_vet_command
    from edgeguard.vetting.probe import parse_shape

    shape = _parse_shape_option(input_shape, parse_shape)
    pixels = _parse_floats(pixel_range, 2, "--pixel-range")
    names = _parse_class_names(class_names)
    knobs = dict(  # edgeguard.vet's keyword arguments
        seed=seed,
        tests=list(tests or DEFAULT_TESTS),
        probe_limit=probe_limit,
        min_per_class=min_per_class,
        class_names=names,
        input_shape=shape,
        pixel_range=pixels,
        input_layout=input_layout,
        output=output,
        label_column=label_column,
        output_kind=output_kind,
        task_type=task_type,
        thresholds=thresholds_file,
        max_tensor_bytes=max_tensor_bytes,
        finetune_steps=finetune_steps,
        finetune_learning_rate=finetune_learning_rate,
        finetune_optimiser=finetune_optimiser,
        finetune_batch_size=finetune_batch_size,
        finetune_train_samples=finetune_train_samples,
        finetune_eval_samples=finetune_eval_samples,
        finetune_statistic=finetune_statistic,
        leakage_decoders=list(leakage_decoders) or None,
        leakage_augmentations=leakage_augmentations,
        leakage_max_fit=leakage_max_fit,
        leakage_neighbours=leakage_neighbours,
        leakage_ridge_alpha=leakage_ridge_alpha,
        leakage_bootstrap=leakage_bootstrap,
        twin=twin,
        sign_key=sign_key,
        augment_seed=augment_seed,
        release=release,
        reference_models=list(reference_models),
        reference_data=reference_data,
        reference_steps=reference_steps,
        reference_max_gmac=reference_max_gmac,
    )
    code = run_vet_command(
        models,
        probe,
        knobs,
        output_format=output_format,
        output_file=output_file,
        output_dir=output_dir,
        jobs=jobs,
        ray=ray_address,
        cache_dir=cache_dir,
        quiet=quiet,
    )
    ctx.exit(code)
    return code  # pragma: no cover - ctx.exit raises


def _parse_shape_option(text: str | None, parse: Any) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return parse(text)
    except EdgeguardError as error:
        raise click.BadParameter(str(error), param_hint="--input-shape") from None


# `edgeguard bench` lives in edgeguard/bench/cli.py (its options and help text are there).
from edgeguard.bench.cli import bench_command  # noqa: E402

main.add_command(bench_command)

# `edgeguard demo` lives in edgeguard/demo/cli.py (its options and help text are there).
from edgeguard.demo.cli import demo_command  # noqa: E402

main.add_command(demo_command)

# `edgeguard guard` and `edgeguard inspect` live in edgeguard/guard/cli.py.
from edgeguard.guard.cli import guard_command, inspect_command  # noqa: E402

main.add_command(guard_command)
main.add_command(inspect_command)


if __name__ == "__main__":  # pragma: no cover
    main()
