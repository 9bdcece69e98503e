"""Red team of the accuracy-lead adjustment: hide the model's accuracy with a few nodes, keep the server's gain.

The decision raises the excess over the honest twin for the model's accuracy lead over it
(``edgeguard.verdicts.rule.accuracy_adjustment``) and gives no credit to a model *less*
accurate than its twin. The cheapest answers, no training (``converters.attacks.accuracy_edits``):
lower the top-1 accuracy the client sees with an edit the provider's server undoes exactly.

* ``bias-shift``: ``+b`` on one class's logit (one ``Add``);
* ``swap-unsure``: the top two logits swapped on rows whose margin is below ``m``;
* ``swap-unsure+mul-head``: the same, the last ``Gemm`` rewritten as ``ReduceSum(Mul(h, W))``;
* ``swap-unsure+live-head``: the same, with the weight entering as ``W + 0 * mean(h)`` (not a
  graph constant, so the vet's layer probe no longer counts it as a dense layer).

Each edit is built on a held-out trained attacker (``finish-ce-cnn-s2`` by default: the one
whose raw excess sits closest to the margin), its parameter the smallest that takes top-1 on
the probe to ``--target-accuracy``; the server's undo is checked on the probe (largest absolute
error against the base model's outputs: the server then keeps the base model's gain, in
detection.md). Each model is vetted as ``benchmarks/detection.py`` vets (its settings, the
installed rule and thresholds). Writes ``benchmarks/results/redteam_hide_accuracy.{json,md}``.

The bias shift is also swept to lower top-1 targets (``--sweep``): a larger bias hides no more
of the recoverable accuracy, but it moves the leakage statistic itself.

Usage: ``python benchmarks/redteam_hide_accuracy.py [--model finish-ce-cnn-s2] [--target-accuracy 0.80]
[--sweep 0.75,0.70] [--supplied-twin honest-cnn-conv-s3]``
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import detection  # noqa: E402
from benchmarks import zoo as _zoo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _run(model: Any, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def build_edits(
    source: Path, images: np.ndarray, labels: np.ndarray, target: float, sweep: tuple[float, ...] = ()
) -> list[dict[str, Any]]:
    """The edited models (ModelProto) with their parameters, top-1 accuracy and the server's undo error.

    ``sweep``: further top-1 targets for the bias shift alone (a larger bias hides more accuracy).
    """
    import onnx

    from converters.attacks.accuracy_edits import (
        bias_shift,
        head_without_gemm,
        hide_accuracy,
        swap_unsure,
        undo_bias_shift,
        undo_swap_unsure,
    )

    base = onnx.load(str(source))
    logits = _run(base, images)
    bias = hide_accuracy("bias-shift", logits, labels, target)
    swap = hide_accuracy("swap-unsure", logits, labels, target)
    margin = swap["margin"]
    edits = [
        ("original", base, None, {}),
        ("bias-shift", bias_shift(base, bias=bias["bias"]), lambda o: undo_bias_shift(o, bias=bias["bias"]),
         {"bias": bias["bias"]}),
        ("swap-unsure", swap_unsure(base, margin=margin), lambda o: undo_swap_unsure(o, margin=margin),
         {"margin": margin}),
        ("swap-unsure+mul-head", swap_unsure(head_without_gemm(base), margin=margin),
         lambda o: undo_swap_unsure(o, margin=margin), {"margin": margin}),
        ("swap-unsure+live-head", swap_unsure(head_without_gemm(base, weight_from_input=True), margin=margin),
         lambda o: undo_swap_unsure(o, margin=margin), {"margin": margin}),
    ]
    for extra in sweep:
        b = hide_accuracy("bias-shift", logits, labels, extra)["bias"]
        edits.append((f"bias-shift@{extra:g}", bias_shift(base, bias=b), lambda o, b=b: undo_bias_shift(o, bias=b),
                      {"bias": b}))
    built = []
    for name, model, undo, params in edits:
        outputs = _run(model, images)
        built.append({
            "edit": name, "model": model, "params": params,
            "top1": float((outputs.argmax(1) == labels).mean()),
            "undo_max_abs_error": None if undo is None else float(np.abs(undo(outputs) - logits).max()),
        })
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="finish-ce-cnn-s2")
    parser.add_argument("--target-accuracy", type=float, default=0.80)
    parser.add_argument(
        "--sweep", default="0.75,0.70",
        help="further top-1 targets for the bias shift alone, vetted with the trained twin ('' for none)",
    )
    parser.add_argument(
        "--supplied-twin", default="honest-cnn-conv-s3",
        help="also vet each edit with this held-out honest zoo model as a supplied twin (--reference-model; '' for none): "
        "the edits the default twin cannot be trained through are then judged on their leakage",
    )
    args = parser.parse_args()
    import onnx

    entries = {e["name"]: e for e in _zoo.detection_zoo()}
    source = _zoo.folder_for(entries[args.model]["spec"]) / "classifier.onnx"
    if not source.is_file():
        print(f"expected the trained zoo model {source}; run benchmarks/detection.py --train-only", file=sys.stderr)
        return 2
    probe = detection._probe_set(1000)
    images = (probe.x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) if probe.x.max() > 1 else probe.x
    labels = np.asarray(probe.y)
    sweep = tuple(float(v) for v in args.sweep.split(",") if v.strip())
    built = build_edits(source, images.astype(np.float32), labels, args.target_accuracy, sweep)
    params = {"probe_size": 1000, "augment_seed": 12345, "reference_data": True}
    twins: list[tuple[str, dict[str, Any]]] = [("trained", {})]
    if args.supplied_twin:
        twin = _zoo.folder_for(entries[args.supplied_twin]["spec"]) / "classifier.onnx"
        twins.append((f"supplied: {args.supplied_twin}", {"reference_models": [str(twin)]}))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in built:
            path = Path(tmp) / f"{item['edit']}.onnx"
            onnx.save(item["model"], str(path))
            for twin_name, knobs in twins[:1] if "@" in item["edit"] else twins:
                print(f"vetting {item['edit']} ({twin_name} twin)", file=sys.stderr)
                record = detection.vet_job(dict(params, model=str(path), **knobs), Path(tmp))
                detection.redecide([{"vet": record}])
                leak = record["tests"]["leakage"]["details"]
                rows.append({
                    "edit": item["edit"], "twin": twin_name, "params": item["params"], "top1": item["top1"],
                    "undo_max_abs_error": item["undo_max_abs_error"], "verdict": record["verdict"],
                    "reason": (record["reasons"] or ["-"])[0], "excess_ci95_db": leak.get("ci95"),
                    "model_recoverable_accuracy": leak.get("model_recoverable_accuracy"),
                    "twin_recoverable_accuracy": leak.get("twin_recoverable_accuracy"),
                    "accuracy_gap": leak.get("accuracy_gap"), "trusted": leak.get("accuracy_measure_trusted"),
                    "seconds": record["seconds"],
                })
    result = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model, "target_accuracy": args.target_accuracy, "vets": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "note": "each edit is undone exactly by the provider's server (undo error on the probe), so its gain is the "
                "base model's (detection.md)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redteam_hide_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "redteam_hide_accuracy.md").write_text(render(result))
    print(render(result))
    return 0


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict[str, Any]) -> str:
    rows = result["vets"]
    lines = [
        "# Red team: hide the model's accuracy from the vet, keep the server's gain",
        "",
        f"Generated {result['generated']} by `benchmarks/redteam_hide_accuracy.py`; load average "
        f"{result['machine']['load_average'][0]:.2f}. Base: held-out trained attacker `{result['model']}`; each edit "
        f"(converters/attacks/accuracy_edits.py) takes its top-1 probe accuracy to <= {result['target_accuracy']:.2f} "
        "and is undone exactly by the provider's server (undo error below), which therefore keeps the base model's "
        "gain (detection.md). Vetted as benchmarks/detection.py vets, with the installed rule and thresholds. "
        "Accuracy lead = model minus twin *recoverable* accuracy (edgeguard/vetting/accuracy.py).",
        "",
        "| edit | twin | parameter | top-1 | recoverable (model / twin) | lead | measure trusted | excess over twin, "
        "95% CI (dB, raw) | server undo error | verdict | first reason |",
        "|---|---|---|---:|---|---:|---|---|---:|---|---|",
    ]
    for row in rows:
        ci = row["excess_ci95_db"] or [None, None]
        params = ", ".join(f"{k} {v:g}" for k, v in row["params"].items()) or "-"
        trusted = {True: "yes", False: "no", None: "-"}[row.get("trusted")]
        lines.append(
            f"| {row['edit']} | {row.get('twin', 'trained')} | {params} | {row['top1']:.3f} | "
            f"{_fmt(row['model_recoverable_accuracy'], '.3f')} / "
            f"{_fmt(row['twin_recoverable_accuracy'], '.3f')} | {_fmt(row['accuracy_gap'], '+.3f')} | {trusted} | "
            f"[{_fmt(ci[0], '.2f')}, {_fmt(ci[1], '.2f')}] | {_fmt(row['undo_max_abs_error'], '.1e')} | "
            f"{row['verdict']} | {row['reason'][:150]} |"
        )
    passed = [f"{r['edit']} ({r.get('twin', 'trained')} twin)" for r in rows if r["edit"] != "original"
              and r["verdict"] == "honest"]
    stopped = all(r["verdict"] != "honest" for r in rows if r["edit"] == "original")
    lines += ["", (f"**Passed as honest: {', '.join(passed)}**" + (" (the original is stopped)." if stopped else ".")
                   if passed else "No edit passes as honest.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
