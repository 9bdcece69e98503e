"""Vet time with the honest twin on the held-out FMNIST CNNs (issue 17's target: median <= 20 s).

Vets the held-out zoo's CNNs one after the other in this process, as an app developer's CI would
(default vet, its default tests, the trained twin, ``--reference-data``: the detection benchmark's
settings, :func:`benchmarks.detection.vet_job`'s knobs), with torch using every core of the
machine (``--threads``), and writes ``benchmarks/results/vet_time.{json,md}``: each vet's wall
time and the split between the model's audit, the twin's training and the twin's audit, the
median with a bootstrap interval, and the load average before and after (the machine is shared:
run it when nothing else runs and check the load it records).

Usage: ``python benchmarks/vet_time.py [--models honest-cnn-conv-s2,...] [--threads N]``
(models are trained, or reused from benchmarks/.cache/zoo, by benchmarks/detection.py).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import detection  # noqa: E402
from benchmarks import zoo as _zoo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MODELS = (
    "honest-cnn-conv-s2", "honest-cnn-conv-s3", "honest-cnn-under-s2", "honest-cnn-under-s3",
    "paper-logits-cnn-s2", "paper-logits-cnn-s3", "finish-ce-cnn-s2",
)


def _phases(messages: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds between the vet's progress messages, grouped into the phases they announce."""
    out: dict[str, float] = {}
    marks = messages + [(total, "end")]
    for (start, text), (stop, _) in zip(marks, marks[1:]):
        key = ("twin training" if "training the honest twin" in text
               else "twin audit" if "audit of the" in text and "twin" in text
               else "model audit" if text.startswith("leakage audit") else "other checks")
        out[key] = out.get(key, 0.0) + (stop - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and onnxruntime threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from edgeguard.vetting import vet

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    entries = {e["name"]: e for e in _zoo.detection_zoo()}
    missing = [n for n in names if n not in entries or not (_zoo.folder_for(entries[n]["spec"]) / "classifier.onnx").is_file()]
    if missing:
        print(f"expected trained zoo models, missing {missing}; run benchmarks/detection.py --train-only", file=sys.stderr)
        return 2
    probe, reference = detection._probe_set(1000), detection._reference_set()
    load_before = list(os.getloadavg())
    rows = []
    for name in names:
        path = _zoo.folder_for(entries[name]["spec"]) / "classifier.onnx"
        messages: list[tuple[float, str]] = []
        started = time.perf_counter()
        report = vet(str(path), probe, seed=0, augment_seed=12345, reference_data=reference,
                     progress=lambda m, log=messages, t0=started: log.append((time.perf_counter() - t0, m)))
        seconds = time.perf_counter() - started
        rows.append({"name": name, "seconds": seconds, "verdict": report.verdict, "phases": _phases(messages, seconds)})
        print(f"{name}: {seconds:.1f} s ({report.verdict})", file=sys.stderr)
    summary = detection.median_ci([r["seconds"] for r in rows])
    result = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"threads": args.threads, "probe_size": 1000, "reference_data": "2000 FMNIST training images",
                     "models": names},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
        "vets": rows,
        "median_seconds": summary,
        "target_seconds": 20.0,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vet_time.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "vet_time.md").write_text(render(result))
    print(render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    median = result["median_seconds"]
    machine = result["machine"]
    lines = [
        "# Vet time with the honest twin (held-out FMNIST CNNs)",
        "",
        f"Generated {result['generated']}; {machine['cpus']} CPU cores, torch/onnxruntime threads "
        f"{result['settings']['threads']}; load average before {machine['load_average_before'][0]:.2f}, after "
        f"{machine['load_average_after'][0]:.2f} (1-minute). Default vet (consistency, precision, continuity, leakage "
        "with the trained twin), 1000-image probe, --reference-data 2000 labelled training images.",
        "",
        f"**Median {median['median']:.1f} s [95% bootstrap {median['ci95'][0]:.1f}, {median['ci95'][1]:.1f}] over "
        f"{len(result['vets'])} vets; target <= {result['target_seconds']:.0f} s: "
        f"{'met' if median['median'] <= result['target_seconds'] else 'NOT met'}.**",
        "",
        "| model | verdict | wall s | model audit s | twin training s | twin audit s | other checks s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["vets"]:
        p = row["phases"]
        lines.append(
            f"| {row['name']} | {row['verdict']} | {row['seconds']:.1f} | {p.get('model audit', 0):.1f} | "
            f"{p.get('twin training', 0):.1f} | {p.get('twin audit', 0):.1f} | {p.get('other checks', 0):.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
