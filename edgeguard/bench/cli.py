"""The ``edgeguard bench`` command: parses options, calls :func:`edgeguard.bench.run_bench`, writes files."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from edgeguard.bench.ladder import ThroughSettings
from edgeguard.bench.settings import ATTACKERS, BenchSettings, CodeSettings
from edgeguard.vectors import DEFAULT_LABEL_COLUMN

__all__ = ["bench_command"]

_HELP = """Latency versus leakage of every output filter on MODEL (an ONNX classifier).

\b
For each filter configuration: latency of SafeModel.predict against raw onnxruntime
(batch 1, interleaved), accuracy of the release, and leakage (PSNR, SSIM, R) of the
server's DECODER as trained and of an adaptive attacker who knows the filter and
fine-tunes the decoder on filtered outputs (needs torch; without it the attacker picks
among numpy decoders, and the report says so). Next to the label-only baseline.

\b
DATA: labelled images (an IDX folder, an .npz with x and y, or a folder of class
subfolders), split (seeded, disjoint) into --eval-size evaluation images and
--attack-size attacker images.

\b
Vector and sequence models ((N, F), (N, T, F) inputs): DATA is an .npz (x, y), a
.csv or a .parquet (label column: --label-column), --decoder is optional, and
each filter's release is attacked by post-hoc decoders (ridge, k-NN, MLP; the
server's decoder when given), scored as the vet scores vectors: MSE gain over
the per-class mean in dB and R^2 per feature. Image-only parts (SSIM, pictures,
rungs 3-4, repeats) are skipped, with the reason in the report.

\b
--filters: specs separated by ';' (repeatable), stages joined by '>', e.g.
  "none;softmax;softmax>round:2;gaussian:0.5;argmax;clipped_laplace:c=5,eps=1"
  "default" is the default grid (the one used without --filters).

\b
The attacker ladder, per filter: (1) the server's decoder as trained; (2) the
decoder refitted on filtered outputs; (3) a classifier + decoder trained THROUGH
the filter by an attack trainer found in the entry-point group
edgeguard.attack_trainers (the converters package; run as cached jobs, budget
--through-epochs / --through-train-limit, on the training split of DATA when it
has one; the budget really used is printed; reported "not run" when none is
installed); (4) a hand-built code, the strongest that survives the filter at
most 0.5 points of accuracy below the model (entry point hand_codes of the same
group; no training; --no-codes to skip), with the bits per row it really carries.
The worst case over the rungs is reported next to the capacity bound.
--repeat-counts: leakage when R releases of one input are averaged, for
every noise filter, fresh and consistent (keyed) noise.

\b
Writes OUT/NAME.csv, .md, .json, .png (plot), NAME_frontier.png (utility against
worst-case leakage; needs matplotlib), NAME_reconstructions.png and
NAME_worst_case.png; prints the Markdown report on stdout, progress on stderr.
"""


def _counts(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,10,100 or 'none', got {text!r}") from None
    if any(c < 1 for c in counts):
        raise click.BadParameter(f"expected repeat counts >= 1, got {text!r}")
    return counts


_SETTINGS = BenchSettings()
_THROUGH = ThroughSettings()
_CODES = CodeSettings()


@click.command("bench", help=_HELP)
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--decoder",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="The server's decoder ONNX (required for image models).",
)
@click.option("--data", required=True, type=click.Path(path_type=str), help="Labelled images or vectors (see above).")
@click.option(
    "--label-column",
    default=DEFAULT_LABEL_COLUMN,
    show_default=True,
    help="Label column of a .csv / .parquet vector data file.",
)
@click.option(
    "--filters", "filters", multiple=True, help="Filter specs, ';'-separated (repeatable). Default: the grid."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=str),
    default="edgeguard-bench",
    show_default=True,
    help="Output folder.",
)
@click.option("--name", default="bench", show_default=True, help="Stem of the output file names.")
@click.option("--seed", type=int, default=_SETTINGS.seed, show_default=True, help="Seed of splits, noise and training.")
@click.option(
    "--eval-size", type=click.IntRange(min=2), default=_SETTINGS.eval_size, show_default=True, help="Evaluation images."
)
@click.option(
    "--attack-size",
    type=click.IntRange(min=10),
    default=_SETTINGS.attack_size,
    show_default=True,
    help="Attacker images.",
)
@click.option(
    "--attack-epochs",
    type=click.IntRange(min=0),
    default=_SETTINGS.attack_epochs,
    show_default=True,
    help="Rung 2 fine-tuning epochs.",
)
@click.option(
    "--attack-batch-size",
    type=click.IntRange(min=1),
    default=_SETTINGS.attack_batch_size,
    show_default=True,
    help="Rung 2 batch size.",
)
@click.option(
    "--attack-learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=_SETTINGS.attack_learning_rate,
    show_default=True,
    help="Rung 2 Adam learning rate.",
)
@click.option(
    "--attacker",
    type=click.Choice(ATTACKERS),
    default=_SETTINGS.attacker,
    show_default=True,
    help="auto: fine-tune the decoder when torch is installed; knn: no fine-tuning.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=_SETTINGS.repeats,
    show_default=True,
    help="Timed calls per configuration.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=_SETTINGS.threads,
    show_default=True,
    help="onnxruntime and torch threads.",
)
@click.option(
    "--grid-samples",
    type=click.IntRange(min=0),
    default=_SETTINGS.grid_samples,
    show_default=True,
    help="Images in the reconstruction grids.",
)
@click.option(
    "--through/--no-through",
    default=True,
    show_default=True,
    help="Rung 3: train a classifier + decoder through each filter (needs an installed attack trainer).",
)
@click.option(
    "--through-epochs", type=click.IntRange(min=1), default=_THROUGH.epochs, show_default=True, help="Rung 3 epochs."
)
@click.option(
    "--through-train-limit",
    type=click.IntRange(min=20),
    default=_THROUGH.train_limit,
    show_default=True,
    help="Rung 3 training images (at most; default: all of them).",
)
@click.option(
    "--through-data",
    type=click.Path(exists=True, path_type=str),
    default=None,
    help="Rung 3 training data (IDX folder or .npz); default: the training split of --data when it is an IDX "
    "folder with one, else the attacker split.",
)
@click.option(
    "--through-cache-dir",
    "--cache-dir",
    "through_cache_dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Cache of rung-3 jobs (default OUT/.cache).",
)
@click.option(
    "--repeat-counts",
    "--repeats-experiment",
    "repeat_counts",
    default=",".join(str(c) for c in _SETTINGS.repeat_counts),
    show_default=True,
    help="Repeat counts R to average for every noise filter ('none' to skip).",
)
@click.option(
    "--repeat-eval-size",
    type=click.IntRange(min=2),
    default=_SETTINGS.repeat_eval_size,
    show_default=True,
    help="Images per repeat cell.",
)
@click.option(
    "--repeat-train-size",
    type=click.IntRange(min=10),
    default=_SETTINGS.repeat_train_size,
    show_default=True,
    help="Attacker images the repeats attacker fine-tunes on.",
)
@click.option(
    "--repeat-epochs",
    type=click.IntRange(min=0),
    default=_SETTINGS.repeat_epochs,
    show_default=True,
    help="Epochs of the repeats attacker (at most --attack-epochs).",
)
@click.option(
    "--codes/--no-codes",
    default=True,
    show_default=True,
    help="Rung 4: a hand-built code per filter (needs an installed code builder; no training).",
)
@click.option(
    "--codes-validation-size",
    type=click.IntRange(min=10),
    default=_CODES.validation_size,
    show_default=True,
    help="Rung 4: held-out attacker images the code is picked on.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def bench_command(
    model: str,
    decoder: str | None,
    data: str,
    label_column: str,
    filters: tuple[str, ...],
    out_dir: str,
    name: str,
    quiet: bool,
    **options: Any,
) -> None:
    from edgeguard.bench.run import DecoderRequiredError, run_bench

    settings = _settings(options, out_dir)
    try:
        report = run_bench(
            model,
            decoder,
            data,
            list(filters) or None,
            settings,
            progress=not quiet,
            command=_command_line(),
            label_column=label_column,
        )
    except DecoderRequiredError as error:
        raise click.UsageError(str(error)) from None
    paths = report.write(out_dir, stem=name)
    click.echo(report.to_markdown(), nl=False)
    if not quiet:
        for kind, path in paths.items():
            click.echo(f"[bench] {kind}: {path}", err=True)


def _settings(options: dict[str, Any], out_dir: str) -> BenchSettings:
    """The BenchSettings of the parsed options (each option carries its field's name; ``through_*`` -> ``through``,
    ``codes_*`` -> ``codes``)."""
    through = {key[len("through_") :]: options.pop(key) for key in list(options) if key.startswith("through_")}
    through["enabled"] = options.pop("through")
    through["cache_dir"] = through["cache_dir"] or str(Path(out_dir) / ".cache")
    codes = {key[len("codes_") :]: options.pop(key) for key in list(options) if key.startswith("codes_")}
    codes["enabled"] = options.pop("codes")
    options["repeat_counts"] = _counts(options["repeat_counts"])
    return BenchSettings(**options, through=ThroughSettings(**through), codes=CodeSettings(**codes))


def _command_line() -> str:
    """The command as it would be typed, rebuilt from the parsed options (for the report)."""
    context = click.get_current_context()
    params = context.params
    words = ["edgeguard", "bench", params["model"]]
    for option in context.command.params:
        if not isinstance(option, click.Option) or option.name == "quiet":
            continue
        value = params.get(option.name)
        flag = option.opts[0] if option.opts[0].startswith("--") else option.opts[-1]
        if option.is_flag and option.secondary_opts:
            if value != option.default:
                words.append(flag if value else option.secondary_opts[0])
        elif option.multiple:
            words += [part for item in value for part in (flag, item)]
        elif value is not None and value != option.default:
            words += [flag, str(value)]
        elif option.required:
            words += [flag, str(value)]
    return " ".join(shlex.quote(word) for word in words)
