"""Latency versus leakage of every output filter, against the attacker ladder, on a vicious Fashion-MNIST model.

The model attacked is edgeguard's bundled vicious classifier (``edgeguard/assets/vicious.onnx``,
logits setting, b2 = 3, 8 epochs on the full Fashion-MNIST training set, with its joint
decoder ``vicious_decoder.onnx``; see edgeguard/assets/manifest.json), or any model given
with --model/--decoder. :func:`edgeguard.bench.run_bench` runs the default filter grid on
the full Fashion-MNIST *test* set (a seeded split into evaluation images and disjoint
attacker images) with the whole ladder:

1. the server's decoder as trained;
2. the decoder refitted on filtered outputs (fine-tuned, --attack-epochs);
3. a classifier + decoder trained THROUGH each filter by converters' attack trainer
   (entry point ``edgeguard.attack_trainers: train_through``, run as cached jobs under
   benchmarks/.cache/ladder) on --through-train-limit images of the Fashion-MNIST *training*
   set for --through-epochs epochs;
4. a hand-built code per filter (converters' ``edgeguard.attack_trainers: hand_codes``, no
   training): the model's own logits, quantised to what the code carries, written into the
   outputs in a form the filter keeps, read back exactly and decoded by the server's decoder;
   reported with the bits per row it actually carries next to the capacity bound;

plus the repeated-queries experiment (R = 1, 10, 100 releases of one input averaged, for
every noise filter, fresh and consistent noise). Writes benchmarks/results/latency_vs_leakage
.{md,csv,json,png}, _frontier.png, _reconstructions.png, _worst_case.png and the README
fragment latency_vs_leakage_readme.md.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/latency_vs_leakage.py 2> latency_vs_leakage.log
    python benchmarks/latency_vs_leakage.py --through-only   # precompute (cache) the rung-3 jobs only
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import click  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeguard.bench import BenchSettings, CodeSettings, run_bench  # noqa: E402
from edgeguard.bench.ladder import ThroughSettings, run_through_filter  # noqa: E402
from edgeguard.data import load_fashion_mnist  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STEM = "latency_vs_leakage"
ASSETS = ROOT / "edgeguard" / "assets"
FMNIST = Path(os.environ.get("EDGEGUARD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def through_settings(epochs: int, train_limit: int, batch_size: int, cache: Path, enabled: bool) -> ThroughSettings:
    """Rung 3's budget: the same for every filter (the settings are the jobs' cache key)."""
    return ThroughSettings(
        enabled=enabled,
        epochs=epochs,
        train_limit=train_limit,
        data=str(FMNIST),
        cache_dir=str(cache),
        extra={"batch_size": batch_size},
    )


@click.command()
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=ASSETS / "vicious.onnx")
@click.option(
    "--decoder", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=ASSETS / "vicious_decoder.onnx"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1, max=2), default=1, show_default=True)
@click.option("--eval-size", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--attack-size", type=click.IntRange(min=100), default=8000, show_default=True)
@click.option("--attack-epochs", type=click.IntRange(min=0), default=3, show_default=True, help="Rung 2 epochs.")
@click.option("--repeats", type=click.IntRange(min=1), default=200, show_default=True, help="Timed calls.")
@click.option("--through/--no-through", default=True, show_default=True, help="Run rung 3.")
@click.option("--through-epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--through-train-limit", type=click.IntRange(min=20), default=10_000, show_default=True)
@click.option("--through-batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--through-only", is_flag=True, help="Only train (cache) the rung-3 attackers, then stop.")
@click.option("--codes/--no-codes", default=True, show_default=True, help="Run rung 4 (hand-built codes).")
@click.option("--repeat-counts", default="1,10,100", show_default=True, help="R values ('none' to skip).")
@click.option("--repeat-eval-size", type=click.IntRange(min=2), default=400, show_default=True)
@click.option("--repeat-train-size", type=click.IntRange(min=10), default=1500, show_default=True)
@click.option("--filters", default=None, help="Filter specs (';'-separated); default: the default grid.")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "benchmarks" / ".cache" / "ladder"
)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(
    model: Path,
    decoder: Path,
    seed: int,
    threads: int,
    eval_size: int,
    attack_size: int,
    attack_epochs: int,
    repeats: int,
    through: bool,
    through_epochs: int,
    through_train_limit: int,
    through_batch_size: int,
    through_only: bool,
    codes: bool,
    repeat_counts: str,
    repeat_eval_size: int,
    repeat_train_size: int,
    filters: str | None,
    cache_dir: Path,
    out_dir: Path,
    progress: bool,
) -> None:
    """Run the bench with the ladder on full Fashion-MNIST and write the results page and files."""
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    started = time.time()
    settings = through_settings(through_epochs, through_train_limit, through_batch_size, cache_dir, through)
    if through_only:
        from edgeguard.filters.spec import default_filter_specs, parse_filter_specs

        specs = parse_filter_specs(filters) if filters else default_filter_specs("logits")
        outcome, message = run_through_filter(
            specs,
            settings,
            attacker_images=None,
            attacker_labels=None,
            class_names=None,
            seed=seed,
            threads=threads,
            progress=progress,
        )
        for text, value in outcome.items():
            print(f"{text}: {value if isinstance(value, str) else value[0]}", file=sys.stderr)
        print(f"{message}; {time.time() - started:.0f} s", file=sys.stderr)
        return
    test = load_fashion_mnist("test", root=FMNIST)
    counts = () if repeat_counts.strip().lower() in ("", "none") else tuple(int(c) for c in repeat_counts.split(","))
    bench_settings = BenchSettings(
        seed=seed,
        eval_size=eval_size,
        attack_size=attack_size,
        attack_epochs=attack_epochs,
        repeats=repeats,
        threads=threads,
        through=settings,
        codes=CodeSettings(enabled=codes),
        repeat_counts=counts,
        repeat_eval_size=repeat_eval_size,
        repeat_train_size=repeat_train_size,
    )
    command = "python benchmarks/latency_vs_leakage.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_bench(model, decoder, test, filters, bench_settings, progress=progress, command=command)

    def relative(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return str(path)

    report.settings["model"] = relative(model)
    report.settings["decoder"] = relative(decoder)
    report.settings["data"] = f"Fashion-MNIST test set ({len(test)} images, {FMNIST})"
    report.settings["through"]["data"] = f"Fashion-MNIST training set ({FMNIST}), first {through_train_limit} images"
    report.notes.insert(
        0,
        "Model: edgeguard's bundled vicious classifier (edgeguard/assets/vicious.onnx: CNN, logits setting, b2 = 3, "
        "8 epochs on the 60k Fashion-MNIST training images; manifest: 89.33% test accuracy, joint decoder 17.66 dB) "
        "unless --model says otherwise. Rung 3 attackers are trained on the Fashion-MNIST *training* set, never on "
        "the test images the bench evaluates on.",
    )
    report.notes.append(
        f"Rung 3 budget (the same for every filter): {report.settings['through']['budget']}; whole benchmark wall time "
        f"{time.time() - started:.0f} s on the machine above (shared with other jobs). A rung-3 attacker with this "
        "CPU budget is weak (a larger budget trains stronger ones): its numbers are a floor on what training through "
        "the filter achieves, not a ceiling."
    )
    paths = report.write(out_dir, stem=STEM)
    fragment = out_dir / f"{STEM}_readme.md"
    fragment.write_text(report.readme_fragment())
    paths["readme"] = fragment
    print(report.target_statement(), file=sys.stderr)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


if __name__ == "__main__":
    main()
