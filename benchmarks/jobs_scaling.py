"""Local process pool vs Ray: ``benchmarks/detection.py --small`` with ``--jobs 2`` and with ``--ray auto``.

Each executor runs the small detection zoo from a cold cache (a fresh copy of benchmarks/*.py
in a temporary folder, so neither run reuses the other's trained models or vets), and the
script checks that both give the same numbers: every model's training figures and vet
statistics, and the fitted thresholds / TPR / FPR of the summary. Only times may differ.

    python benchmarks/jobs_scaling.py [--workers 2] [--timeout 600] [--detection-args '--no-trained-reference']

Results: benchmarks/results/jobs_scaling{.md,.json}. The machine has 2 CPU cores shared with
other work, so the wall times are noisy; ``--ray auto`` starts a local Ray instance (no
cluster here), whose start-up is included in its wall time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
_TIMING = ("seconds", "wall_seconds", "train_seconds", "generated")


def _timeless(value: Any) -> Any:
    """``value`` without wall-clock fields, paths of the temporary copy, or run settings."""
    if isinstance(value, dict):
        return {
            k: _timeless(v)
            for k, v in value.items()
            if k not in _TIMING and not k.endswith("_s") and "seconds" not in k and k not in ("settings", "machine")
        }
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if isinstance(value, str) and "/benchmarks/.cache/" in value:
        return value.split("/benchmarks/.cache/", 1)[1]  # the same file below either copy's cache
    return value


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def source_digest() -> str:
    """sha256 of every .py under edgeguard/, converters/ and benchmarks/ (the code both runs use)."""
    import hashlib

    digest = hashlib.sha256()
    for folder in ("edgeguard", "converters", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_one(label: str, flags: list[str], timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"edgeguard-jobs-{label}-"))
    (work / "benchmarks").mkdir()
    for script in (ROOT / "benchmarks").glob("*.py"):
        shutil.copy(script, work / "benchmarks" / script.name)
    command = [sys.executable, str(work / "benchmarks" / "detection.py"), "--small", "--no-write-thresholds", *flags]
    print(f"[jobs_scaling] {label}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and every worker it started
        process.communicate()
        raise SystemExit(f"{label} did not finish within {timeout:.0f} s") from None
    wall = time.perf_counter() - started
    done = subprocess.CompletedProcess(command, process.returncode, "", stderr)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((work / "benchmarks" / "results" / "detection_small.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return {"label": label, "flags": flags, "wall_seconds": wall, "summary": summary}


TINY_ZOO = [  # converters.ladder:train_through_filter params (1 epoch, 1000 images: seconds each)
    {"objective": "honest", "arch": "cnn", "filter": "none"},
    {"objective": "vicious", "arch": "cnn", "filter": "none"},
    {"objective": "vicious", "arch": "cnn", "filter": "softmax>round:2"},
    {"objective": "honest", "arch": "mlp", "filter": "none"},
    {"objective": "vicious", "arch": "mlp", "filter": "none"},
    {"objective": "vicious", "arch": "mlp", "filter": "softmax>round:2"},
]
_TINY_BASE = {"epochs": 1, "train_limit": 1000, "test_limit": 200, "cnn_width": 4, "decoder_channels": 8, "seed": 0}


def run_tiny(label: str, options: dict[str, Any], probe: Path, count: int = len(TINY_ZOO)) -> dict[str, Any]:
    """Train the tiny zoo, then vet every classifier, as jobs on one executor with a cold cache."""
    from edgeguard.jobs import Job, run_jobs
    from edgeguard.model import file_sha256

    cache = Path(tempfile.mkdtemp(prefix=f"edgeguard-jobs-{label}-"))
    print(f"[jobs_scaling] {label}: tiny zoo, {options}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    trained = run_jobs(
        [Job("converters.ladder:train_through_filter", {**_TINY_BASE, **spec}) for spec in TINY_ZOO[:count]],
        cache_dir=cache,
        description=f"{label} training",
        **options,
    )
    vets = run_jobs(
        [
            Job(
                "edgeguard.vetting.many:vet_job",
                {
                    "model": str(done.artifacts / "classifier.onnx"),
                    "model_sha256": file_sha256(done.artifacts / "classifier.onnx"),
                    "probe": str(probe),
                    "vet": {"tests": ["leakage"], "augment_seed": 12345},
                },
            )
            for done in trained
        ],
        cache_dir=cache,
        description=f"{label} vetting",
        **options,
    )
    wall = time.perf_counter() - started
    models = []
    for spec, done, vetted in zip(TINY_ZOO, trained, vets):
        report = vetted.result.get("report", {})
        leakage = report.get("tests", {}).get("leakage", {})
        models.append(
            {
                "spec": spec,
                "accuracy": done.result["accuracy"],
                "psnr_gain_db": done.result["psnr_gain_db"],
                "classifier_sha256": file_sha256(done.artifacts / "classifier.onnx"),
                "verdict": vetted.result.get("verdict"),
                "likelihood": vetted.result.get("likelihood"),
                "leakage_score": leakage.get("score"),
                "train_seconds": done.seconds,
                "vet_seconds": vetted.seconds,
            }
        )
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "label": label,
        "flags": [f"{k}={v}" for k, v in options.items()],
        "wall_seconds": wall,
        "summary": {"models": models},
    }


def _tiny_probe(folder: Path, size: int = 1000) -> Path:
    """``size`` Fashion-MNIST test images (100 per class, images 5000-9999) as an .npz probe set."""
    import numpy as np

    from edgeguard.data import load_fashion_mnist

    test = load_fashion_mnist("test")
    x, y = test.x[5000:], test.y[5000:]
    keep = np.concatenate([np.flatnonzero(y == c)[: size // 10] for c in range(10)])
    path = folder / "probe.npz"
    np.savez(path, x=(x[keep][:, 0] * 255).round().astype(np.uint8), y=y[keep], class_names=np.array(test.class_names))
    return path


_FROZEN = "EDGEGUARD_JOBS_SCALING_FROZEN"


def _rerun_frozen(results: Path) -> int:
    """Run this script again from a frozen copy of edgeguard/, converters/ and benchmarks/.

    The working tree is shared with other people editing it; both executors must run the
    same code, so the comparison runs from a snapshot (first on PYTHONPATH, also for the
    pool's and Ray's workers) and writes its results back to ``results``.
    """
    frozen = Path(tempfile.mkdtemp(prefix="edgeguard-jobs-frozen-"))
    ignore = shutil.ignore_patterns("__pycache__", ".cache", "results")
    for folder in ("edgeguard", "converters", "benchmarks"):
        shutil.copytree(ROOT / folder, frozen / folder, ignore=ignore)
    env = dict(os.environ, **{_FROZEN: "1", "PYTHONPATH": str(frozen)})
    command = [sys.executable, str(frozen / "benchmarks" / "jobs_scaling.py"), *sys.argv[1:], "--results", str(results)]
    try:
        return subprocess.run(command, env=env).returncode
    finally:
        shutil.rmtree(frozen, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument(
        "--detection-args", default="", help="extra flags for detection.py, e.g. '--no-trained-reference'"
    )
    parser.add_argument(
        "--zoo",
        choices=["detection", "tiny"],
        default="detection",
        help="detection: detection.py --small; tiny: one-epoch models + their vets, run here as jobs",
    )
    parser.add_argument("--models", type=int, default=len(TINY_ZOO), help="--zoo tiny: train the first N models")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not os.environ.get(_FROZEN):
        return _rerun_frozen(args.results)
    results_dir = args.results
    extra = args.detection_args.split()
    before = source_digest()
    if args.zoo == "tiny":
        probe = _tiny_probe(Path(tempfile.mkdtemp(prefix="edgeguard-jobs-probe-")))
        runs = [
            run_tiny("local", {"executor": "local", "workers": args.workers}, probe, args.models),
            run_tiny("ray", {"executor": "ray", "workers": args.workers, "ray_address": "auto"}, probe, args.models),
        ]
    else:
        runs = [
            run_one("local", ["--jobs", str(args.workers), *extra], args.timeout),
            run_one("ray", ["--ray", "auto", "--jobs", str(args.workers), *extra], args.timeout),
        ]
    source_changed = source_digest() != before  # someone edited the code between the runs
    local, ray = (_timeless(r["summary"]) for r in runs)
    differences = _differences(local, ray)
    models = len(runs[0]["summary"].get("models", []))
    result = {
        "benchmark": (
            "benchmarks/detection.py --small (cold caches), local pool vs Ray"
            if args.zoo == "detection"
            else "tiny zoo (one-epoch converters.ladder models + their vets, cold caches), local pool vs Ray"
        ),
        "identical": not differences,
        "source_changed_between_runs": source_changed,
        "source_sha256": before,
        "edgeguard_imported_from": str(Path(__import__("edgeguard").__file__).parent),  # the frozen copy
        "differences": differences[:50],
        "models": models,
        "runs": [{k: v for k, v in r.items() if k != "summary"} for r in runs],
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),  # measured, so a loaded machine shows in the results
        },
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    compared = (
        "every model's training and vet figures, thresholds, TPR/FPR"
        if args.zoo == "detection"
        else "every model's accuracy, decoder gain, classifier.onnx bytes, vet verdict, likelihood, leakage score"
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "jobs_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Jobs: local process pool vs Ray",
        "",
        f"{result['benchmark']}: {models} models trained and vetted, "
        f"{args.workers} workers each; generated {result['generated']} by "
        f"`benchmarks/jobs_scaling.py --zoo {args.zoo}`.",
        "",
        "| executor | flags | wall time (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['label']} | `{' '.join(r['flags'])}` | {r['wall_seconds']:.0f} |" for r in runs]
    lines += [
        "",
        f"Same numbers ({compared}): "
        f"**{'yes' if not differences else 'NO'}**" + ("" if not differences else f" ({len(differences)} differences)"),
        "",
        f"Machine: {result['machine']['cpus']} CPU cores, 1/5/15-minute load average at the end "
        f"{', '.join(f'{v:.2f}' for v in result['machine']['load_average'])}; Ray's wall time includes starting "
        "a local instance.",
    ]
    if args.zoo == "tiny":
        lines += [
            "",
            "The numbers both executors produced. One epoch on 1000 images: a smoke test of the job runner, "
            "not a detection result (these decoders do not beat the label-only baseline, so no model here is "
            "harmful). vicious = the paper's joint classifier+decoder training (attacker), a filter = trained "
            "through that release; the vet ran its leakage audit only (augment seed 12345).",
            "",
            "| model | filter | accuracy | decoder gain (dB) | vet verdict | leakage score |",
            "|---|---|---|---|---|---|",
        ]
        for m in runs[0]["summary"]["models"]:
            spec = m["spec"]
            score = m["leakage_score"]
            lines.append(
                f"| {spec['objective']} {spec['arch']} | `{spec['filter']}` | {m['accuracy']:.3f} | "
                f"{m['psnr_gain_db']:.2f} | {m['verdict']} | {score if score is None else f'{score:.3f}'} |"
            )
    if source_changed:
        lines += ["", "Warning: the source changed between the two runs (shared working tree); rerun to confirm."]
    if differences:
        lines += ["", "First differences:", ""] + [f"- `{d}`" for d in differences[:10]]
    (results_dir / "jobs_scaling.md").write_text("\n".join(lines) + "\n")
    fragment = [
        "| executor | wall time (s) | same numbers as the local pool |",
        "|---|---|---|",
        *[
            f"| {r['label']} (`{' '.join(r['flags'])}`) | {r['wall_seconds']:.0f} | "
            f"{'-' if r['label'] == 'local' else ('yes' if not differences else 'NO')} |"
            for r in runs
        ],
        "",
        f"{result['benchmark']}, {models} models, {result['machine']['cpus']} CPU cores, one run per executor; "
        "`python benchmarks/jobs_scaling.py --zoo " + args.zoo + "`. No attacker is measured here: "
        "this checks that the executors agree.",
    ]
    (results_dir / "jobs_scaling_readme.md").write_text("\n".join(fragment) + "\n")
    print("\n".join(lines))
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
