"""How the vet's time and memory grow with the input size and the probe size.

Untrained classifiers (hand-built ONNX graphs, seeded weights): a small strided CNN with
baked mean/std normalisation for images (28x28 grey, 64x64 RGB, 224x224 RGB; the 224x224 one
is wider, 10-16 ms per image on one core of this shared machine) and an MLP for vectors (30 and
784 features). Probe sets are seeded synthetic data (smooth random images / Gaussian features,
10 balanced classes): only time and memory are measured here, no attacker.

Each configuration runs ``edgeguard vet``'s default tests (consistency, precision, continuity and
leakage, with the honest twin trained inside the leakage test) in a fresh subprocess; its peak
resident memory is that process's ``ru_maxrss``. The precision check caps its rows on large
inputs (:func:`edgeguard.vetting.precision.rows_per_view`; the cap is in the table's notes). The leakage audit
regresses a fixed-size target (:mod:`edgeguard.vetting.targets`): the pixels up to 4096 values,
a 32x32 thumbnail beyond (64x64 RGB and 224x224 RGB), standardised features for vectors.

The honest twin is trained only within its static cost budget (``--reference-max-gmac``,
:mod:`edgeguard.vetting.cost`): the table gives each run's estimate and whether the twin was
trained or refused by the budget (a refused twin leaves the verdict inconclusive).

Run: ``OMP_NUM_THREADS=1 python benchmarks/vet_scaling.py`` (writes
``benchmarks/results/vet_scaling.{md,json}``; ``--quick`` for a reduced grid; ``--only
224x224:1000,30:500`` re-runs only those runs (input name prefix, optionally ``:probe size``)
and keeps the others from the last results; ``--out`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeguard.vetting.settings import DEFAULT_TESTS

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10
#: (name, sample shape) of every input size measured.
INPUTS = {
    "28x28 grey": (1, 28, 28),
    "64x64 RGB": (3, 64, 64),
    "224x224 RGB": (3, 224, 224),
    "224x224 RGB wide": (3, 224, 224),  # twice the multiply-accumulates (WIDE): the target's ~10 ms/image on a quiet core
    "30 features": (30,),
    "784 features": (784,),
}
TARGET_SECONDS = 60.0  # 224x224 RGB, ~10 ms/image, 1000-image probe
#: Conv widths of the 224x224 models: the default (~300 MMAC per image) and the wide one (~600 MMAC).
WIDTHS = {"224x224 RGB": (48, 96, 160, 160), "224x224 RGB wide": (64, 144, 224, 224)}


def build_model(shape: tuple[int, ...], path: Path, seed: int = 0, widths: tuple[int, ...] | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    if len(shape) == 1:
        f = shape[0]
        const("mean", np.zeros(f))
        nodes += [helper.make_node("Sub", ["x", "mean"], ["h0"])]
        size, last = f, "h0"
        for i, units in enumerate((64, 64)):
            const(f"w{i}", rng.normal(size=(size, units)) / np.sqrt(size))
            nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
            size, last = units, f"r{i}"
        const("wo", rng.normal(size=(size, CLASSES)) / np.sqrt(size))
        nodes.append(helper.make_node("MatMul", [last, "wo"], ["logits"]))
        dims = ["N", f]
    else:
        c = shape[0]
        const("mean", np.full((1, c, 1, 1), 0.45))
        const("std", np.full((1, c, 1, 1), 0.25))
        nodes += [helper.make_node("Sub", ["x", "mean"], ["c0"]), helper.make_node("Div", ["c0", "std"], ["h0"])]
        channels, last = c, "h0"
        # wider for 224x224 RGB (WIDTHS); the target model is ~10 ms per image on one core
        widths = widths or (WIDTHS["224x224 RGB"] if shape[1] >= 224 else (32, 64, 128, 128))
        for i, width in enumerate(widths):
            const(f"k{i}", rng.normal(size=(width, channels, 3, 3)) / np.sqrt(9 * channels))
            nodes += [
                helper.make_node("Conv", [last, f"k{i}"], [f"v{i}"], strides=[2, 2], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", [f"v{i}"], [f"a{i}"]),
            ]
            channels, last = width, f"a{i}"
        const("wo", rng.normal(size=(channels, CLASSES)) / np.sqrt(channels))
        nodes += [
            helper.make_node("GlobalAveragePool", [last], ["g"]),
            helper.make_node("Flatten", ["g"], ["gf"]),
            helper.make_node("MatMul", ["gf", "wo"], ["logits"]),
        ]
        dims = ["N", *shape]
    graph = helper.make_graph(
        nodes, "scaling", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def build_probe(shape: tuple[int, ...], n: int, path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    if len(shape) == 1:
        x = rng.normal(size=(n, shape[0])).astype(np.float32) + y[:, None].astype(np.float32) * 0.1
    else:
        c, h, w = shape
        coarse = rng.uniform(size=(n, c, 8, 8)).astype(np.float32)
        x = np.clip(np.kron(coarse, np.ones((1, 1, h // 8 + 1, w // 8 + 1), np.float32))[:, :, :h, :w], 0, 1)
        x = (x * 255).astype(np.uint8)  # uint8 on disk: the loader scales to [0, 1]
    np.savez(path, x=x, y=y)
    return path


def model_ms_per_image(path: Path, shape: tuple[int, ...]) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(size=(32, *shape)).astype(np.float32)
    session.run(None, {"x": x[:4]})
    started = time.perf_counter()
    session.run(None, {"x": x})
    return (time.perf_counter() - started) / len(x) * 1000


def one(config: dict) -> dict:
    """Run in a fresh process: build, vet, report time and peak memory."""
    import edgeguard

    shape = tuple(config["shape"])
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(shape, Path(folder) / "model.onnx", widths=WIDTHS.get(config["input"]))
        probe = build_probe(shape, config["probe"], Path(folder) / "probe.npz")
        ms = model_ms_per_image(model, shape)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        report = edgeguard.vet(model, probe, seed=0, augment_seed=1)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    leakage = report.tests.get("leakage")
    details = (leakage.details or {}) if leakage is not None else {}
    records = [details["twin"]] if isinstance(details.get("twin"), dict) else list(details.get("twins") or [])
    twin = next((r for r in records if isinstance(r, dict) and r.get("kind") == "trained"), {})
    precision = report.tests.get("precision")
    cost = twin.get("cost") or {}
    if twin.get("refused") == "cost":
        twin_status = "refused by the budget"
    elif twin.get("used") is True:
        twin_status = "trained"
    elif twin.get("error") or twin.get("used") is False:
        twin_status = "trained, not usable" if twin.get("used") is False else "failed"
    else:
        twin_status = "none"
    return {
        **config,
        "vet_seconds": round(seconds, 2),
        # CPU time of the vet: on a loaded shared machine the wall time above overstates the cost
        "vet_cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "leakage_seconds": round(leakage.seconds, 2) if leakage is not None else None,
        "leakage_target": details.get("target"),
        # where the time goes: every test's own seconds, and the honest twin's training inside the leakage test
        "test_seconds": {name: round(test.seconds, 2) for name, test in report.tests.items() if test is not None},
        "twin_seconds": round(float(twin["seconds"]), 2) if isinstance(twin.get("seconds"), int | float) else None,
        "twin_status": twin_status,
        "twin_gmac": round(float(cost["training_gmac"]), 1) if cost.get("training_gmac") is not None else None,
        "twin_max_gmac": twin.get("max_gmac"),
        "precision_rows": (precision.details or {}).get("rows") if precision is not None else None,
        "precision_row_cap": (precision.details or {}).get("row_cap") if precision is not None else None,
        "continuity_row_cap": (report.tests["continuity"].details or {}).get("row_cap")
        if report.tests.get("continuity") is not None else None,
        "consistency_batch_cap": (report.tests["consistency"].details or {}).get("batch_cap")
        if report.tests.get("consistency") is not None else None,
        "verdict": report.verdict,
        "model_ms_per_image_1_thread": round(ms, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def grid(quick: bool) -> list[dict]:
    """Every run; the target run (224x224 RGB, 1000 images) first, the other large-image runs last."""
    configs = [{"input": "224x224 RGB", "shape": list(INPUTS["224x224 RGB"]), "probe": 1000}]
    configs += [{"input": n, "shape": list(shape), "probe": 1000} for n, shape in INPUTS.items() if n != "224x224 RGB"]
    configs.sort(key=lambda c: {"224x224 RGB": 0, "224x224 RGB wide": 1}.get(c["input"], 2))  # the two 224 models first
    probes = (500, 2000) if quick else (500, 2000, 4000)
    for name in ("28x28 grey", "30 features"):
        configs += [{"input": name, "shape": list(INPUTS[name]), "probe": n} for n in probes]
    configs += [{"input": "224x224 RGB", "shape": list(INPUTS["224x224 RGB"]), "probe": 500}]
    if not quick:
        configs += [{"input": "224x224 RGB", "shape": list(INPUTS["224x224 RGB"]), "probe": 2000}]
    return configs


def selected(only: str, configs: list[dict]) -> list[dict]:
    """The runs named by ``--only`` ('224x224:1000,30 features'): input name prefix, optional ':probe size'.

    A name with a probe size not in the grid is still run (that input at that size).
    """
    chosen: list[dict] = []
    for item in filter(None, (part.strip() for part in only.split(","))):
        name, _, size = item.partition(":")
        inputs = [n for n in INPUTS if n == name.strip()] or sorted(
            (n for n in INPUTS if n.startswith(name.strip())), key=len)[:1]  # a shared prefix: the shortest name
        if len(inputs) != 1:
            raise SystemExit(f"expected --only items naming one of {list(INPUTS)} (a prefix), got {item!r}")
        if size:
            config = {"input": inputs[0], "shape": list(INPUTS[inputs[0]]), "probe": int(size)}
            found = [config]
        else:
            found = [c for c in configs if c["input"] == inputs[0]]
        chosen += [c for c in found if c not in chosen]
    return chosen


def markdown(report: dict) -> str:
    rows = sorted(report["runs"], key=lambda r: (list(INPUTS).index(r["input"]), r["probe"]))
    target = next((r for r in rows if r["input"] == "224x224 RGB" and r["probe"] == 1000), None)
    lines = [
        "# Vet time and memory against input size and probe size",
        "",
        f"Written by `benchmarks/vet_scaling.py`: `edgeguard.vet` with its default tests "
        f"({', '.join(report.get('tests', ['consistency', 'leakage']))}), "
        "untrained seeded models, synthetic probes (time and memory only; no attacker is measured). Each row is a "
        "fresh process; peak memory is its `ru_maxrss`. The machine is shared: wall times move with the load "
        "(recorded below, and per run: the 1/5/15-minute load averages when it started), CPU time less so "
        "('-': not measured for that row). The default vet (v3) trains an honest twin of the vetted graph "
        "(re-initialised, the claimed loss only) inside the leakage test: its own column.",
        "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs (shared with other jobs); "
        f"load average before {report['machine']['load_average_before']}, after "
        f"{report['machine']['load_average_after']}. Grid: {report['grid']}.",
        "",
    ]
    if target is not None:
        met = target["vet_seconds"] <= TARGET_SECONDS
        lines += [
            f"Target (224x224 RGB model of ~10 ms/image, 1000-image probe, vetted in <= {TARGET_SECONDS:g} s): "
            f"**{'met' if met else 'NOT met'}** in wall time: {target['vet_seconds']:.1f} s "
            f"({target.get('vet_cpu_seconds', '?')} s of CPU time) with a "
            f"{target['model_ms_per_image_1_thread']:.1f} ms/image model (one thread, batch 32, measured in the same "
            "loaded process)"
            + (" - without an honest twin (refused by its cost budget), so not a pass." if target.get("twin_status")
               == "refused by the budget" else "."),
            "",
        ]
        tests = target.get("test_seconds") or {}
        if target.get("twin_status") == "refused by the budget":
            lines += [
                f"The honest twin was not trained: its training is estimated at {target.get('twin_gmac')} GMAC, over "
                f"the budget of {target.get('twin_max_gmac')} GMAC (verdict {target['verdict']}: pass "
                "--reference-model, or raise --reference-max-gmac). Where the time goes: leakage "
                f"{tests.get('leakage', '-')} s, consistency {tests.get('consistency', '-')} s, continuity "
                f"{tests.get('continuity', '-')} s, precision {tests.get('precision', '-')} s; peak memory "
                f"{target['peak_rss_mib']:.0f} MiB.",
                "",
            ]
        elif target.get("twin_seconds") is not None:
            lines += [
                f"Where that time goes: training the honest twin {target['twin_seconds']:.0f} s (inside the leakage "
                f"test, {tests.get('leakage', float('nan')):.0f} s in all), consistency {tests.get('consistency', '-')} s, "
                f"continuity {tests.get('continuity', '-')} s, precision {tests.get('precision', '-')} s; peak memory "
                f"{target['peak_rss_mib']:.0f} MiB.",
                "",
            ]
    elif "224x224 RGB / 1000" in report.get("planned", ["224x224 RGB / 1000"]):
        lines += [
            f"Target (224x224 RGB model of ~10 ms/image, 1000-image probe, vetted in <= {TARGET_SECONDS:g} s): "
            "**NOT met**: that run did not finish (see the failed runs below).",
            "",
        ]
    else:
        lines += ["Target run (224x224 RGB, 1000-image probe): not part of this selection.", ""]
    wide = next((r for r in rows if r["input"] == "224x224 RGB wide" and r["probe"] == 1000), None)
    if wide is not None:
        lines += [
            f"The same with the wide 224x224 RGB model (conv widths {WIDTHS['224x224 RGB wide']}, about twice the "
            f"multiply-accumulates): {wide['vet_seconds']:.1f} s wall with a {wide['model_ms_per_image_1_thread']:.1f} "
            f"ms/image model: target **{'met' if wide['vet_seconds'] <= TARGET_SECONDS else 'NOT met'}** "
            f"({wide['verdict']}).",
            "",
        ]
    lines += [
        "| input | probe | leakage target | model ms/image | vet wall (s) | vet CPU (s) | of which leakage, wall (s) "
        "| twin cost estimate (GMAC) | twin | of which twin training (s) | precision (s) | continuity (s) "
        "| consistency (s) | peak memory (MiB) | load before | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    for r in rows:
        tests = r.get("test_seconds") or {}
        lines.append(
            f"| {r['input']} | {r['probe']} | {r['leakage_target']} | {r['model_ms_per_image_1_thread']:.2f} | "
            f"{r['vet_seconds']:.1f} | {r.get('vet_cpu_seconds', '-')} | {cell(r['leakage_seconds'])} | "
            f"{cell(r.get('twin_gmac'))} | {cell(r.get('twin_status'))} | {cell(r.get('twin_seconds'))} | {cell(tests.get('precision'))} | {cell(tests.get('continuity'))} | "
            f"{cell(tests.get('consistency'))} | {r['peak_rss_mib']:.0f} | {cell(r.get('load_before'))} | "
            f"{r['verdict']} |"
        )
    budgets = sorted({r["twin_max_gmac"] for r in rows if r.get("twin_max_gmac") is not None})
    if budgets:
        lines += ["", "Twin cost budget (`--reference-max-gmac`): " + ", ".join(f"{b:g}" for b in budgets) + " GMAC; "
                  "the estimate is MACs per sample x steps x batch x 3, from the graph (edgeguard.vetting.cost)."]
    caps = sorted({f"{r['input']}: {r['precision_row_cap']}" for r in rows if r.get("precision_row_cap")})
    if caps:
        lines += ["", "Precision check row caps (stated in each report's details): " + "; ".join(caps) + "."]
    for key, what in (("continuity_row_cap", "Continuity row caps"), ("consistency_batch_cap", "Consistency batch caps")):
        caps = sorted({f"{r['input']}: {r[key]}" for r in rows if r.get(key)})
        if caps:
            lines += ["", f"{what} (stated in each report's details): " + "; ".join(caps) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a reduced grid")
    parser.add_argument(
        "--only",
        help="re-run only these runs, keeping the others from the last results: comma-separated input name prefixes, "
        "each optionally with ':<probe size>' (e.g. '224x224:1000' or '28x28:500,30 features:500')",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "vet_scaling")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it is recorded as timed out")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "grid": "quick" if args.quick else "full",
        "tests": list(DEFAULT_TESTS),
        "runs": [],
    }
    configs = grid(args.quick)
    report["planned"] = [f"{c['input']} / {c['probe']}" for c in configs]
    if args.only:  # keep the other runs from the last results (when there are any)
        chosen = selected(args.only, configs)
        last = args.out.with_suffix(".json")
        previous = json.loads(last.read_text()) if last.exists() else {"runs": [], "grid": "none"}
        keys = {(c["input"], c["probe"]) for c in chosen}
        report["runs"] = [r for r in previous["runs"] if (r["input"], r["probe"]) not in keys]
        report["grid"] = previous.get("grid", report["grid"]) + f"; '{args.only}' re-run"
        report["planned"] = [f"{c['input']} / {c['probe']}" for c in chosen] + [
            f"{r['input']} / {r['probe']}" for r in report["runs"]
        ]
        configs = chosen
    for config in configs:
        print(f"vet {config['input']} with {config['probe']} samples", file=sys.stderr, flush=True)
        load_before = [round(v, 2) for v in os.getloadavg()]
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(config)], capture_output=True, text=True, check=False,
                timeout=args.timeout,
            )
        except subprocess.TimeoutExpired:
            report["runs"].append({**config, "error": f"timed out after {args.timeout:g} s", "load_before": load_before})
            _write(report, args.out)
            continue
        if done.returncode != 0:
            report["runs"].append({**config, "error": f"exit {done.returncode}: {done.stderr[-300:]}"})
            print(done.stderr[-2000:], file=sys.stderr)
        else:
            report["runs"].append({**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load_before})
        _write(report, args.out)  # after every run: a long grid leaves its results so far
    print(_write(report, args.out))


def _write(report: dict, out: Path) -> str:
    report["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown({**report, "runs": [r for r in report["runs"] if "error" not in r]})
    failed = [r for r in report["runs"] if "error" in r]
    done = {f"{r['input']} / {r['probe']}" for r in report["runs"]}
    pending = [name for name in report.get("planned", []) if name not in done]
    if pending:  # a long grid stopped (or still running): say what is missing rather than drop it silently
        text += "\nNot measured yet in this run: " + "; ".join(pending) + ".\n"
    if failed:
        text += "\nFailed runs (see the .json): " + "; ".join(f"{r['input']} / {r['probe']}: {r['error'][:80]}" for r in failed) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    main()
