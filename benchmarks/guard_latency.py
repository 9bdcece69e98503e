"""Latency of guarded ONNX files (``edgeguard guard``) against the raw model, in Python onnxruntime and in Node.

Models: the bundled FMNIST CNN (``edgeguard/assets/honest.onnx``) and the WideResNet-10-2 of
``benchmarks/latency.py`` (random weights: latency does not depend on training; built and
cached by :func:`latency.wide_resnet`). Pipelines: every default pipeline
(:func:`edgeguard.filters.default_filter_specs`) that a guarded file can hold (the others are
refused by ``edgeguard guard``), without the input dither, plus ``softmax>round:2`` with it.

- Python: ``InferenceSession.run`` on the raw file against the same call on the guarded file
  (input names looked up once, as an app does; its ``edgeguard_uniform`` feed drawn from
  os.urandom at every call, as an app must),
  interleaved by the one timing loop :func:`edgeguard.bench.timing.measure_latency`; at
  batch 1 also ``SafeModel.predict`` (same builder, noise fed from Python) as an extra call.
- Node: ``clients/js/run_guarded.js compare``: raw and guarded sessions in one process, the
  order alternating every repetition, medians over the repetitions.

One intra-op and one inter-op thread everywhere; the process pinned to one CPU (``--cpu``).

    python benchmarks/guard_latency.py            # a few minutes on a shared 2-core machine
    python benchmarks/guard_latency.py --quick    # a smoke run (not for the results)

Writes benchmarks/results/guard_latency.md and guard_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import WRN, _session_options, load_images, machine_info, wide_resnet  # noqa: E402

from edgeguard import SafeModel, guard_model  # noqa: E402
from edgeguard.bench.timing import measure_latency  # noqa: E402
from edgeguard.errors import GuardError  # noqa: E402
from edgeguard.filters import default_filter_specs, parse_filter_spec  # noqa: E402
from edgeguard.guard import UNIFORM_INPUT, uniform_noise  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ASSETS = HERE.parent / "edgeguard" / "assets"
CLIENT = HERE.parent / "clients" / "js"
TARGET_GUARDED = 1.01  # guarded over raw, interleaved medians
TARGET_SAFE = 1.03  # SafeModel.predict over raw at batch 1
DITHERED = "softmax>round:2 +dither"
FLOOR = "raw (floor)"  # the raw file against itself (a second session): the measurement's noise


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def guarded_files(model: Path, folder: Path) -> dict[str, Path]:
    """Every default pipeline that can be guarded (name -> file), and one with the dither."""
    files = {}
    for spec in default_filter_specs("logits"):
        if spec.is_raw:
            continue
        path = folder / f"{model.stem}_{len(files)}.onnx"
        try:
            guard_model(model, spec, path)
        except GuardError:
            continue
        files[spec.text] = path
    path = folder / f"{model.stem}_dither.onnx"
    guard_model(model, "softmax>round:2", path, input_dither=True)
    files[DITHERED] = path
    files[FLOOR] = model
    return files


def appended_nodes(model: Path) -> list[dict]:
    """Nodes the builder appends to ``model`` for each guardable default pipeline (and the dither row):
    in all, and of those the input check's (the difference to the same build without it)."""
    import onnx

    from edgeguard.filters import FilterPipeline
    from edgeguard.guard import build_guarded_graph
    from edgeguard.model import load_model

    loaded = load_model(model)
    info, source = loaded.info, onnx.load(str(model))
    base = len(source.graph.node)
    rows = []
    specs = [(s.text, False) for s in default_filter_specs("logits") if not s.is_raw]
    for text, dither in specs + [(DITHERED.removesuffix(" +dither"), True)]:
        pipeline = FilterPipeline(
            parse_filter_spec(text).build(), input_kind=info.output_kind, task_type=info.task_type
        )
        try:
            built = build_guarded_graph(source, info, pipeline, input_dither=dither, noise="uniform")
        except GuardError:
            continue
        unchecked = build_guarded_graph(source, info, pipeline, input_dither=dither, noise="uniform", pixel_range=None)
        total = len(built.proto.graph.node) - base
        rows.append(
            {
                "spec": text + (" +dither" if dither else ""),
                "nodes": total,
                "input_check": total - (len(unchecked.proto.graph.node) - base),
            }
        )
    return rows


def time_python(model: Path, files: dict[str, Path], images: np.ndarray, batch: int, repeats: int) -> dict:
    raw = ort.InferenceSession(str(model), _session_options(), providers=["CPUExecutionProvider"])
    input_name = raw.get_inputs()[0].name

    def raw_run(x):
        return raw.run(None, {input_name: x})

    calls = {}
    for text, path in files.items():
        session = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])

        # what an app does: input names looked up once, fresh CSPRNG uniforms at every call when the file has them
        image = next(i.name for i in session.get_inputs() if i.name != UNIFORM_INPUT)
        per_row = next((int(i.shape[1]) for i in session.get_inputs() if i.name == UNIFORM_INPUT), 0)

        def guarded_run(x, session=session, image=image, per_row=per_row):
            if per_row:
                return session.run(None, {image: x, UNIFORM_INPUT: uniform_noise(len(x), per_row)})
            return session.run(None, {image: x})

        entry: tuple = (raw_run, guarded_run)
        if batch == 1 and text == FLOOR:
            entry = (raw_run, guarded_run, guarded_run)
        elif batch == 1:
            spec = parse_filter_spec(text.removesuffix(" +dither"))
            safe = SafeModel(  # the same graph as the file: the dither exactly when the file has it
                model,
                filters=spec.build(),
                providers=["CPUExecutionProvider"],
                session_options=_session_options(),
                input_dither=text.endswith(" +dither"),
            )
            entry = (raw_run, guarded_run, safe.predict)
        calls[text] = entry
    extra = ("safe_model",) if batch == 1 else ()
    measure_latency(calls, images, repeats=2, warmup=2, rounds=1, batch=batch, extra_names=extra)  # first runs
    stats = measure_latency(
        calls, images, repeats=repeats, warmup=max(2, repeats // 20), rounds=5, batch=batch, extra_names=extra
    )
    return {text: value.to_dict() for text, value in stats.items()}


def time_node(model: Path, files: dict[str, Path], images: np.ndarray, batch: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        pixels = Path(folder) / "images.f32"
        np.ascontiguousarray(images, dtype=np.float32).tofile(pixels)
        dims = ",".join(str(d) for d in images.shape)
        out = {}
        for text, path in files.items():
            completed = subprocess.run(
                [
                    "node",
                    str(CLIENT / "run_guarded.js"),
                    "compare",
                    str(model),
                    str(path),
                    str(pixels),
                    dims,
                    str(batch),
                    str(repeats),
                ],
                capture_output=True,
                text=True,
            )
            if completed.returncode != 0:
                raise SystemExit(f"node failed on {text!r} ({path.name}): {completed.stderr[-1000:]}")
            data = json.loads(completed.stdout)
            raw_us = statistics.median(data["raw_ns"]) / 1e3
            guarded_us = statistics.median(data["guarded_ns"]) / 1e3
            paired = statistics.median(g / r for g, r in zip(data["guarded_ns"], data["raw_ns"]))
            out[text] = {
                "raw_us": raw_us,
                "guarded_us": guarded_us,
                "ratio": guarded_us / raw_us,
                "paired_ratio": paired,
                "repeats": len(data["raw_ns"]),
            }
    return out


def _rows(results: dict, runtime: str) -> list[dict]:
    rows = []
    for key, data in results.items():
        name, batch = key.rsplit("|", 1)
        for text, value in data[runtime].items():
            if runtime == "python":
                row = {
                    "raw_us": value["raw_us"],
                    "guarded_us": value["safe_us"],
                    "ratio": value["ratio"],
                    "paired_ratio": value["paired_ratio"],
                }
                if "safe_model" in value["extra"]:
                    row["safe_ratio"] = value["extra"]["safe_model"]["wall_us"] / value["raw_us"]
            else:
                row = dict(value)
            rows.append({"model": name, "batch": int(batch), "spec": text, **row})
    order = {text: i for i, text in enumerate(s.text for s in default_filter_specs("logits"))}
    order.update({DITHERED: len(order), FLOOR: len(order) + 1})  # the json's keys are sorted: restore run order
    models = list(dict.fromkeys(r["model"] for r in rows))
    return sorted(rows, key=lambda r: (models.index(r["model"]), r["batch"], order.get(r["spec"], len(order))))


def write_report(report: dict) -> None:
    machine = report["machine"]
    lines = [
        "# Guarded files: latency against the raw model",
        "",
        "Written by `benchmarks/guard_latency.py` (data: `guard_latency.json`). A guarded file is the model plus",
        "its input checks and filter stages in one ONNX graph (`edgeguard guard`); its cost is the extra nodes,",
        "and, for random pipelines and the dither, the app drawing `edgeguard_uniform` from the OS CSPRNG at",
        "every call (included here). Latency is a cost, not a defense figure.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, {machine['platform']}; Python {machine['python']},",
        f"onnxruntime {machine['onnxruntime']} (Python), onnxruntime-node {report['node']['onnxruntime_node']} on Node "
        f"{report['node']['version']}. One intra-op and one inter-op thread, the process pinned to CPU "
        f"{report['settings']['cpu']}. Repetitions: {report['settings']['repeats']}.",
        "",
        f"**The machine was shared** with other jobs while this ran (four other sessions at work on 2 cores):"
        f" measured 1-minute load average {report['load_before'][0]:.2f} before and {report['load_after'][0]:.2f} "
        "after. Interleaving spreads that load over raw and guarded runs alike; the last column times the "
        "raw file against a second session of itself, the noise floor of these ratios.",
        "",
        f"Targets: guarded <= {TARGET_GUARDED}x raw (interleaved medians); SafeModel.predict <= {TARGET_SAFE}x raw at "
        "batch 1.",
        "",
        "## Summary",
        "",
        "| runtime | model | batch | pipelines | within target | median ratio | worst ratio (pipeline) | "
        "raw vs raw (floor) |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for runtime in ("python", "node"):
        rows = _rows(report["results"], runtime)
        for key in dict.fromkeys((r["model"], r["batch"]) for r in rows):
            group = [r for r in rows if (r["model"], r["batch"]) == key and r["spec"] != FLOOR]
            floor = next((r for r in rows if (r["model"], r["batch"]) == key and r["spec"] == FLOOR), None)
            ratios = [r["ratio"] for r in group]
            worst = max(group, key=lambda r: r["ratio"])
            within = sum(ratio <= TARGET_GUARDED for ratio in ratios)
            lines.append(
                f"| {runtime} | {key[0]} | {key[1]} | {len(group)} | {within} of {len(group)} | "
                f"{statistics.median(ratios):.3f} | {worst['ratio']:.3f} (`{worst['spec']}`) | "
                + (f"{floor['ratio']:.3f} |" if floor else "|")
            )
    safe = [r for r in _rows(report["results"], "python") if "safe_ratio" in r and r["spec"] != FLOOR]
    if safe:
        lines += [
            "",
            "SafeModel.predict against raw at batch 1 (same builder, the input dither exactly where the file has it; "
            "noise fed from Python):",
            "",
            "| model | pipelines | within 1.03x | median ratio | worst ratio (pipeline) |",
            "|---|---:|---:|---:|---|",
        ]
        for name in dict.fromkeys(r["model"] for r in safe):
            group = [r for r in safe if r["model"] == name]
            ratios = [r["safe_ratio"] for r in group]
            worst = max(group, key=lambda r: r["safe_ratio"])
            lines.append(
                f"| {name} | {len(group)} | {sum(x <= TARGET_SAFE for x in ratios)} of {len(group)} | "
                f"{statistics.median(ratios):.3f} | {worst['safe_ratio']:.3f} (`{worst['spec']}`) |"
            )
    lines += ["", "## Every pipeline", ""]
    for runtime in ("python", "node"):
        lines += [
            f"### {runtime}",
            "",
            "| model | batch | pipeline | raw us | guarded us | ratio | paired ratio |"
            + (" SafeModel ratio |" if runtime == "python" else ""),
            "|---|---:|---|---:|---:|---:|---:|" + ("---:|" if runtime == "python" else ""),
        ]
        for r in _rows(report["results"], runtime):
            safe_cell = f" {r['safe_ratio']:.3f} |" if "safe_ratio" in r else (" |" if runtime == "python" else "")
            lines.append(
                f"| {r['model']} | {r['batch']} | `{r['spec']}` | {r['raw_us']:.1f} | {r['guarded_us']:.1f} | "
                f"{r['ratio']:.3f} | {r['paired_ratio']:.3f} |{safe_cell}"
            )
        lines.append("")
    if report.get("nodes"):
        lines += [
            "## Nodes the builder appends (FMNIST CNN)",
            "",
            'The guarded file\'s extra nodes per pipeline; "input check" counts those of the range/NaN/inf check '
            "of the input (the release's finiteness check and the sentinel are in the rest).",
            "",
            "| pipeline | nodes appended | of which the input check |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{r['spec']}` | {r['nodes']} | {r['input_check']} |" for r in report["nodes"]]
        lines.append("")
    lines += ["Models:", ""] + [f"- {name}: {text}" for name, text in report["models"].items()] + [""]
    (RESULTS / "guard_latency.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few repetitions, a smoke run")
    parser.add_argument("--cpu", type=int, default=0, help="pin the process to this CPU")
    parser.add_argument("--from-json", action="store_true", help="rewrite guard_latency.md from guard_latency.json")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads((RESULTS / "guard_latency.json").read_text())
        if "nodes" not in report:  # a run from before the node counts: count them now (same code as the timings)
            report["nodes"] = appended_nodes(ASSETS / "honest.onnx")
            (RESULTS / "guard_latency.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        write_report(report)
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    os.environ["OMP_NUM_THREADS"] = "1"
    load_before = os.getloadavg()
    images, source = load_images(512)
    repeats = {1: 20, 64: 5} if args.quick else {1: 300, 64: 40}
    models = {
        "FMNIST CNN": (ASSETS / "honest.onnx", "the bundled `edgeguard/assets/honest.onnx`"),
        "WRN-10-2": (wide_resnet(WRN), f"WideResNet-10-2 of benchmarks/latency.py (random weights, settings {WRN})"),
    }
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    node_ort = json.loads((CLIENT / "node_modules" / "onnxruntime-node" / "package.json").read_text())["version"]
    results: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, _) in models.items():
            files = guarded_files(model, Path(folder))
            for batch in (1, 64):
                _log(f"{name}, batch {batch}: {len(files)} pipelines (python, then node)")
                results[(name, batch)] = {
                    "python": time_python(model, files, images, batch, repeats[batch]),
                    "node": time_node(model, files, images, batch, repeats[batch]),
                }
    report = {
        "machine": {**machine_info(), "images": source},
        "node": {"version": node_version, "onnxruntime_node": node_ort},
        "settings": {"cpu": args.cpu, "repeats": repeats, "threads": 1, "quick": args.quick},
        "models": {name: text for name, (_, text) in models.items()},
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "nodes": appended_nodes(ASSETS / "honest.onnx"),
        "seconds": time.perf_counter() - started,
        "results": {f"{name}|{batch}": value for (name, batch), value in results.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "guard_latency.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_report(report)
    _log(f"wrote {RESULTS / 'guard_latency.md'} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
