"""``run_demo``: the whole edgeguard story on bundled models, in minutes on a laptop CPU.

1. *The attack*: the bundled vicious classifier's raw logits go through its provider's
   secret decoder and come back as recognisable images; the honest classifier's logits,
   through a decoder fitted on them after training, do not. Filters change that.
2. *Vetting*: :func:`edgeguard.vetting` on both files, with their verdicts.
3. *Output filters*: accuracy and leakage of a short grid of filters on the vicious model
   (and the honest model's raw output for reference), measured with
   :func:`edgeguard.bench.run_bench`.

Everything is written to one folder: ``attack.png``, ``vet_honest.json``,
``vet_vicious.json``, ``filters.csv``, ``bench/`` (the full bench reports) and
``summary.json``/``summary.txt``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.demo.assets import load_demo_data, load_manifest, model_paths, verify_assets
from edgeguard.demo.figure import FigureRow, attack_figure
from edgeguard.errors import DataError

__all__ = ["run_demo", "DemoResult", "DemoSettings", "FILTERS", "PROTECTIVE_FILTERS", "EXPECTED_VERDICTS"]

#: The filter grid of the demo's table (bench spec syntax, see edgeguard.filters.spec).
FILTERS = ("none", "softmax>round:2", "gaussian:1", "argmax")
#: Filters shown in the picture, after the raw output.
PROTECTIVE_FILTERS = ("softmax>round:2", "argmax")
#: What the vet should say about each bundled model.
EXPECTED_VERDICTS = {"honest": "honest", "vicious": "vicious"}
#: Images drawn per row of the picture.
FIGURE_IMAGES = 10
#: Exit code of a demo whose verdicts are not the expected ones (edgeguard's "inconclusive").
EXIT_UNEXPECTED = 3


@dataclass(frozen=True)
class DemoSettings:
    """Sample sizes of one demo run (``for_mode`` picks them from ``--quick`` and the data at hand)."""

    quick: bool
    data_limit: int | None  # images read (None: the whole test set or subset)
    eval_size: int  # bench: images the filters are scored on
    attack_size: int  # bench: images the attacker learns from (disjoint from the evaluation images)
    attack_epochs: int  # bench: fine-tuning epochs of the adaptive attacker
    attacker: str  # bench: "auto" (fine-tunes the decoder with torch) or "knn" (no fine-tuning)
    repeats: int  # bench: timed calls per filter (latency is not the demo's point)

    @classmethod
    def for_mode(cls, quick: bool, available: int | None = None) -> "DemoSettings":
        """Quick: the first 3000 test images, 500 scored, 1 attacker epoch. Full: all images, 1000 scored, 3 epochs.

        The attacker fine-tunes the server's decoder when torch is installed (else it picks among a k-NN
        decoder, the decoder as trained and the label-only guess).
        """
        if quick:
            return cls(True, 3000, 500, 1500, 1, "auto", 20)
        eval_size = 1000
        attack = 4000 if available is None else max(10, min(4000, available - eval_size))
        return cls(False, None, eval_size, attack, 3, "auto", 200)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DemoResult:
    """What one demo run showed; ``to_text()`` is the human summary, ``to_dict()`` the JSON one."""

    settings: dict[str, Any]
    data: dict[str, Any]
    assets: dict[str, Any]
    attack: dict[str, Any]
    vet: dict[str, dict[str, Any]]
    filters: list[dict[str, Any]]
    files: dict[str, str]
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        """True when the vet flagged the vicious model and passed the honest one."""
        return all(entry["as_expected"] for entry in self.vet.values())

    @property
    def exit_code(self) -> int:
        return 0 if self.as_expected else EXIT_UNEXPECTED

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "as_expected": self.as_expected,
                "exit_code": self.exit_code,
                "problems": self.problems,
                "seconds": self.seconds,
                "settings": self.settings,
                "data": self.data,
                "assets": self.assets,
                "attack": self.attack,
                "vet": self.vet,
                "filters": self.filters,
                "files": self.files,
                "timings": self.timings,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_text(self) -> str:
        s, a = self.settings, self.attack
        mode = "quick mode" if s["quick"] else "full mode"
        lines = [
            f"edgeguard demo ({mode}, seed {s['seed']}, {self.seconds:.0f} s)",
            f"data: {self.data['description']} ({self.data['images']} images)",
            *([f"      ({self.data['why']})"] if self.data.get("why") else []),
            "",
            "1. The attack (attack.png): the user shares only the classifier's outputs; the server decodes them.",
            f"   vicious model, raw logits -> its secret decoder:   PSNR {a['vicious_raw']['psnr']:5.2f} dB, "
            f"SSIM {a['vicious_raw']['ssim']:.3f}",
            f"   honest model, raw logits -> post-hoc decoder:     PSNR {a['honest_raw']['psnr']:5.2f} dB, "
            f"SSIM {a['honest_raw']['ssim']:.3f}",
            f"   label only (mean image of the predicted class):  PSNR {a['label_only']['psnr']:5.2f} dB, "
            f"SSIM {a['label_only']['ssim']:.3f}",
            f"   task accuracy of the two models: {100 * a['vicious_raw_accuracy']:.2f}% (vicious), "
            f"{100 * a['honest_raw_accuracy']:.2f}% (honest)",
            f"   (means over {s['eval_size']} test images; higher = closer to the private image)",
            "",
            "2. Vetting before sharing anything (edgeguard vet):",
        ]
        for entry in self.vet.values():
            flag = "" if entry["as_expected"] else f"   <-- expected {entry['expected']}"
            likelihood = "n/a" if entry["likelihood"] is None else f"{entry['likelihood']:.3f}"
            lines.append(
                f"   {entry['file']:<13} verdict: {entry['verdict'].upper():<12} likelihood {likelihood}{flag}"
            )
            lines += [f"   {'':<13} {_describe_test(test)}" for test in entry["tests"].values()]
        lines += [
            "",
            f"3. Output filters: what you share instead of raw logits ({s['eval_size']} test images; "
            f"{self.attack['attacker_short']})",
            f"   {'model':<8} {'filter':<16} {'release':<15} {'capacity':>12} {'accuracy':>9} "
            f"{'decoder PSNR':>13} {'attacker PSNR':>14} {'gain vs label':>14}",
        ]
        for row in self.filters:
            lines.append(
                f"   {row['model']:<8} {row['filter']:<16} {row['release']:<15} {_bits(row['capacity_bits']):>12} "
                f"{100 * row['accuracy']:8.2f}% {row['server_psnr']:10.2f} dB {row['adaptive_psnr']:11.2f} dB "
                f"{row['adaptive_psnr_gain_db']:+11.2f} dB"
            )
        lines += [
            "   decoder = the server's decoder as trained; attacker = one who knows the filter and adapts to it;",
            "   gain vs label = attacker PSNR minus the label-only PSNR (about 0: nothing beyond the class leaks).",
            "",
            f"Files in {self.files['folder']}: "
            + ", ".join(
                Path(self.files[key]).relative_to(self.files["folder"]).as_posix()
                for key in sorted(self.files, key=_FILE_ORDER.index)
                if key != "folder"
            ),
        ]
        if self.problems:
            lines += ["", "NOT AS EXPECTED:"] + [f"  - {problem}" for problem in self.problems]
        lines += [
            "",
            "Next: vet your own model with `edgeguard vet MODEL.onnx --probe-data DATA`, then run it through",
            "edgeguard.SafeModel(MODEL.onnx, filters=[edgeguard.Argmax()]) and share only what it releases.",
        ]
        return "\n".join(lines) + "\n"


_FILE_ORDER = [
    "folder",
    "figure",
    "vet_honest",
    "vet_vicious",
    "filters",
    "summary_text",
    "summary_json",
    "bench_vicious_md",
    "bench_vicious_json",
    "bench_honest_md",
    "bench_honest_json",
]


def _describe_test(test: dict[str, Any]) -> str:
    if test["status"] != "ran" or test["score"] is None:
        return f"{test['name']}: {test['status']}"
    if test["threshold"] is None:
        return f"{test['name']}: {test['statistic']} {test['score']:.4g} (no threshold)"
    side = "above" if test["higher_is_vicious"] else "below"
    mark = "flagged" if test["flagged"] else "not flagged"
    weight = "" if test.get("weight") is None or test["weight"] > 0 else " (not used by the verdict)"
    return f"{test['name']}: {test['statistic']} {test['score']:.4g} (flags {side} {test['threshold']:g}) -> {mark}{weight}"


def _bits(value: float) -> str:
    return "unbounded" if value is None or math.isinf(value) else f"{value:.1f} bits"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _vet_summary(name: str, report: Any, file_name: str, report_file: str) -> dict[str, Any]:
    thresholds = report.thresholds.get("tests", {})
    weights = report.thresholds.get("combined", {}).get("weights", {})
    tests = {}
    for test_name, test in report.tests.items():
        tests[test_name] = {
            "name": test_name,
            "status": test.status,
            "statistic": thresholds.get(test_name, {}).get("statistic", test_name),
            "score": test.score,
            "threshold": test.threshold,
            "higher_is_vicious": test.higher_is_vicious,
            "flagged": test.flagged,
            "likelihood": test.likelihood,
            "weight": weights.get(test_name),
            "seconds": test.seconds,
        }
    expected = EXPECTED_VERDICTS[name]
    return {
        "file": file_name,
        "expected": expected,
        "verdict": report.verdict,
        "as_expected": report.verdict == expected,
        "likelihood": report.likelihood,
        "exit_code": report.exit_code,
        "reasons": list(report.reasons),
        "probe_accuracy": report.probe.get("accuracy"),
        "tests": tests,
        "thresholds_source": report.thresholds.get("source") or report.thresholds.get("file"),
        "report": report_file,
        "seconds": report.seconds,
    }


def _leak(row: Any, which: str) -> dict[str, float]:
    return {
        "psnr": getattr(row, f"{which}_psnr"),
        "ssim": getattr(row, f"{which}_ssim"),
        "risk": getattr(row, f"{which}_risk"),
    }


def _filter_rows(model: str, report: Any) -> list[dict[str, Any]]:
    keys = (
        "filter",
        "release",
        "capacity_bits",
        "accuracy",
        "accuracy_drop_points",
        "server_psnr",
        "server_ssim",
        "server_risk",
        "adaptive_psnr",
        "adaptive_ssim",
        "adaptive_risk",
        "adaptive_psnr_gain_db",
        "attack_decoder",
    )
    return [{"model": model, **{key: getattr(row, key) for key in keys}} for row in report.rows]


def _write_filters_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _figure(
    path: Path, vicious: Any, honest: Any, settings: DemoSettings, seed: int, command: str, attacker: str
) -> Path:
    raw_vicious, raw_honest = vicious.row("none"), honest.row("none")
    base = vicious.label_only
    rows = [
        FigureRow(
            "Private inputs (never leave the device)", "Fashion-MNIST test images, never trained on", vicious.originals
        ),
        FigureRow(
            "Vicious model: raw logits -> its provider's secret decoder",
            f"PSNR {raw_vicious.server_psnr:.1f} dB, SSIM {raw_vicious.server_ssim:.2f}, accuracy "
            f"{100 * vicious.raw_accuracy:.1f}%",
            raw_vicious.server_examples,
            "danger",
        ),
        FigureRow(
            "Honest model: raw logits -> a decoder fitted on its outputs",
            f"PSNR {raw_honest.server_psnr:.1f} dB, SSIM {raw_honest.server_ssim:.2f}, accuracy "
            f"{100 * honest.raw_accuracy:.1f}%",
            raw_honest.server_examples,
        ),
    ]
    for spec in PROTECTIVE_FILTERS:
        row = vicious.row(spec)
        rows.append(
            FigureRow(
                f"Vicious model + filter {spec} -> attacker who knows the filter",
                f"PSNR {row.adaptive_psnr:.1f} dB, SSIM {row.adaptive_ssim:.2f}, accuracy {100 * row.accuracy:.1f}%",
                row.adaptive_examples,
                "safe" if spec == "argmax" else "neutral",
            )
        )
    rows.append(
        FigureRow(
            "Label only: mean image of the predicted class",
            f"PSNR {base['psnr']:.1f} dB, SSIM {base['ssim']:.2f}: what the class alone reveals",
            vicious.label_only_examples,
        )
    )
    subtitle = (
        "The user runs the classifier locally and shares only its outputs. Each row shows what the server rebuilds "
        "from them. The two ONNX files look alike; only the vicious one was trained to leak its input."
    )
    footer = (
        f"PSNR / SSIM: means over {settings.eval_size} test images (higher = closer to the private image). "
        f"Attacker who knows the filter: {attacker}. Made by `{command}` (seed {seed})."
    )
    return attack_figure(
        path, rows, title="edgeguard demo: what a classifier's shared outputs reveal", subtitle=subtitle, footer=footer
    )


def _limit_blas(threads: int) -> Any:
    """At most ``threads`` BLAS threads while the demo runs, when threadpoolctl is installed (else no limit).

    numpy's eigendecompositions (the Mahalanobis reference, the attacker's projection) can be several times
    slower with more BLAS threads than free cores.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def run_demo(
    out_dir: str | os.PathLike = "edgeguard-demo",
    *,
    quick: bool = False,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    bench_progress: bool = False,
    asset_dir: str | os.PathLike | None = None,
    command: str | None = None,
) -> DemoResult:
    """Run the demo and write its files to ``out_dir``; see the module docstring.

    ``quick`` uses the first 3000 test images, scores filters on 500 of them and gives the
    adaptive attacker one epoch (the CI mode; the verdicts are still real vet runs with
    the calibrated settings); see :meth:`DemoSettings.for_mode`. ``threads`` bounds
    onnxruntime, torch and (with threadpoolctl installed) BLAS threads. ``progress``
    receives one line per step; ``bench_progress`` shows the bench's progress bars on
    stderr. ``asset_dir`` replaces the bundled assets (tests).
    """
    with _limit_blas(threads):
        return _run_demo(out_dir, quick, seed, threads, progress, bench_progress, asset_dir, command)


def _run_demo(
    out_dir: str | os.PathLike,
    quick: bool,
    seed: int,
    threads: int,
    progress: Callable[[str], None] | None,
    bench_progress: bool,
    asset_dir: str | os.PathLike | None,
    command: str | None,
) -> DemoResult:
    from edgeguard.bench import BenchSettings, run_bench
    from edgeguard.vetting import vet

    started = time.perf_counter()
    say = progress or (lambda message: None)
    command = command or ("edgeguard demo --quick" if quick else "edgeguard demo")
    timings: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    say("checking the bundled models against their manifest (sha256)")
    verify_assets(asset_dir)
    manifest = load_manifest(asset_dir)
    paths = model_paths(asset_dir)
    settings = DemoSettings.for_mode(quick)
    data, source = load_demo_data(settings.data_limit, asset_dir)
    settings = DemoSettings.for_mode(quick, len(data))
    if len(data) < settings.eval_size + settings.attack_size:
        raise DataError(
            f"expected at least {settings.eval_size + settings.attack_size} images for the demo, got {len(data)} "
            f"from {source['description']}"
        )
    say(f"data: {source['description']} ({len(data)} images)")

    # 1 + 3. The attack and the filters (the bench measures both).
    benches = {}
    for name, filters in (("vicious", FILTERS), ("honest", ("none",))):
        step_name = "1/4 the attack and the filters" if name == "vicious" else "2/4 the same for reference"
        say(f"{step_name}: {name} model, filters {', '.join(filters)}")
        step = time.perf_counter()
        classifier, decoder = paths[name]
        bench_settings = BenchSettings(
            seed=seed,
            eval_size=settings.eval_size,
            attack_size=settings.attack_size,
            attack_epochs=settings.attack_epochs,
            attacker=settings.attacker,
            repeats=settings.repeats,
            threads=threads,
            grid_samples=FIGURE_IMAGES,
        )
        benches[name] = run_bench(
            classifier, decoder, data, list(filters), bench_settings, progress=bench_progress, command=command
        )
        timings[f"bench_{name}"] = time.perf_counter() - step
    vicious, honest = benches["vicious"], benches["honest"]
    if not np.array_equal(vicious.originals, honest.originals):  # same seed, data and sizes: same images
        raise DataError("expected both models to be scored on the same evaluation images, got different ones")
    attacker = vicious.settings.get("attacker", settings.attacker)
    epochs = f"{settings.attack_epochs} epoch{'s' if settings.attack_epochs != 1 else ''}"
    attacker_text = (
        "the server's decoder as trained, a k-NN decoder on the released outputs or the label-only guess, whichever "
        "does best on held-out data (torch is not installed: no fine-tuning)"
        if attacker == "knn"
        else f"the server's decoder fine-tuned on filtered outputs ({epochs}), the decoder as trained, a k-NN decoder "
        "or the label-only guess, whichever does best on held-out data"
    )

    bench_dir = out / "bench"
    bench_dir.mkdir(exist_ok=True)
    files = {"folder": str(out)}
    for name, report in benches.items():
        for suffix, text in (
            ("md", report.to_markdown(f"edgeguard demo: output filters on the {name} model")),
            ("json", report.to_json()),
        ):
            target = bench_dir / f"{name}.{suffix}"
            target.write_text(text, encoding="utf-8")
            files[f"bench_{name}_{suffix}"] = str(target)
    say("writing attack.png")
    files["figure"] = str(_figure(out / "attack.png", vicious, honest, settings, seed, command, attacker_text))
    rows = _filter_rows("vicious", vicious) + _filter_rows("honest", honest)
    _write_filters_csv(out / "filters.csv", rows)
    files["filters"] = str(out / "filters.csv")

    # 2. Vetting.
    vets = {}
    for number, name in enumerate(("honest", "vicious"), start=3):
        classifier, _ = paths[name]
        say(f"{number}/4 vetting {classifier.name}")
        step = time.perf_counter()
        report = vet(
            classifier,
            data,
            seed=seed,
            progress=lambda message, name=name: say(f"    vet {name}: {message}"),
        )
        timings[f"vet_{name}"] = time.perf_counter() - step
        target = out / f"vet_{name}.json"
        target.write_text(report.to_json(), encoding="utf-8")
        files[f"vet_{name}"] = str(target)
        vets[name] = _vet_summary(name, report, classifier.name, target.name)

    problems = [
        f"the vet said {entry['verdict']} for {entry['file']}, expected {entry['expected']} ({entry['reasons'][0]})"
        if entry["reasons"]
        else f"the vet said {entry['verdict']} for {entry['file']}, expected {entry['expected']}"
        for entry in vets.values()
        if not entry["as_expected"]
    ]
    raw_vicious, raw_honest = vicious.row("none"), honest.row("none")
    result = DemoResult(
        settings={"seed": seed, "threads": threads, "command": command, **settings.to_dict()},
        data=source,
        assets={
            "folder": str(paths["vicious"][0].parent),
            "generated_by": manifest.get("command"),
            "generated": manifest.get("generated"),
            "models": {
                name: {
                    key: entry.get(key)
                    for key in ("classifier", "decoder", "decoder_kind", "accuracy", "psnr_db", "psnr_gain_db")
                }
                | {"epochs": entry.get("config", {}).get("epochs"), "arch": entry.get("config", {}).get("arch")}
                for name, entry in manifest.get("models", {}).items()
            },
            "verified_sha256": True,
        },
        attack={
            "vicious_raw": _leak(raw_vicious, "server"),
            "honest_raw": _leak(raw_honest, "server"),
            "label_only": dict(vicious.label_only),
            "vicious_raw_accuracy": vicious.raw_accuracy,
            "honest_raw_accuracy": honest.raw_accuracy,
            "attacker": attacker,
            "attacker_description": attacker_text,
            "attacker_short": (
                "attacker: k-NN or label-only, no fine-tuning without torch"
                if attacker == "knn"
                else f"attacker: decoder fine-tuned {epochs}"
            ),
            "figure_images": FIGURE_IMAGES,
        },
        vet=vets,
        filters=rows,
        files=files,
        timings=timings,
        problems=problems,
    )
    result.seconds = time.perf_counter() - started
    summary_json, summary_text = out / "summary.json", out / "summary.txt"
    files["summary_json"], files["summary_text"] = str(summary_json), str(summary_text)
    summary_json.write_text(result.to_json(), encoding="utf-8")
    summary_text.write_text(result.to_text(), encoding="utf-8")
    say(f"done in {result.seconds:.0f} s: {out}")
    return result
