"""Latency versus leakage of every output filter on a vicious Fashion-MNIST classifier.

Builds (or reuses, through the cached zoo of benchmarks/_zoo.py) the vicious logits CNN
with b2 = 3 that benchmarks/attack_fmnist.py trains (same spec: arch cnn, 4 epochs, seed 0,
full Fashion-MNIST), then runs :func:`edgeguard.bench.run_bench` with the default filter
grid on the Fashion-MNIST test set (a seeded split into evaluation images and disjoint
attacker images) and writes benchmarks/results/latency_vs_leakage.{md,csv,json,png} and
latency_vs_leakage_reconstructions.png. The Markdown page states, computed from the
rows, which filter keeps accuracy within 0.5 points of raw while bringing the adaptive
attacker's R to <= 1.05, or that none does.

    nice -n 5 python benchmarks/latency_vs_leakage.py --threads 1 2> latency_vs_leakage.log
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._zoo import DEFAULT_ROOT, build, folder_for  # noqa: E402
from converters import load_report  # noqa: E402
from edgeguard.bench import run_bench  # noqa: E402
from edgeguard.data import load_fashion_mnist  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STEM = "latency_vs_leakage"


def model_spec(epochs: int, beta2: float, seed: int) -> dict:
    """The zoo spec; with the defaults it is attack_fmnist.py's vicious logits model with b2 = 3."""
    return {
        "objective": "vicious",
        "output": "logits",
        "beta2": beta2,
        "arch": "cnn",
        "epochs": epochs,
        "decoder_epochs": None,
        "seed": seed,
        "train_limit": None,
        "test_limit": None,
    }


@click.command()
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True, help="Joint epochs of the model.")
@click.option("--beta2", type=float, default=3.0, show_default=True, help="Weight of the reconstruction loss.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the model and of the bench.")
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=2),
    default=1,
    show_default=True,
    help="torch and onnxruntime threads (at most 2; on a busy shared machine 2 OpenMP threads ran the fine-tuning "
    "about 9x slower than 1).",
)
@click.option("--eval-size", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--attack-size", type=click.IntRange(min=100), default=8000, show_default=True)
@click.option("--attack-epochs", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--filters", default=None, help="Filter specs (';'-separated); default: the default grid.")
@click.option("--zoo-root", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_ROOT, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(
    epochs: int,
    beta2: float,
    seed: int,
    threads: int,
    eval_size: int,
    attack_size: int,
    attack_epochs: int,
    repeats: int,
    filters: str | None,
    zoo_root: Path,
    out_dir: Path,
    progress: bool,
) -> None:
    """Build or reuse the model, run the bench, write the results page and files."""
    spec = model_spec(epochs, beta2, seed)
    cached = (folder_for(spec, zoo_root) / "report.json").is_file()
    folder = build({**spec, "threads": threads, "progress": progress}, zoo_root)
    trained = load_report(folder)
    print(
        f"model {folder.name} ({'cached' if cached else 'trained now'}): accuracy {100 * trained.accuracy:.2f}%, "
        f"decoder PSNR {trained.psnr:.2f} dB on the test set",
        file=sys.stderr,
        flush=True,
    )
    test = load_fashion_mnist("test")
    report = run_bench(
        folder / "classifier.onnx",
        folder / "decoder.onnx",
        test,
        filters,
        seed=seed,
        eval_size=eval_size,
        attack_size=attack_size,
        attack_epochs=attack_epochs,
        repeats=repeats,
        threads=threads,
        progress=progress,
        command="python benchmarks/latency_vs_leakage.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    report.settings["model"] = f"benchmarks/.cache/zoo/{folder.name}/classifier.onnx"
    report.settings["decoder"] = f"benchmarks/.cache/zoo/{folder.name}/decoder.onnx"
    report.settings["data"] = f"Fashion-MNIST test set ({len(test)} images)"
    report.notes.insert(
        0,
        f"Model: the zoo's `{folder.name}` (converters.train_and_export, spec {spec}; "
        f"{'reused from the cache' if cached else 'trained in this run'}), the same model benchmarks/attack_fmnist.py "
        f"reports. Its training report: test accuracy {100 * trained.accuracy:.2f}%, decoder PSNR "
        f"{trained.psnr:.2f} dB, SSIM {trained.ssim:.3f} on the 10k test images; trained on {trained.num_train} "
        f"images for {trained.epochs_run} epochs.",
    )
    paths = report.write(out_dir, stem=STEM)
    print(report.target_statement(), file=sys.stderr)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


if __name__ == "__main__":
    main()
