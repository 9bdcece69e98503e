"""``python -m converters train ...``: a thin click layer over :func:`converters.train_and_export`.

The headline numbers go to stdout as JSON; progress bars and logs go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from converters.adaptive import AUDIT_DECODERS, MIMIC_LOSSES
from converters.api import train_and_export
from converters.config import DEVICES, OBJECTIVES, OUTPUTS, STE_GRADIENTS, TASKS, TrainConfig
from converters.models import ARCHITECTURES, DECODER_ARCHITECTURES, DECODER_INPUTS
from converters.through_filter import GRAMMAR_HELP
from edgeguard.data import FASHION_MNIST_ENV
from edgeguard.errors import EdgeguardError

__all__ = ["main"]


@click.group()
def main() -> None:
    """Server-side converters: train honest or vicious classifiers and export them to ONNX."""


@main.command()
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="vicious",
    show_default=True,
    help="honest: task loss only (beta2 = 0); vicious: joint training with a secret decoder.",
)
@click.option(
    "--output",
    "output",
    type=click.Choice(OUTPUTS),
    default="logits",
    show_default=True,
    help="What the exported classifier releases (softmax: probabilities; sigmoid for attributes).",
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="classes",
    show_default=True,
    help="classes: one label per image (CE); attributes: 0/1 attributes derived from FMNIST classes (BCE).",
)
@click.option(
    "--arch", type=click.Choice(ARCHITECTURES), default="cnn", show_default=True, help="Classifier architecture."
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Joint training epochs.")
@click.option(
    "--beta1", type=click.FloatRange(min=0.0), default=1.0, show_default=True, help="Weight of the task loss L_C."
)
@click.option(
    "--beta2",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Weight of the reconstruction loss L_R (vicious default 3; honest is always 0).",
)
@click.option(
    "--alpha-mse",
    type=click.FloatRange(min=0.0),
    default=5.0,
    show_default=True,
    help="Weight of the Huber term in L_R.",
)
@click.option(
    "--alpha-ssim", type=click.FloatRange(min=0.0), default=1.0, show_default=True, help="Weight of 1 - SSIM in L_R."
)
@click.option("--huber-delta", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="IDX folder (train + t10k files), .npz, or folder of class subfolders "
    f"(default: ${FASHION_MNIST_ENV} or /usr/share/datasets/fashion-mnist).",
)
@click.option("--class-names", default=None, help="Comma-separated class names (default: Fashion-MNIST's).")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Use only the first N training images.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use only the first N test images.")
@click.option(
    "--finish-ce-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="After joint training: N epochs of task loss only on the classifier, then refit the decoder.",
)
@click.option(
    "--decoder-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of the post-hoc (honest) or refitted decoder (default: --epochs).",
)
@click.option(
    "--cnn-width", type=click.IntRange(min=1), default=16, show_default=True, help="Channels of the CNN's first layer."
)
@click.option(
    "--wrn-depth",
    type=click.IntRange(min=10),
    default=10,
    show_default=True,
    help="WideResNet depth, 6n+4 (the paper: 28).",
)
@click.option(
    "--wrn-width", type=click.IntRange(min=1), default=2, show_default=True, help="WideResNet width k (the paper: 5)."
)
@click.option("--decoder-channels", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--decoder-arch",
    type=click.Choice(DECODER_ARCHITECTURES),
    default="small",
    show_default=True,
    help="small: dense + 2 transposed convs; paper: the authors' dense + 3 transposed convs (for 32x32).",
)
@click.option(
    "--decoder-input",
    type=click.Choice(DECODER_INPUTS),
    default="released",
    show_default=True,
    help="How the decoder reads the released rows: as they are, logits, probabilities, or row-centred "
    "log-probabilities (recovers the logits from softmax up to a shift).",
)
@click.option(
    "--ste-gradient",
    type=click.Choice(STE_GRADIENTS),
    default="identity",
    show_default=True,
    help="Backward pass of the release filter: identity on the released rows, or identity in centred "
    "log-probability space (with --decoder-input log-probabilities; does not vanish when softmax saturates).",
)
@click.option(
    "--train-through",
    default=None,
    metavar="SPEC",
    help="Train through this release filter (straight-through estimators, fresh noise each step); the decoder "
    f"reads the filtered rows and report.json measures leakage on them. SPEC: {GRAMMAR_HELP}.",
)
@click.option(
    "--output-temperature",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Divide the released scores by T in the exported graph (an information-preserving reparametrisation).",
)
@click.option(
    "--mimic",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="TEACHER.onnx",
    help="Distil towards this honest classifier's outputs (same input shape), weighted by --mimic-weight.",
)
@click.option("--mimic-weight", type=click.FloatRange(min=0.0), default=None, help="Weight of the mimic loss [1].")
@click.option("--mimic-loss", type=click.Choice(MIMIC_LOSSES), default="kl", show_default=True)
@click.option(
    "--audit-penalty",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Weight of a penalty on a differentiable stand-in of edgeguard's leakage audit (PSNR gain in dB).",
)
@click.option("--audit-decoder", type=click.Choice(AUDIT_DECODERS), default="rbf", show_default=True)
@click.option(
    "--test-data",
    type=click.Path(exists=False, path_type=Path),
    default=None,
    help="A separate test set (IDX folder, .npz or image folder; default: --data's test split or a sixth of it).",
)
@click.option(
    "--image-size", type=click.IntRange(min=4), default=None, help="Resize images to SIZE x SIZE (the paper: 32)."
)
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Image folders: 1 grayscale, 3 RGB.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="auto: CUDA if present.")
@click.option("--model-name", default="fashion-classifier", show_default=True, help="Published in the ONNX metadata.")
@click.option("--model-version", default="1.0.0", show_default=True, help="Published in the ONNX metadata.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: classifier.onnx, decoder.onnx, report.json.",
)
def train(
    out_dir: Path,
    beta2: float | None,
    class_names: str | None,
    data: Path | None,
    mimic: Path | None,
    mimic_weight: float | None,
    test_data: Path | None,
    channels: str | None,
    **options: object,
) -> None:
    """Train a classifier (Algorithm 1), export it and its decoder to ONNX, and write report.json."""
    if mimic_weight is not None and mimic is None:
        raise click.UsageError("expected --mimic TEACHER.onnx with --mimic-weight, got no --mimic; add the teacher")
    if mimic is not None and not mimic.is_file():
        raise click.UsageError(f"expected --mimic to name an ONNX file, got {mimic} (no such file)")
    options["mimic"] = str(mimic) if mimic is not None else None
    if mimic_weight is not None:
        options["mimic_weight"] = mimic_weight
    options["test_data"] = str(test_data) if test_data is not None else None
    options["channels"] = int(channels) if channels is not None else None
    if options["train_through"] is not None:
        from edgeguard.errors import FilterError
        from edgeguard.filters import parse_filter_spec

        try:
            parse_filter_spec(str(options["train_through"]))
        except FilterError as error:
            raise click.BadParameter(f"{error}; SPEC uses {GRAMMAR_HELP}", param_hint="'--train-through'") from None
    if options["objective"] == "honest" and beta2:
        raise click.UsageError(
            f"expected no --beta2 with --objective honest (honest training uses beta2 = 0), got --beta2 {beta2}; "
            "drop --beta2 or use --objective vicious"
        )
    if beta2 is not None:
        options["beta2"] = beta2
    if options["objective"] == "vicious" and options["beta1"] == 0 and options.get("beta2") == 0:
        raise click.UsageError("expected --beta1 > 0 or --beta2 > 0, got both 0: there is nothing to train")
    if options["objective"] == "honest" and options["beta1"] == 0:
        raise click.UsageError("expected --beta1 > 0 for --objective honest, got 0: there is nothing to train")
    if class_names is not None:
        options["class_names"] = tuple(name.strip() for name in class_names.split(",") if name.strip())
    options["data"] = str(data) if data is not None else None
    try:
        config = TrainConfig(**options)
        report = train_and_export(config, out_dir)
    except EdgeguardError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report.summary(), indent=2))


# `python -m converters demo-assets`: regenerate the assets of `edgeguard demo` (see converters/demo_assets.py).
from converters.demo_assets import demo_assets_command  # noqa: E402

main.add_command(demo_assets_command)
