"""Latency of SafeModel.predict against a raw onnxruntime session running the same model.

Models: the bundled FMNIST CNN (``edgeguard/assets/honest.onnx``, 1x28x28 -> 10 logits)
and a larger WideResNet-10-1 (random weights: latency does not depend on training),
exported with torch once and cached under ``benchmarks/.cache/`` by a hash of its
settings. Every shipped filter, the default filter grid
(:func:`edgeguard.filters.default_filter_specs`) and a few three-stage pipelines are
timed at batch 1 and batch 64, each interleaved with a raw ``InferenceSession.run``
(public API) on a session of the same file with the same options, by the one timing loop
:func:`edgeguard.bench.timing.measure_latency`. Extra calls in the same loop: the raw C++
binding ``_sess.run`` and the SafeModel's own (fused) graph run alone, which splits the
overhead into in-graph filter cost and Python cost. A few pipelines are also timed with
fusion switched off (the numpy path) for comparison. The process is pinned to one CPU
(``--cpu``), onnxruntime uses 1 intra-op and 1 inter-op thread.

    python benchmarks/latency.py                 # about 6-8 minutes on a shared 2-core machine
    python benchmarks/latency.py --quick         # a smoke run (not for the results)
    python benchmarks/latency.py --from-json     # rewrite the pages from latency.json

Writes benchmarks/results/latency.md, latency.json and latency_readme.md (summary to
stdout, progress to stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeguard import SafeModel
from edgeguard.bench.common import cpu_name
from edgeguard.bench.timing import measure_latency
from edgeguard.filters import default_filter_specs, parse_filter_spec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
ASSETS = HERE.parent / "edgeguard" / "assets"
TARGET_BATCH1 = 1.05  # wall-time ratio at batch 1, pipelines of up to three stages
TARGET_BATCH64_CPU = 1.02  # CPU-time ratio at batch 64
TARGET_SPEC = "gaussian:0.05>round:2"

#: Every shipped filter once, the pipelines the issue measured, and three-stage pipelines.
SHIPPED = [
    "argmax",
    "argmax:one_hot",
    "class_labels",
    "softmax",
    "sigmoid",
    "round:2",
    "round:1,clip=2",
    "rounded",
    "truncate:2",
    "softmax>round:2",
    "top_k:3",
    "softmax>round:2,preserve_sum=true",
    "softmax>top_k:3",
    "softmax>high_confidence:0.25",
    "softmax>reverse_sigmoid:1,0.1",
    "softmax>label_confidence:5",
    "gaussian:0.05",
    "laplace:0.05",
    "label_preserving:0.5",
    "clipped_laplace:c=5,eps=1",
    TARGET_SPEC,
    "round:2>gaussian:0.05",
    "softmax>gaussian:0.02>round:2",
    "softmax>top_k:3>round:2",
    "softmax>laplace:0.02>round:2,preserve_sum=true",
    "round:1>laplace:0.1>round:2",
]
#: Also timed with fusion off (every stage in numpy, the path before issue 12).
NUMPY_PATH = [TARGET_SPEC, "softmax>round:2", "softmax>round:2,preserve_sum=true", "softmax>top_k:3", "argmax"]
NUMPY_SUFFIX = " [numpy path]"
WRN = {"depth": 10, "widen": 2, "input": [1, 28, 28], "classes": 10, "seed": 0, "opset": 17}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


# --- models ----------------------------------------------------------------------------------------
def wide_resnet(settings: dict) -> Path:
    """WRN-depth-widen for 1x28x28 inputs (random weights), exported once and cached by a hash of ``settings``."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"latency_wrn_{key}.onnx"
    if path.exists():
        return path
    import onnx
    import torch
    from torch import nn

    from edgeguard.data import FASHION_MNIST_CLASSES
    from edgeguard.model import ModelInfo

    torch.manual_seed(settings["seed"])
    torch.set_num_threads(1)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.short = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

        def forward(self, x):
            out = torch.relu(self.bn1(x))
            skip = x if self.short is None else self.short(out)
            out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
            return out + skip

    blocks = (settings["depth"] - 4) // 6
    widths = [16, 16 * settings["widen"], 32 * settings["widen"], 64 * settings["widen"]]
    layers: list[nn.Module] = [nn.Conv2d(settings["input"][0], widths[0], 3, 1, 1, bias=False)]
    for group in range(3):
        for i in range(blocks):
            layers.append(
                Block(
                    widths[group] if i == 0 else widths[group + 1], widths[group + 1], (1, 2, 2)[group] if i == 0 else 1
                )
            )
    layers += [
        nn.BatchNorm2d(widths[3]),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[3], settings["classes"]),
    ]
    net = nn.Sequential(*layers).eval()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.onnx.export(
        net,
        (torch.zeros(1, *settings["input"]),),
        str(tmp),
        dynamo=False,
        opset_version=settings["opset"],
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    model = onnx.load(str(tmp))
    info = ModelInfo(
        "input", "output", tuple(settings["input"]), tuple(FASHION_MNIST_CLASSES), "multiclass", (0.0, 1.0), "logits"
    )
    onnx.helper.set_model_props(model, info.to_metadata_props())
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def load_images(count: int) -> tuple[np.ndarray, str]:
    try:
        from edgeguard.data import load_fashion_mnist

        return load_fashion_mnist("test", limit=count).x, "Fashion-MNIST test images"
    except Exception as error:  # the dataset is optional for a latency benchmark
        _log(f"Fashion-MNIST not available ({type(error).__name__}); using uniform random pixels")
        return np.random.default_rng(0).random((count, 1, 28, 28), dtype=np.float32), "uniform random pixels"


@contextmanager
def _fusion_off():
    """SafeModel without graph fusion: every stage in numpy (the path before issue 12), for comparison."""
    import edgeguard.guard.build as builder  # SafeModel's graph comes from edgeguard.guard's builder

    original = builder.fuse_pipeline
    builder.fuse_pipeline = lambda *args, **kwargs: None
    try:
        yield
    finally:
        builder.fuse_pipeline = original


def spec_texts(batch: int = 1) -> list[str]:
    """Batch 1: every shipped filter, the default grid and the numpy-path rows; batch 64: the grid's
    repeats with other parameters are left out (the same nodes, the same cost)."""
    grid = [spec.text for spec in default_filter_specs("logits")] if batch == 1 else ["none"]
    texts = list(dict.fromkeys(grid + SHIPPED))
    return texts + [text + NUMPY_SUFFIX for text in NUMPY_PATH]


def _safe_model(path: Path, text: str) -> SafeModel | None:
    if text == "none":
        return None
    spec = parse_filter_spec(text.removesuffix(NUMPY_SUFFIX))
    if text.endswith(NUMPY_SUFFIX):
        with _fusion_off():
            return SafeModel(
                path, filters=spec.build(), providers=["CPUExecutionProvider"], session_options=_session_options()
            )
    return SafeModel(path, filters=spec.build(), providers=["CPUExecutionProvider"], session_options=_session_options())


def _graph_run(safe: SafeModel, batch: int) -> Any:
    """The SafeModel's own session run alone (its fused graph, noise inputs fed once)."""
    session = safe.session
    binding = session._sess
    names = [session.get_outputs()[0].name]
    noise = {
        i.name: np.zeros((batch, 10), np.float32 if i.type == "tensor(float)" else np.float64)
        for i in session.get_inputs()[1:]
    }
    input_name = session.get_inputs()[0].name
    return lambda x: binding.run(names, {input_name: x, **noise}, None)


def time_model(path: Path, images: np.ndarray, batch: int, budget_s: float, quick: bool) -> dict:
    raw_session = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])
    input_name, output_name = raw_session.get_inputs()[0].name, raw_session.get_outputs()[0].name
    binding = raw_session._sess
    x = np.ascontiguousarray(images[:batch])
    for _ in range(5):
        raw_session.run(None, {input_name: x})
    start = time.perf_counter()
    for _ in range(5):
        raw_session.run(None, {input_name: x})
    raw_s = (time.perf_counter() - start) / 5
    texts = spec_texts(batch)
    models = {text: _safe_model(path, text) for text in texts}
    extra_names = ("raw_binding", "graph_run") if batch == 1 else ()  # at batch 64: raw and SafeModel only

    def raw_run(x):
        return raw_session.run(None, {input_name: x})

    def raw_binding(x):
        return binding.run([output_name], {input_name: x}, None)

    calls = {}
    for text, safe in models.items():
        if safe is None:
            calls[text] = (raw_run, raw_run, raw_binding, raw_binding)[: 2 + len(extra_names)]
        else:
            calls[text] = (raw_run, safe.predict, raw_binding, _graph_run(safe, batch))[: 2 + len(extra_names)]
    # calibrate on this (loaded) machine: the wall time of two repetitions of everything
    measure_latency(calls, images, repeats=1, warmup=1, rounds=1, batch=batch, extra_names=extra_names)  # first runs
    start = time.perf_counter()
    measure_latency(calls, images, repeats=3, warmup=0, rounds=1, batch=batch, extra_names=extra_names)
    per_repetition = (time.perf_counter() - start) / 3
    repeats = max(10, int(budget_s / per_repetition / 1.1)) if not quick else 3
    warmup = max(3, repeats // 10) if not quick else 1
    _log(f"  {path.name} batch {batch}: raw {raw_s * 1e6:.0f} us, {len(calls)} configurations x {repeats} repetitions")
    stats = measure_latency(
        calls, images, repeats=repeats, warmup=warmup, rounds=5, seed=0, batch=batch, extra_names=extra_names
    )
    out = {}
    for text, s in stats.items():
        safe = models[text]
        out[text] = {
            "stages": 0 if safe is None else len(safe.pipeline),
            "fused": 0 if safe is None else safe.fused_stages,
            "raw_wall_us": s.raw_us,
            "safe_wall_us": s.safe_us,
            "raw_cpu_us": s.raw_cpu_us,
            "safe_cpu_us": s.safe_cpu_us,
            "binding_wall_us": s.extra["raw_binding"]["wall_us"] if s.extra else None,
            "graph_wall_us": s.extra["graph_run"]["wall_us"] if s.extra else None,
            "ratio_wall": s.ratio,
            "ratio_cpu": s.ratio_cpu,
            "paired_ratio_wall": s.paired_ratio,
            "paired_ratio_cpu": s.paired_ratio_cpu,
            "ratio_binding_wall": s.extra["raw_binding"]["safe_over_this"] if s.extra else None,
            "overhead_wall_us": s.safe_us - s.raw_us,
            "repetitions": s.repeats,
        }
    return out


# --- report ------------------------------------------------------------------------------------------
def machine_info() -> dict:
    import torch

    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "pinned_to_cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _eligible(results: dict) -> dict:
    """Pipelines of one to three stages on the fused (shipping) path."""
    return {k: r for k, r in results.items() if 1 <= r["stages"] <= 3 and not k.endswith(NUMPY_SUFFIX)}


def _summary(report: dict) -> list[dict]:
    rows = []
    for model_key, model in report["models"].items():
        for batch, results in model["batches"].items():
            eligible = _eligible(results)
            key = "paired_ratio_wall" if batch == "1" else "ratio_cpu"
            limit = TARGET_BATCH1 if batch == "1" else TARGET_BATCH64_CPU
            values = sorted(r[key] for r in eligible.values())
            missed = sorted((k for k, r in eligible.items() if r[key] > limit), key=lambda k: -eligible[k][key])
            rows.append(
                {
                    "model": model_key,
                    "batch": int(batch),
                    "raw_us": results["none"]["raw_wall_us"] if "none" in results else None,
                    "measure": key,
                    "target": limit,
                    "median": values[len(values) // 2],
                    "worst": values[-1],
                    "worst_spec": max(eligible, key=lambda k: eligible[k][key]),
                    "met": len(values) - len(missed),
                    "pipelines": len(values),
                    "missed": missed,
                    "target_pipeline": results[TARGET_SPEC][key],
                    "noise_floor": results["none"][key] if "none" in results else None,
                }
            )
    return rows


def _table(results: dict) -> list[str]:
    lines = [
        "| filters | stages (fused) | raw run (us) | SafeModel (us) | ratio wall | ratio CPU | paired wall | paired CPU | "
        "graph run alone (us) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        mark = " **(target)**" if name == TARGET_SPEC else ""
        lines.append(
            f"| `{name}`{mark} | {r['stages']} ({r['fused']}) | {r['raw_wall_us']:.1f} | {r['safe_wall_us']:.1f} | "
            f"{r['ratio_wall']:.3f} | {r['ratio_cpu']:.3f} | {r['paired_ratio_wall']:.3f} | {r['paired_ratio_cpu']:.3f} | "
            + (f"{r['graph_wall_us']:.1f} |" if r["graph_wall_us"] is not None else "- |")
        )
    return lines + [""]


def _load_state(before: Any, after: Any) -> str:
    """'quiet' or '**loaded**', from the measured load average (the benchmark itself keeps one CPU busy)."""
    worst = max(float(before[0]), float(after[0]))
    return "**loaded**" if worst > 0.75 * (os.cpu_count() or 1) else "quiet"


def _load_sentence(before: Any, after: Any) -> str:
    """What the load average says about the run (measured, not assumed)."""
    cores = os.cpu_count() or 1
    how = _load_state(before, after)
    return (
        f"The machine was {how} ({cores} logical CPUs; 1-minute load average {float(before[0]):.2f} before, "
        f"{float(after[0]):.2f} after). The process was pinned to one CPU, every configuration is interleaved with "
        "its raw run, and the paired and CPU-time ratios are the ones to read; absolute microseconds are noisy."
    )


def write_report(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    machine = report["machine"]
    summary = _summary(report)
    lines = [
        "# SafeModel.predict latency against raw onnxruntime",
        "",
        f"Generated by `python benchmarks/latency.py` ({report['date']}, {report['wall_s']:.0f} s wall). One run; "
        "every figure is from it.",
        "",
        _load_sentence(machine["load_average_before"], report["load_average_after"]),
        "",
        "## Setup",
        "",
        *[f"- Model `{k}`: {m['description']}." for k, m in report["models"].items()],
        f"- Inputs: {report['inputs']}.",
        "- onnxruntime CPU provider, 1 intra-op and 1 inter-op thread, sequential execution, for the raw session "
        "and every SafeModel (same file, same options). The raw run is a separate `InferenceSession` of the same "
        "file: SafeModel's own session runs the fused graph (filters appended), so it is not the raw model.",
        "- One timing loop (`edgeguard.bench.timing.measure_latency`, shared with `edgeguard bench`): per "
        "repetition the raw `InferenceSession.run`, `SafeModel.predict`, the raw C++ binding `_sess.run` and "
        "SafeModel's fused graph run alone (batch 64: the first two only), in an order that alternates between "
        "repetitions and never runs one session twice in a row (each call finds the other session's weights in "
        "the caches, as the raw call does); configurations in blocks, 5 rounds in new random orders; garbage "
        "collection off.",
        "- *ratio wall* / *ratio CPU*: median SafeModel over median raw (`perf_counter` / thread CPU time). "
        "*paired*: median of the per-repetition ratios. *stages (fused)*: pipeline length and how many of its "
        "leading stages run inside the onnxruntime graph. *graph run alone*: the fused session's run without "
        "SafeModel's Python (input check, noise, release check); SafeModel minus it is the Python cost. Rows "
        f"ending in `{NUMPY_SUFFIX}` are timed with fusion off (every stage in numpy, the path before issue 12).",
        f"- Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs (pinned to {machine['pinned_to_cpu']}), "
        f"{machine['platform']}; Python {machine['python']}, numpy {machine['numpy']}, onnxruntime "
        f"{machine['onnxruntime']}, torch {machine['torch']}.",
        f"- GPU: the CUDA check (providers='auto' picks CUDA, CUDA releases match CPU releases, latency ratio there) "
        f"was **not run**: no GPU machine was lent to this session (the device tool reported it not drawn), and "
        f"onnxruntime here offers {machine['onnxruntime_providers']}. The 'auto' selection is tested with a mocked "
        "provider list (tests/test_safe_model_hot_path.py).",
        "",
        "## Targets",
        "",
        f"Batch 1: every pipeline of one to three stages at most {TARGET_BATCH1:.2f}x raw `InferenceSession.run` "
        f"(judged on the paired wall ratio). Batch 64: at most {TARGET_BATCH64_CPU:.2f}x in CPU time.",
        "",
        "| model | batch | raw run (us) | measure | target | pipelines meeting it | median | worst (pipeline) | "
        f"`{TARGET_SPEC}` | noise floor (raw vs raw) |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|",
        *[
            f"| {s['model']} | {s['batch']} | {s['raw_us']:.0f} | {s['measure']} | {s['target']:.2f} | {s['met']} of "
            f"{s['pipelines']} | {s['median']:.3f} | {s['worst']:.3f} (`{s['worst_spec']}`) | {s['target_pipeline']:.3f} | "
            f"{s['noise_floor']:.3f} |"
            for s in summary
        ],
        "",
        *[
            f"- {s['model']}, batch {s['batch']}: over the target: "
            + (", ".join(f"`{k}`" for k in s["missed"]) if s["missed"] else "none")
            + "."
            for s in summary
        ],
        "",
    ]
    lines += ["## Where the time goes (batch 1)", ""]
    for model_key, model in report["models"].items():
        results = model["batches"]["1"]
        fused = [r for k, r in results.items() if r["fused"] and r["fused"] == r["stages"]]
        graph = sorted(r["graph_wall_us"] - r["binding_wall_us"] for r in fused)
        python = sorted(r["safe_wall_us"] - r["graph_wall_us"] for r in fused)
        lines.append(
            f"- {model_key}: over the {len(fused)} fully fused pipelines, the fused graph costs a median "
            f"{graph[len(graph) // 2]:.1f} us more than the raw graph (the filter nodes plus the in-graph input, "
            f"release and simplex checks), and SafeModel's Python around it (shape checks, noise slice, one look at "
            f"the release) a median {python[len(python) // 2]:.1f} us; the raw binding call itself takes "
            f"{results['none']['binding_wall_us']:.1f} us. Differences smaller than the noise floor (the `none` "
            f"row, raw against raw: {results['none']['paired_ratio_wall']:.3f}) are not resolved."
        )
    for model_key, model in report["models"].items():
        for batch, results in model["batches"].items():
            key = "paired_ratio_wall" if batch == "1" else "ratio_cpu"
            pairs = [
                (k, results[k][key], results[k + NUMPY_SUFFIX][key]) for k in NUMPY_PATH if k in results and k + NUMPY_SUFFIX in results
            ]
            lines.append(
                f"- Fused against the numpy path (fusion off), {model_key}, batch {batch} ({key}): "
                + ", ".join(f"`{k}` {fused:.3f} vs {numpy:.3f}" for k, fused, numpy in pairs)
                + f"; fused is lower for {sum(fused < numpy for _, fused, numpy in pairs)} of {len(pairs)}."
            )
    lines += [
        "- IOBinding with a preallocated output (and the copy a caller needs) was tried in a separate micro-run "
        "(not part of this run): under 1 us from a 40 us call, within its noise, so SafeModel does not use it.",
        "",
    ]
    for model_key, model in report["models"].items():
        for batch, results in model["batches"].items():
            lines += [f"## {model_key}, batch {batch}", "", *_table(results)]
    (RESULTS / "latency.md").write_text("\n".join(lines))
    readme = [
        "| model (raw run, batch 1) | batch | pipelines (1-3 stages) within target | median ratio | worst ratio | "
        f"`{TARGET_SPEC}` |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {s['model']} ({report['models'][s['model']]['batches']['1']['none']['raw_wall_us']:.0f} us) | {s['batch']} | "
            f"{s['met']} of {s['pipelines']} (<= {s['target']:.2f}x {'paired wall' if s['batch'] == 1 else 'CPU'}) | "
            f"{s['median']:.3f} | {s['worst']:.3f} | {s['target_pipeline']:.3f} |"
            for s in summary
        ],
        "",
        "SafeModel.predict time over a raw onnxruntime run of the same model (1 thread, CPU, a "
        + _load_state(report["machine"]["load_average_before"], report["load_average_after"]).strip("*")
        + " machine; `benchmarks/results/latency.md`). Latency is a cost, not a defense number: what each filter "
        "leaks to an attacker who trains a decoder on its releases is in the bench and attack pages.",
        "",
    ]
    (RESULTS / "latency_readme.md").write_text("\n".join(readme))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=330.0, help="timing budget (seconds) over all four runs")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run with few repetitions (not for results)")
    parser.add_argument("--from-json", action="store_true", help="rewrite the pages from latency.json, no timing")
    args = parser.parse_args()
    if args.from_json:
        write_report(json.loads((RESULTS / "latency.json").read_text()))
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))})
    started = time.perf_counter()
    machine = machine_info()
    images, image_source = load_images(64)
    wrn = wide_resnet(WRN)
    paths = {
        "FMNIST CNN": (ASSETS / "honest.onnx", "the bundled Fashion-MNIST CNN `edgeguard/assets/honest.onnx`"),
        "WRN-10-2": (
            wrn,
            f"WideResNet-{WRN['depth']}-{WRN['widen']} for 1x28x28 inputs, random weights (seed {WRN['seed']}), "
            f"torch export opset {WRN['opset']}, cached as `benchmarks/.cache/{wrn.name}`",
        ),
    }
    # the budget is split by expected cost: the larger model and batch 64 get more seconds
    shares = {("FMNIST CNN", 1): 0.2, ("FMNIST CNN", 64): 0.2, ("WRN-10-2", 1): 0.3, ("WRN-10-2", 64): 0.3}
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "inputs": image_source,
        "machine": machine,
        "threads": {"intra_op": 1, "inter_op": 1},
        "targets": {"batch1_paired_wall": TARGET_BATCH1, "batch64_cpu": TARGET_BATCH64_CPU},
        "wrn_settings": WRN,
        "models": {},
    }
    for key, (path, description) in paths.items():
        report["models"][key] = {"path": str(path.name), "description": description, "batches": {}}
        for batch in (1, 64):
            _log(f"{key}, batch {batch}")
            report["models"][key]["batches"][str(batch)] = time_model(
                path, images, batch, args.budget_s * shares[(key, batch)], args.quick
            )
    report["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["wall_s"] = time.perf_counter() - started
    write_report(report)
    for s in _summary(report):
        print(
            f"{s['model']:>10} batch {s['batch']:>2}: {s['met']}/{s['pipelines']} within {s['target']:.2f}x "
            f"({s['measure']}); median {s['median']:.3f}, worst {s['worst']:.3f} ({s['worst_spec']}); "
            f"{TARGET_SPEC} {s['target_pipeline']:.3f}"
        )


if __name__ == "__main__":
    main()
