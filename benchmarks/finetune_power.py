"""Power of the paper's fine-tune test relative to the honest twin (issue 17, item 8).

For every cached model of the detection zoo (benchmarks/zoo.py ``detection_zoo``) this runs
the fine-tune test (edgeguard/vetting/finetune.py) on the model *and* on its honest twin,
the twin the vet builds with ``--reference-data`` (edgeguard/vetting/twin.py: the vetted graph
re-initialised and trained honestly with ``train_reference`` on 2000 labelled Fashion-MNIST
training images no zoo model saw, benchmarks/detection.py ``_reference_set``), with the same
probe (1000 test images, ``_probe_set(1000)``), the same fine-tune seeds and the same settings.
It records every statistic of :data:`STATISTICS` (plus the output shift) for model and twin,
their difference and ratio, and reports per statistic and per split (calibration: seeds 0-1,
CNN/MLP; held out: seeds 2-3 plus a ResNet-10 and a WRN-10-2) the separation of honest
(converged and one-epoch "under") from vicious models: AUROC with a bootstrap interval, and
whether a single threshold fitted on calibration separates the held-out zoo.

Settings: the fine-tune settings the vet's thresholds were calibrated with
(``thresholds.json``: SGD lr 0.003, 30 steps of 128) and the paper prototype's (SGD lr 0.01,
4 steps of 64), both with 256 fine-tune and 744 held-out probe images (the 1000-image probe
cannot give the default 1000 held-out ones); the twin with the vet's calibrated
``ReferenceSettings`` (Adam, 300 steps of 64).

Usage: ``python benchmarks/finetune_power.py [--small] [--models GLOB,...] [--arch cnn,...] [--skip-arch wrn,...]
[--settings calibrated,paper] [--ft-seeds 0,1] [--twin-seeds 0,1] [--tag NAME] [--cache-dir DIR]
[--from-json PATH [--conclusion FILE.md]]``. Each model's fine-tunes and each twin are cached jobs
(edgeguard.jobs), so a run cut for time resumes where it stopped.
Results: benchmarks/results/finetune_power{,_<tag>}{.json,.md} (``--small``: ``finetune_power_small``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import zoo as _zoo  # noqa: E402
from benchmarks.detection import DATA, _probe_set, _reference_set, wilson  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VERSION = 1
#: Fine-tune settings compared: the vet's calibrated ones and the paper prototype's (eval = 1000 - 256).
SETTINGS = {
    "calibrated": {"steps": 30, "learning_rate": 0.003, "optimiser": "sgd", "batch_size": 128,
                   "train_samples": 256, "eval_samples": 744},
    "paper": {"steps": 4, "learning_rate": 0.01, "optimiser": "sgd", "batch_size": 64,
              "train_samples": 256, "eval_samples": 744},
}
#: Statistics scored: the library's, plus the raw output shift; True = higher points to vicious.
def _directions() -> dict[str, bool]:
    from edgeguard.vetting.finetune import STATISTICS

    return {**STATISTICS, "output_shift": True}


# -- the job: one model, its twin(s), every fine-tune ---------------------------------------------------


def _setup(model_path: str, probe_size: int) -> tuple[Any, Any, Any, Any]:
    import onnx

    from edgeguard.vetting.probe import load_probe, model_info_with_overrides

    proto = onnx.load(model_path)
    info = model_info_with_overrides(proto, {})
    return proto, info, load_probe(_probe_set(probe_size), info, seed=0), load_probe(_reference_set(), info, seed=0)


def _tests(target: Any, probe: Any, info: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Every fine-tune setting x seed on ``target``: the scalar fields of each result."""
    from edgeguard.vetting.finetune import FinetuneSettings, finetune_test

    out: dict[str, Any] = {}
    for name, values in params["settings"].items():
        out[name] = []
        for seed in params["ft_seeds"]:
            t0 = time.perf_counter()
            result = finetune_test(target, probe.inputs, probe.labels, output_kind=info.output_kind,
                                   task_type=info.task_type, settings=FinetuneSettings(**values), seed=seed)
            result = {k: v for k, v in result.items() if isinstance(v, (int, float, bool)) or v is None}
            result["seconds"] = time.perf_counter() - t0
            out[name].append(result)
    return out


def model_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """The fine-tune test on one zoo model (every setting and seed) and its probe accuracy."""
    import torch

    torch.set_num_threads(1)
    from edgeguard.onnx_torch import to_torch

    started = time.perf_counter()
    proto, info, probe, _ = _setup(params["model"], params["probe_size"])
    module = to_torch(proto)
    with torch.no_grad():
        outputs = torch.cat([module(torch.as_tensor(probe.inputs[i : i + 500])) for i in range(0, len(probe), 500)])
    return {
        "output_kind": info.output_kind,
        "accuracy": float((outputs.argmax(1).numpy() == probe.labels).mean()),
        "finetune": _tests(module, probe, info, params),
        "seconds": time.perf_counter() - started,
    }


def twin_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Train the honest twin of a graph (``train_reference``, as the vet does with --reference-data) and fine-tune it.

    The twin depends on the graph's structure only (its weights are re-initialised), so it
    is keyed by :func:`structure_key`; ``model`` is any zoo model with that structure.
    """
    import torch

    torch.set_num_threads(1)
    from edgeguard.vetting.reference import ReferenceSettings, train_reference

    started = time.perf_counter()
    proto, info, probe, reference = _setup(params["model"], params["probe_size"])
    run, record = train_reference(
        proto, reference.inputs, reference.labels, output_kind=info.output_kind, task_type=info.task_type,
        settings=ReferenceSettings(**params["reference"]), seed=params["twin_seed"],
    )
    record["accuracy"] = float((run(probe.inputs).argmax(1) == probe.labels).mean())
    record["seed"] = params["twin_seed"]
    record["finetune"] = _tests(run.module, probe, info, params)
    record["total_seconds"] = time.perf_counter() - started
    return record


def structure_key(model_path: str) -> str:
    """A hash of what the twin keeps of a graph: nodes, and every initializer but the weights it re-initialises."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    model = onnx.load(model_path)
    reset = set()
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            reset.update(node.input[1:3])
        elif node.op_type == "BatchNormalization":
            reset.update(node.input[1:5])
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(node.SerializeToString())
    for init in model.graph.initializer:
        digest.update(init.name.encode() + str(list(init.dims)).encode() + str(init.data_type).encode())
        if init.name not in reset:
            digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()[:16]


# -- analysis -----------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def features(entry: dict[str, Any], setting: str) -> dict[str, dict[str, float]]:
    """Per statistic (means over fine-tune seeds): model; twin = the vet's twin (seed 0); diff = model - twin;
    ratio = model / twin (twin > 0 only); ratio_twins = model / mean over every twin seed; vet_ratio = what one vet
    computes (``checks._against_twin``): fine-tune seed 0 on the model over fine-tune seed 0 on the seed-0 twin."""
    result = entry["result"]
    out: dict[str, dict[str, float]] = {}
    for stat in _directions():
        model = _mean([r.get(stat) for r in result["finetune"][setting]])
        twins = [_mean([r.get(stat) for r in t["finetune"][setting]]) for t in result["twins"]]
        twin, pooled = twins[0], _mean(twins)

        def ratio(base: float, model: float = model) -> float:
            return model / base if np.isfinite(base) and base > 0 and np.isfinite(model) else float("nan")

        out[stat] = {"model": model, "twin": twin, "diff": model - twin, "ratio": ratio(twin),
                     "ratio_twins": ratio(pooled), "twins": twins}
        single_model = result["finetune"][setting][0].get(stat)
        single_twin = result["twins"][0]["finetune"][setting][0].get(stat)
        out[stat]["vet_ratio"] = ratio(single_twin if single_twin is not None else float("nan"),
                                       single_model if single_model is not None else float("nan"))
    return out


def auroc(honest: list[float], vicious: list[float], vicious_high: bool) -> float | None:
    """P(vicious scores more vicious than honest), ties count one half; None if a side is empty."""
    h = np.asarray([v for v in honest if np.isfinite(v)], dtype=float)
    v = np.asarray([x for x in vicious if np.isfinite(x)], dtype=float)
    if len(h) == 0 or len(v) == 0:
        return None
    if not vicious_high:
        h, v = -h, -v
    greater = (v[:, None] > h[None, :]).mean()
    ties = (v[:, None] == h[None, :]).mean()
    return float(greater + 0.5 * ties)


def auroc_ci(honest: list[float], vicious: list[float], vicious_high: bool, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """AUROC with a 95% percentile bootstrap interval (honest and vicious resampled apart)."""
    point = auroc(honest, vicious, vicious_high)
    if point is None:
        return {"auroc": None, "low": None, "high": None, "honest": len(honest), "vicious": len(vicious)}
    rng = np.random.default_rng(seed)
    h, v = np.asarray(honest, dtype=float), np.asarray(vicious, dtype=float)
    values = [auroc(list(rng.choice(h, len(h))), list(rng.choice(v, len(v))), vicious_high) for _ in range(draws)]
    low, high = np.percentile([x for x in values if x is not None], [2.5, 97.5])
    return {"auroc": point, "low": float(low), "high": float(high), "honest": len(h), "vicious": len(v)}


def fit_threshold(honest: list[float], vicious: list[float], vicious_high: bool) -> float | None:
    """The calibration threshold: the midpoint between the most vicious-looking honest model and the
    least vicious-looking vicious one when they separate, else the midpoint that maximises
    balanced accuracy. Higher-is-vicious is handled by the sign."""
    sign = 1.0 if vicious_high else -1.0
    h = sorted(sign * x for x in honest if np.isfinite(x))
    v = sorted(sign * x for x in vicious if np.isfinite(x))
    if not h or not v:
        return None
    candidates = sorted(set(h + v))
    cuts = [(a + b) / 2 for a, b in zip(candidates, candidates[1:])] or [candidates[0]]
    best = max(cuts, key=lambda c: (np.mean([x <= c for x in h]) + np.mean([x > c for x in v]), -abs(c - (h[-1] + v[0]) / 2)))
    return float(sign * best)


def apply_threshold(values: list[float], threshold: float, vicious_high: bool) -> list[bool]:
    return [bool(np.isfinite(x) and ((x > threshold) if vicious_high else (x < threshold))) for x in values]


def analyse(entries: list[dict[str, Any]], setting: str) -> dict[str, Any]:
    directions = _directions()
    rows = {e["name"]: features(e, setting) for e in entries}
    out: dict[str, Any] = {}
    for stat, vicious_high in directions.items():
        out[stat] = {}
        for form in ("model", "diff", "ratio", "ratio_twins", "vet_ratio"):
            if form.startswith("ratio") and stat in ("cosine", "cosine_centred"):
                continue  # ~1 by construction: the difference is the twin-relative form
            block: dict[str, Any] = {}

            def values(split: str, group: str, arch: str | None = None, stat: str = stat, form: str = form) -> list[float]:
                chosen = [e for e in entries if e["split"] == split and arch in (None, e["arch"])]
                if group == "vicious":
                    chosen = [e for e in chosen if e["family"] != "honest"]
                elif group == "honest":
                    chosen = [e for e in chosen if e["family"] == "honest"]
                else:  # "honest-conv" / "honest-under"
                    chosen = [e for e in chosen if e["family"] == "honest" and f"-{group.split('-')[1]}-" in e["name"]]
                return [rows[e["name"]][stat][form] for e in chosen]

            for split in ("calibration", "test"):
                vic = values(split, "vicious")
                block[split] = {
                    "all_honest": auroc_ci(values(split, "honest"), vic, vicious_high),
                    "converged_honest": auroc_ci(values(split, "honest-conv"), vic, vicious_high),
                    "under_honest": auroc_ci(values(split, "honest-under"), vic, vicious_high),
                    "cnn_only": auroc_ci(values(split, "honest", "cnn"), values(split, "vicious", "cnn"), vicious_high),
                }
            threshold = fit_threshold(values("calibration", "honest"), values("calibration", "vicious"), vicious_high)
            if threshold is not None:
                honest_test = values("test", "honest")
                vicious_test = values("test", "vicious")
                fp = sum(apply_threshold(honest_test, threshold, vicious_high))
                tp = sum(apply_threshold(vicious_test, threshold, vicious_high))
                block["threshold"] = {
                    "value": threshold,
                    "vicious_if": "above" if vicious_high else "below",
                    "held_out_tpr": tp / max(1, len(vicious_test)), "tpr_ci": wilson(tp, len(vicious_test)),
                    "held_out_fpr": fp / max(1, len(honest_test)), "fpr_ci": wilson(fp, len(honest_test)),
                    "tp": tp, "vicious": len(vicious_test), "fp": fp, "honest": len(honest_test),
                    "separates_held_out": tp == len(vicious_test) and fp == 0,
                }
            out[stat][form] = block
    return {"rows": rows, "separation": out}


# -- report -------------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _ci(block: dict[str, Any]) -> str:
    if block["auroc"] is None:
        return "-"
    return f"{block['auroc']:.2f} [{block['low']:.2f}, {block['high']:.2f}]"


def render(summary: dict[str, Any]) -> str:
    lines = [
        "# Fine-tune test relative to the honest twin (issue 17, item 8)",
        "",
        f"Generated {summary['generated']} by `benchmarks/finetune_power.py` on {summary['machine']['node']} "
        f"({summary['machine']['cpus']} CPUs, load {summary['machine']['load_start']} at the start, "
        f"{summary['machine'].get('load_end')} at the end; OMP_NUM_THREADS={summary['machine']['omp_threads']}, "
        f"torch threads 1), {summary['wall_seconds']:.0f} s wall for this rendering run; the cached jobs took "
        f"{sum((summary.get('seconds_per_model') or {}).values()) + sum((summary.get('seconds_per_twin') or {}).values()):.0f} s "
        "of compute (one thread each, under the load shown; per job in the .json).",
        "",
        "Attackers: the detection zoo's trained vicious models (benchmarks/zoo.py `detection_zoo`: paper joint "
        "training on logits / softmax, log-probabilities, temperature, finish-CE, through-filter, mimic, "
        "audit-penalty); the red team's graph edits (`redteam_zoo`) were not run through this test. "
        "Honest: converged (4 epochs) and one-epoch (`under`) CNN, MLP, ResNet-10, WRN-10-2.",
        "",
        f"Twin: the vetted graph re-initialised and trained honestly (`train_reference`, {summary['reference']}) "
        f"on 2000 labelled FMNIST training images (54000-55999), seeds {summary['twin_seeds']}; fine-tune seeds "
        f"{summary['ft_seeds']}; probe: 1000 FMNIST test images (5000-9999, 100 per class), 256 to fine-tune on, "
        "744 held out. `diff` = model - twin, `ratio` = model / twin (twin > 0 only).",
        "",
        f"Models: {summary['counts']}.",
    ]
    if any((summary.get("cut") or {}).values()):
        lines += ["", "Left out: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in summary["cut"].items() if v) + "."]
    for setting, analysis in summary["analysis"].items():
        lines += ["", f"## Settings `{setting}`: {json.dumps(SETTINGS[setting])}", "",
                  "AUROC (95% bootstrap interval) of honest vs vicious; threshold fitted on calibration "
                  "(all honest vs vicious), applied to held out.", "",
                  "| statistic | form | calib AUROC | held-out AUROC (all honest) | held-out vs converged | "
                  "held-out vs under | held-out CNN only | threshold | held-out TPR | held-out FPR | separates held out |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for stat, forms in analysis["separation"].items():
            for form, block in forms.items():
                th = block.get("threshold") or {}
                lines.append(
                    f"| {stat} | {form} | {_ci(block['calibration']['all_honest'])} | {_ci(block['test']['all_honest'])} | "
                    f"{_ci(block['test']['converged_honest'])} | {_ci(block['test']['under_honest'])} | "
                    f"{_ci(block['test']['cnn_only'])} | "
                    f"{th.get('vicious_if', '')} {_fmt(th.get('value'))} | "
                    f"{th.get('tp', '-')}/{th.get('vicious', '-')} | {th.get('fp', '-')}/{th.get('honest', '-')} | "
                    f"{'yes' if th.get('separates_held_out') else 'no'} |"
                )
    focus = summary.get("focus_statistic", "loss_decrease_per_shift")
    for setting, analysis in summary["analysis"].items():
        lines += ["", f"### `{focus}` per model (`{setting}`)", "",
                  "| model | split | family | arch | acc | twin acc | model | twin (seed 0) | other twin seeds | diff | ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for entry in sorted(summary["models"], key=lambda e: (e["split"], e["arch"], e["family"] != "honest", e["name"])):
            row = analysis["rows"][entry["name"]][focus]
            twin_acc = entry["result"]["twins"][0]["accuracy"]
            lines.append(
                f"| {entry['name']} | {entry['split']} | {entry['family']} | {entry['arch']} | "
                f"{entry['result']['accuracy']:.3f} | {twin_acc:.3f} | {_fmt(row['model'])} | {_fmt(row['twin'])} | "
                f"{', '.join(_fmt(t) for t in row['twins'][1:]) or '-'} | "
                f"{_fmt(row['diff'])} | {_fmt(row['ratio'])} |"
            )
    lines += ["", f"### `finish-ce-cnn-s2` against the honest CNNs (`{focus}`)", "",
              "| settings | form | finish-ce-cnn-s2 | honest CNNs converged (min-max) | honest CNNs under (min-max) | "
              "vicious CNNs below the lowest converged honest CNN |", "|---|---|---|---|---|---|"]
    for setting, analysis in summary["analysis"].items():
        rows = analysis["rows"]
        cnn = [m for m in summary["models"] if m["arch"] == "cnn"]
        if "finish-ce-cnn-s2" not in rows:
            continue
        for form in ("model", "ratio", "ratio_twins", "vet_ratio"):
            conv = [rows[m["name"]][focus][form] for m in cnn if m["family"] == "honest" and "-conv-" in m["name"]]
            under = [rows[m["name"]][focus][form] for m in cnn if m["family"] == "honest" and "-under-" in m["name"]]
            vic = [rows[m["name"]][focus][form] for m in cnn if m["family"] != "honest"]
            low = min(conv) if conv else float("nan")
            lines.append(
                f"| {setting} | {form} | {_fmt(rows['finish-ce-cnn-s2'][focus][form])} | "
                f"{_fmt(min(conv) if conv else None)}-{_fmt(max(conv) if conv else None)} | "
                f"{_fmt(min(under) if under else None)}-{_fmt(max(under) if under else None)} | "
                f"{sum(v < low for v in vic)}/{len(vic)} |"
            )
    if summary.get("conclusion"):
        lines += ["", "## Conclusion", "", summary["conclusion"]]
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------------------


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _write_json(path: Path, summary: dict[str, Any]) -> None:
    """The summary, each twin stored once (models of one structure share it), without the per-model rows
    (``--from-json`` recomputes them)."""
    out = dict(summary, twins={}, models=[])
    for model in summary["models"]:
        result = dict(model["result"])
        out["twins"][result["structure"]] = result.pop("twins")
        out["models"].append(dict(model, result=result))
    out["analysis"] = {name: {"separation": a["separation"]} for name, a in summary["analysis"].items()}
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    summary = json.loads(path.read_text())
    twins = summary.pop("twins", None)
    if twins is not None:
        for model in summary["models"]:
            model["result"]["twins"] = twins[model["result"]["structure"]]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="two calibration and two held-out CNNs (smoke run)")
    parser.add_argument("--models", default="", help="comma-separated name globs to keep")
    parser.add_argument("--skip-arch", default="", help="comma-separated architectures to leave out (time)")
    parser.add_argument("--ft-seeds", default="0,1")
    parser.add_argument("--twin-seeds", default="0")
    parser.add_argument("--settings", default="calibrated,paper")
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache" / "finetune_power"))
    parser.add_argument("--tag", default="", help="suffix of the output files (finetune_power_<tag>)")
    parser.add_argument("--arch", default="", help="comma-separated architectures to keep (default all)")
    parser.add_argument("--from-json", help="re-analyse and re-render a results .json (writes both files again)")
    parser.add_argument("--conclusion", help="with --from-json: a markdown file whose text becomes the Conclusion section")
    args = parser.parse_args(argv)
    stem = "finetune_power_small" if args.small else "finetune_power"
    if args.tag:
        stem = f"{stem}_{args.tag}"
    if args.from_json:
        summary = _read_json(Path(args.from_json))
        summary["analysis"] = {name: analyse(summary["models"], name) for name in summary["settings"]}
        if args.conclusion:
            summary["conclusion"] = Path(args.conclusion).read_text().strip()
        _write_json(RESULTS / f"{stem}.json", summary)
        (RESULTS / f"{stem}.md").write_text(render(summary))
        return 0
    from edgeguard.jobs import Job, run_jobs

    table = json.loads((ROOT / "edgeguard" / "verdicts" / "thresholds.json").read_text())
    reference = dict((table.get("reference") or {}).get("settings") or {"steps": 300, "batch_size": 64, "learning_rate": 1e-3})
    started = time.perf_counter()
    load_start = _load()
    entries = [e for e in _zoo.detection_zoo(False, data=DATA) if e["split"] in ("calibration", "test")]
    teachers = {(e["arch"], e["seed"]): _zoo.folder_for(e["spec"]) for e in entries
                if e["family"] == "honest" and "-conv-" in e["name"]}
    for e in entries:
        if e["family"] == "mimic" and (e["arch"], e["seed"]) in teachers:
            e["spec"] = dict(e["spec"], mimic=str(teachers[(e["arch"], e["seed"])] / "classifier.onnx"))
    if args.small:
        keep = {"honest-cnn-conv-s0", "paper-logits-cnn-s0", "honest-cnn-conv-s2", "finish-ce-cnn-s2"}
        entries = [e for e in entries if e["name"] in keep]
    if args.models:
        globs = args.models.split(",")
        entries = [e for e in entries if any(fnmatch.fnmatch(e["name"], g) for g in globs)]
    cut: dict[str, list[str]] = {"not cached": [], "architecture cut for time": []}
    skip_arch = {a for a in args.skip_arch.split(",") if a}
    if args.arch:
        entries = [e for e in entries if e["arch"] in args.arch.split(",")]
    kept = []
    for e in entries:
        if e["arch"] in skip_arch:
            cut["architecture cut for time"].append(e["name"])
        elif not (_zoo.folder_for(e["spec"]) / "classifier.onnx").is_file():
            cut["not cached"].append(e["name"])
        else:
            kept.append(e)
    settings = {name: SETTINGS[name] for name in args.settings.split(",")}
    ft_seeds = [int(s) for s in args.ft_seeds.split(",")]
    twin_seeds = [int(s) for s in args.twin_seeds.split(",")]
    common = {"probe_size": 1000, "settings": settings, "ft_seeds": ft_seeds, "v": VERSION}
    paths = [str(_zoo.folder_for(e["spec"]) / "classifier.onnx") for e in kept]
    structures = [structure_key(p) for p in paths]
    representative: dict[str, str] = {}
    for path, key in zip(paths, structures):
        representative.setdefault(key, path)
    print(f"finetune_power: {len(kept)} models, {len(representative)} twin structures, cut {cut}", file=sys.stderr, flush=True)
    twin_params = [dict(common, structure=key, model=path, twin_seed=seed, reference=reference)
                   for key, path in representative.items() for seed in twin_seeds]
    # the cheap architectures first: a cut for time (kill, re-run with --skip-arch) keeps what is done
    order = {"mlp": 0, "cnn": 1, "resnet": 2, "wrn": 3}
    by_arch = sorted(range(len(kept)), key=lambda i: order.get(kept[i]["arch"], 9))
    twin_arch = {key: kept[paths.index(path)]["arch"] for key, path in representative.items()}
    twin_params.sort(key=lambda p: order.get(twin_arch[p["structure"]], 9))
    model_results: dict[int, Any] = {}
    twin_results: dict[tuple[str, int], Any] = {}
    for arch in sorted({e["arch"] for e in kept}, key=lambda a: order.get(a, 9)):
        mine = [i for i in by_arch if kept[i]["arch"] == arch]
        done = run_jobs([Job("benchmarks.finetune_power:model_job", dict(common, model=paths[i])) for i in mine],
                        cache_dir=args.cache_dir, workers=1, description=f"fine-tune {arch} models")
        model_results.update({i: d.result for i, d in zip(mine, done)})
        twins = [p for p in twin_params if twin_arch[p["structure"]] == arch]
        done = run_jobs([Job("benchmarks.finetune_power:twin_job", p) for p in twins],
                        cache_dir=args.cache_dir, workers=1, description=f"{arch} twins")
        twin_results.update({(p["structure"], p["twin_seed"]): d.result for p, d in zip(twins, done)})
    models = []
    for i, e in enumerate(kept):
        result = dict(model_results[i], structure=structures[i],
                      twins=[twin_results[(structures[i], seed)] for seed in twin_seeds])
        models.append({k: e[k] for k in ("name", "split", "family", "arch", "seed")} | {"result": result})
    counts = {}
    for m in models:
        key = f"{m['split']} {'honest' if m['family'] == 'honest' else 'vicious'}"
        counts[key] = counts.get(key, 0) + 1
    summary = {
        "version": VERSION,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_start": load_start, "load_end": _load(), "omp_threads": os.environ.get("OMP_NUM_THREADS")},
        "wall_seconds": time.perf_counter() - started,
        "settings": settings, "reference": reference, "ft_seeds": ft_seeds, "twin_seeds": twin_seeds,
        "counts": counts, "cut": cut,
        "seconds_per_model": {m["name"]: round(m["result"]["seconds"], 1) for m in models},
        "seconds_per_twin": {f"{k[0]}-s{k[1]}": round(v["total_seconds"], 1) for k, v in twin_results.items()},
        "models": models,
        "analysis": {name: analyse(models, name) for name in settings},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write_json(RESULTS / f"{stem}.json", summary)
    (RESULTS / f"{stem}.md").write_text(render(summary))
    print(f"wrote {RESULTS / stem}.{{json,md}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
