"""Red team of the accuracy-lead adjustment: give up accuracy with one ``Add`` to void it.

The decision raises the excess over the honest twin for the model's accuracy lead over it
(``edgeguard.verdicts.rule.accuracy_adjustment``), and gives no credit to a model *less*
accurate than its twin. The cheapest answer, no training: add a constant to one class's
logit until the model's top-1 accuracy on the probe falls below the twin's. The provider's
server subtracts the constant and keeps its whole gain; the vet then judges the raw excess.
This script builds that edit on a held-out trained attacker (``finish-ce-cnn-s2`` by default,
the one whose raw excess sits under the margin), vets the original and the edit with the
detection benchmark's settings (:func:`benchmarks.detection.vet_job`), and writes
``benchmarks/results/redteam_bias_shift.{json,md}``.

Usage: ``python benchmarks/redteam_bias_shift.py [--model finish-ce-cnn-s2] [--target-accuracy 0.80]``
(the zoo model is trained, or reused from benchmarks/.cache/zoo, by benchmarks/detection.py).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import detection  # noqa: E402
from benchmarks import zoo as _zoo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def shifted(source: Path, target: Path, images: np.ndarray, labels: np.ndarray, accuracy: float) -> dict:
    """``source`` with ``+b`` on class 0's logit, ``b`` the smallest multiple of 0.25 reaching ``accuracy``."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    before = float((logits.argmax(1) == labels).mean())
    bias = 0.0
    after = before
    while after > accuracy and bias < 20:
        bias += 0.25
        moved = logits.copy()
        moved[:, 0] += bias
        after = float((moved.argmax(1) == labels).mean())
    name = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}_unshifted" if o == name else o for o in node.output]
    vector = np.zeros((1, logits.shape[1]), np.float32)
    vector[0, 0] = bias
    model.graph.initializer.append(numpy_helper.from_array(vector, "redteam_shift"))
    model.graph.node.append(helper.make_node("Add", [f"{name}_unshifted", "redteam_shift"], [name]))
    onnx.save(model, str(target))
    return {"bias": bias, "accuracy_before": before, "accuracy_after": after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="finish-ce-cnn-s2")
    parser.add_argument("--target-accuracy", type=float, default=0.80)
    args = parser.parse_args()
    entries = {e["name"]: e for e in _zoo.detection_zoo()}
    source = _zoo.folder_for(entries[args.model]["spec"]) / "classifier.onnx"
    if not source.is_file():
        print(f"expected the trained zoo model {source}; run benchmarks/detection.py --train-only", file=sys.stderr)
        return 2
    probe = detection._probe_set(1000)
    images = (probe.x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) if probe.x.max() > 1 else probe.x
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "shifted.onnx"
        edit = shifted(source, target, images.astype(np.float32), np.asarray(probe.y), args.target_accuracy)
        params = {"probe_size": 1000, "augment_seed": 12345, "reference_data": True}
        rows = []
        for label, path in (("original", source), ("bias-shifted", target)):
            record = detection.vet_job(dict(params, model=str(path)), Path(tmp))
            detection.redecide([{"vet": record}])
            leak = record["tests"]["leakage"]["details"]
            rows.append({"model": label, "verdict": record["verdict"], "reason": (record["reasons"] or ["-"])[0],
                         "accuracy": record["accuracy_probe"], "excess_ci95_db": leak.get("ci95"),
                         "accuracy_gap": leak.get("accuracy_gap"), "seconds": record["seconds"]})
    result = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model, "edit": edit, "vets": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "note": "the provider's server subtracts the known constant, so its gain is the original model's",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redteam_bias_shift.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Red team: void the accuracy-lead adjustment with one Add (bias shift)",
        "",
        f"Generated {result['generated']}; load average {result['machine']['load_average'][0]:.2f}. Base: held-out "
        f"`{args.model}`; edit: +{edit['bias']:.2f} on class 0's logit, top-1 probe accuracy "
        f"{edit['accuracy_before']:.3f} -> {edit['accuracy_after']:.3f}. The provider's server subtracts the constant: its "
        "gain is the base model's (benchmarks/results/detection.md). Vet as benchmarks/detection.py runs it, the "
        "installed rule and thresholds.",
        "",
        "| model | probe accuracy | accuracy lead over twin | excess over twin, 95% CI (dB, raw) | verdict | first reason |",
        "|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        ci = row["excess_ci95_db"] or [float("nan")] * 2
        gap = row["accuracy_gap"]
        lines.append(
            f"| {row['model']} | {row['accuracy']:.3f} | {'-' if gap is None else f'{gap:+.3f}'} | "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] | {row['verdict']} | {row['reason'][:160]} |"
        )
    passed = rows[1]["verdict"] == "honest" and rows[0]["verdict"] != "honest"
    lines += ["", ("**The edit passes as honest** while the original is stopped: giving up accuracy voids the "
                   "adjustment. Not fixed: see the README (vet) for the proposed fix." if passed else
                   "The edit does not pass.")]
    (RESULTS / "redteam_bias_shift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
