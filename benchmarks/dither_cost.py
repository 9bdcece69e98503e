"""Accuracy cost of SafeModel's default input dither (vet v3, issue 17).

SafeModel adds uniform noise of +-half a grey level (secure generator, clipped) to image
inputs by default whenever the release is more than the label, so that a switch on the 8-bit
pixel grid never fires in deployment. This measures what it costs an honest model: accuracy
with and without the dither on the Fashion-MNIST test set (10000 images), and the share of
images whose released top-1 label changes, over several dither draws, for the bundled honest
and vicious CNNs (edgeguard/assets).

Usage: ``python benchmarks/dither_cost.py [--limit N] [--draws D]``
Results: benchmarks/results/dither_cost.{json,md} (machine, settings and measured load included).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
RELEASES = ("softmax>round:2", "round:3", "softmax>top_k:3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10000, help="test images (default: all 10000)")
    parser.add_argument("--draws", type=int, default=3, help="independent dither draws per release")
    args = parser.parse_args()

    from edgeguard import SafeModel
    from edgeguard.data import load_fashion_mnist
    from edgeguard.filters import parse_filter_spec

    test = load_fashion_mnist("test")
    x, y = test.x[: args.limit].astype(np.float32), test.y[: args.limit]
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for name in ("honest", "vicious"):
        path = ROOT / "edgeguard" / "assets" / f"{name}.onnx"
        for spec in RELEASES:
            filters = parse_filter_spec(spec).build
            plain = SafeModel(path, filters=filters(), input_dither=False).predict(x, seed=0).argmax(axis=1)
            model = SafeModel(path, filters=filters())
            assert model.input_dither, "the dither is on by default for this release"
            changed, accuracy = [], []
            for _ in range(args.draws):
                dithered = model.predict(x).argmax(axis=1)  # fresh OS randomness each call
                changed.append(float((dithered != plain).mean()))
                accuracy.append(float((dithered == y).mean()))
            rows.append({
                "model": name, "release": spec, "accuracy_without": float((plain == y).mean()),
                "accuracy_with_mean": float(np.mean(accuracy)), "accuracy_with_min": float(np.min(accuracy)),
                "label_changed_mean": float(np.mean(changed)), "label_changed_max": float(np.max(changed)),
            })
            print(rows[-1], file=sys.stderr)
    record = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "settings": {"images": len(x), "draws": args.draws, "dither": "uniform +-0.5/255 (SafeModel default)"},
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dither_cost.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Accuracy cost of SafeModel's default input dither",
        "",
        f"Fashion-MNIST test set, {len(x)} images; {args.draws} independent dither draws per release; bundled CNNs "
        f"(edgeguard/assets). Generated {record['generated']} on {os.cpu_count()} CPUs "
        f"(load average {load_before[0]:.1f} before, {record['machine']['load_average_after'][0]:.1f} after).",
        "",
        "| model | release | accuracy % without | with (mean / min) | top-1 label changed % (mean / max) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | `{r['release']}` | {100 * r['accuracy_without']:.2f} | "
            f"{100 * r['accuracy_with_mean']:.2f} / {100 * r['accuracy_with_min']:.2f} | "
            f"{100 * r['label_changed_mean']:.2f} / {100 * r['label_changed_max']:.2f} |"
        )
    (RESULTS / "dither_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
