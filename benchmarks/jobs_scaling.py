"""Local process pool vs Ray: ``benchmarks/detection.py --small`` with ``--jobs 2`` and with ``--ray auto``.

Each executor runs the small detection zoo from a cold cache (a fresh copy of benchmarks/*.py
in a temporary folder, so neither run reuses the other's trained models or vets), and the
script checks that both give the same numbers: every model's training figures and vet
statistics, and the fitted thresholds / TPR / FPR of the summary. Only times may differ.

    python benchmarks/jobs_scaling.py [--workers 2] [--timeout 600]

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
            if k not in _TIMING and not k.endswith(("_s", "_seconds")) and k not in ("settings", "machine")
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


def run_one(label: str, flags: list[str], timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"edgeguard-jobs-{label}-"))
    (work / "benchmarks").mkdir()
    for script in (ROOT / "benchmarks").glob("*.py"):
        shutil.copy(script, work / "benchmarks" / script.name)
    command = [sys.executable, str(work / "benchmarks" / "detection.py"), "--small", "--no-write-thresholds", *flags]
    print(f"[jobs_scaling] {label}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((work / "benchmarks" / "results" / "detection_small.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return {"label": label, "flags": flags, "wall_seconds": wall, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()
    runs = [
        run_one("local", ["--jobs", str(args.workers)], args.timeout),
        run_one("ray", ["--ray", "auto", "--jobs", str(args.workers)], args.timeout),
    ]
    local, ray = (_timeless(r["summary"]) for r in runs)
    differences = _differences(local, ray)
    models = len(runs[0]["summary"].get("models", []))
    result = {
        "benchmark": "benchmarks/detection.py --small (cold caches), local pool vs Ray",
        "identical": not differences,
        "differences": differences[:50],
        "models": models,
        "runs": [{k: v for k, v in r.items() if k != "summary"} for r in runs],
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "note": "2 CPU cores shared with other agents' jobs: wall times are noisy",
        },
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jobs_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Jobs: local process pool vs Ray",
        "",
        f"`benchmarks/detection.py --small` ({models} models trained and vetted, cold caches), "
        f"{args.workers} workers each; generated {result['generated']} by `benchmarks/jobs_scaling.py`.",
        "",
        "| executor | flags | wall time (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['label']} | `{' '.join(r['flags'])}` | {r['wall_seconds']:.0f} |" for r in runs]
    lines += [
        "",
        f"Same numbers (every model's training and vet figures, thresholds, TPR/FPR): "
        f"**{'yes' if not differences else 'NO'}**" + ("" if not differences else f" ({len(differences)} differences)"),
        "",
        "Machine: 2 CPU cores shared with other work (noisy); Ray's wall time includes starting a local instance.",
    ]
    if differences:
        lines += ["", "First differences:", ""] + [f"- `{d}`" for d in differences[:10]]
    (RESULTS / "jobs_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
