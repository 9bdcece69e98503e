"""Detection benchmark v2: does ``edgeguard vet`` tell harmful models from honest ones it was never fitted on?

Protocol (held out): every threshold is fitted on a *calibration* zoo (seeds 0-1, CNN and
MLP); the figures are reported on a disjoint *test* zoo (seeds 2-3, new models, and a
ResNet-10 and a WideResNet-10-2, architectures the calibration zoo lacks). The probe is 1000 labelled
Fashion-MNIST test images (100 per class, disjoint from the models' training data); the
leakage audit queries augmented copies of them (labels unused).

Attackers (converters.TrainConfig knobs; one family each): the paper's joint training on
logits / on softmax, a decoder reading log-probabilities, an output temperature, CE-only
finishing epochs, training through the release filters ``softmax>round:1``, ``softmax>round:2``,
``softmax>top_k:3`` and ``gaussian:1``, distillation
towards an honest teacher (mimic), a penalty on a closed-form audit decoder (vet-aware),
and a batch-size switch graph ``Where(Equal(Shape(x)[0], 1), vicious, honest)``.
Honest: CNN, MLP, ResNet-10 (WRN-10-1), WRN-10-2, undertrained (1 epoch) and converged (4 epochs), and honest graphs
with an appended temperature (T = 0.3 and 3).

"Harmful": the server's own decoder gains >= 1 dB more over the label-only baseline than
the honest post-hoc decoders of that architecture (mean). Vicious models below that are
listed apart. Statistics compared (all fitted on the calibration zoo only):

* ``gain``: the audit's invariant PSNR gain (architecture-independent threshold);
* ``excess_supplied``: gain minus that of a supplied honest reference model of the same
  architecture (an extra seed, used by no zoo);
* ``excess_trained``: gain minus that of the vetted graph re-initialised and trained
  honestly for 300 steps on 2000 labelled training images (edgeguard.onnx_torch).

Usage: ``python benchmarks/detection.py [--jobs N] [--ray ADDRESS] [--small] [--no-write-thresholds]``
Results: benchmarks/results/detection{.md,.json,_readme.md}; thresholds refitted into
edgeguard/verdicts/thresholds.json (unless --small or --no-write-thresholds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = ROOT / "benchmarks" / ".cache" / "detection"
RESULTS = ROOT / "benchmarks" / "results"
DATA = os.environ.get("EDGEGUARD_FMNIST", "/usr/share/datasets/fashion-mnist")
HARMFUL_MARGIN_DB = 1.0
VERSION = 2

# -- the zoo: defined once, in benchmarks/zoo.py ("the detection zoo") -----------------------------------

from benchmarks import zoo as _zoo  # noqa: E402  (after the sys.path set-up above)

_BASE = _zoo.DETECTION_BASE
FAMILIES = _zoo.DETECTION_FAMILIES
CONVERGED_EPOCHS = _zoo.DETECTION_CONVERGED_EPOCHS


def zoo(small: bool = False) -> list[dict[str, Any]]:
    """Every trained model of the detection zoo: name, split, family, arch, seed, spec."""
    return _zoo.detection_zoo(small, data=DATA)


# -- jobs -------------------------------------------------------------------------------------------------


def train_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Train (or reuse from benchmarks/.cache/zoo) one zoo model; its folder and report figures."""
    import torch

    torch.set_num_threads(1)
    from benchmarks.zoo import build

    folder = build(params["spec"])
    report = json.loads((folder / "report.json").read_text())
    return {
        "folder": str(folder),
        "accuracy": report["accuracy"],
        "psnr": report["psnr"],
        "baseline_psnr": report["baseline"]["psnr"],
        "gain_db": report["psnr"] - report["baseline"]["psnr"],
        "decoder_kind": report.get("decoder_kind"),
        "train_seconds": report.get("wall_time_s"),
    }


def vet_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Vet one model (default tests + a supplied reference), then the trained-reference statistic."""
    import torch

    torch.set_num_threads(1)
    from edgeguard.model import load_model
    from edgeguard.vetting import vet
    from edgeguard.vetting.leakage import LeakageSettings, leakage_audit
    from edgeguard.vetting.probe import load_probe
    from edgeguard.vetting.reference import ReferenceSettings, train_reference

    probe = _probe_set(params["probe_size"])
    started = time.perf_counter()
    report = vet(
        params["model"], probe, seed=0, augment_seed=params["augment_seed"],
        reference_models=[params["reference"]] if params.get("reference") else (), progress=lambda _m: None,
    )
    seconds = time.perf_counter() - started
    leak = report.tests.get("leakage")
    out: dict[str, Any] = {
        "verdict": report.verdict,
        "seconds": seconds,
        "consistent": report.tests["consistency"].details.get("consistent") if "consistency" in report.tests else None,
        "findings": sorted({f.code for f in report.findings if f.severity in ("high", "critical")}),
        "accuracy_probe": report.probe.get("accuracy"),
    }
    if leak is not None and leak.status == "ran":
        out.update(
            gain=leak.details["gain_db"], gain_ci=leak.details["gain_ci95_db"],
            excess_supplied=leak.details.get("excess_gain_db"), excess_supplied_ci=leak.details.get("excess_ci95_db"),
            leakage_seconds=leak.seconds,
        )
    if params.get("finetune"):  # the paper's fine-tune test, measured for its power (not in the default vet)
        t0 = time.perf_counter()
        fine = vet(params["model"], probe, seed=0, augment_seed=params["augment_seed"], tests=("finetune",),
                   finetune_eval_samples=params["probe_size"] - 256, progress=lambda _m: None)
        test = fine.tests.get("finetune")
        out.update(finetune=test.score if test is not None and test.status == "ran" else None,
                   finetune_seconds=time.perf_counter() - t0)
    if params.get("trained_reference") and leak is not None and leak.status == "ran":
        loaded = load_model(params["model"])
        info = loaded.info
        ref_probe = load_probe(_reference_set(), info)
        t0 = time.perf_counter()
        run, record = train_reference(
            loaded.proto, ref_probe.inputs, ref_probe.labels, output_kind=info.output_kind, task_type=info.task_type,
            settings=ReferenceSettings(), seed=0,
        )
        vetted = load_probe(probe, info)
        settings = LeakageSettings(**_leakage_settings())
        ref = leakage_audit(vetted.images, run, output_kind=info.output_kind, task_type=info.task_type,
                            settings=settings, seed=0, augment_seed=params["augment_seed"], labels=vetted.labels)
        out.update(reference_trained_gain=ref.gain_db, excess_trained=out["gain"] - ref.gain_db,
                   reference_trained_seconds=time.perf_counter() - t0, reference_trained_loss=record["final_loss"])
    return out


def _leakage_settings() -> dict[str, Any]:
    from edgeguard.verdicts.thresholds import load_thresholds

    return dict(load_thresholds()["tests"]["leakage"].get("settings", {}))


@functools.cache
def _reference_set() -> Any:
    """2000 labelled Fashion-MNIST training images (54000-55999) no zoo model was trained on."""
    from edgeguard.data import Dataset, load_fashion_mnist

    train = load_fashion_mnist("train", root=DATA)
    return Dataset(train.x[54000:56000], train.y[54000:56000], train.class_names)


@functools.cache
def _probe_set(size: int) -> Any:
    """``size`` Fashion-MNIST test images, the same number per class, from test images 5000-9999."""
    from edgeguard.data import Dataset, load_fashion_mnist

    test = load_fashion_mnist("test", root=DATA)
    x, y = test.x[5000:], test.y[5000:]
    per_class = size // 10
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    return Dataset(x[keep], y[keep], test.class_names)


# -- post-hoc variants (no training) -------------------------------------------------------------------------


def with_temperature(source: Path, target: Path, temperature: float) -> Path:
    """The same graph with its output divided by ``temperature`` (one Div node)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    out = graph.output[0].name
    inner = out + "_before_temperature"
    for node in graph.node:
        node.output[:] = [inner if name == out else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), "edgeguard_temperature"))
    graph.node.append(helper.make_node("Div", [inner, "edgeguard_temperature"], [out], name="temperature"))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def batch_switch(vicious: Path, honest: Path, target: Path) -> Path:
    """``Where(Equal(Shape(x)[0], 1), vicious(x), honest(x))``: vicious one image at a time only."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    a = compose.add_prefix(onnx.load(str(vicious)), "v_")
    b = compose.add_prefix(onnx.load(str(honest)), "h_")
    x = onnx.load(str(vicious)).graph.input[0]
    y = onnx.load(str(vicious)).graph.output[0]
    nodes = [
        helper.make_node("Identity", [x.name], [a.graph.input[0].name]),
        helper.make_node("Identity", [x.name], [b.graph.input[0].name]),
        *a.graph.node, *b.graph.node,
        helper.make_node("Shape", [x.name], ["sw_shape"]),
        helper.make_node("Gather", ["sw_shape", "sw_zero"], ["sw_n"], axis=0),
        helper.make_node("Equal", ["sw_n", "sw_one"], ["sw_single"]),
        helper.make_node("Where", ["sw_single", a.graph.output[0].name, b.graph.output[0].name], [y.name]),
    ]
    inits = [*a.graph.initializer, *b.graph.initializer,
             numpy_helper.from_array(np.array(0, np.int64), "sw_zero"), numpy_helper.from_array(np.array(1, np.int64), "sw_one")]
    graph = helper.make_graph(nodes, "batch_switch", [x], [y], inits)
    source = onnx.load(str(vicious))
    model = helper.make_model(graph, opset_imports=source.opset_import, ir_version=source.ir_version)
    for prop in source.metadata_props:
        model.metadata_props.append(prop)
    del TensorProto
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


# -- statistics -------------------------------------------------------------------------------------------------


def auc(honest: list[float], flagged: list[float]) -> float | None:
    if not honest or not flagged:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([0] * len(honest) + [1] * len(flagged), list(honest) + list(flagged)))


def fit_threshold(honest: list[float], margin: float = 0.25) -> tuple[float, float]:
    """Threshold above every calibration honest score (by ``margin`` dB) and the logistic scale (honest spread)."""
    spread = float(np.std(honest)) if len(honest) > 1 else 0.3
    return float(max(honest) + margin), max(spread, 0.1)


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="run the jobs on Ray (auto or an address)")
    parser.add_argument("--small", action="store_true", help="a handful of tiny models (a few minutes)")
    parser.add_argument("--probe-size", type=int, default=1000)
    parser.add_argument("--no-trained-reference", action="store_true")
    parser.add_argument("--no-finetune", action="store_true", help="skip measuring the fine-tune test's power")
    parser.add_argument("--no-write-thresholds", action="store_true")
    parser.add_argument("--augment-seed", type=int, default=12345)
    parser.add_argument("--train-only", action="store_true", help="train (cache) the zoo and stop")
    parser.add_argument("--from-json", metavar="PATH", help="re-render detection.md / the README fragment from a results JSON")
    args = parser.parse_args()
    if args.from_json:
        summary = json.loads(Path(args.from_json).read_text())
        (RESULTS / "detection.md").write_text(render(summary))
        (RESULTS / "detection_readme.md").write_text(readme_fragment(summary))
        if not args.no_write_thresholds:
            write_thresholds(summary)
        return 0
    started = time.perf_counter()
    try:
        from edgeguard.jobs import Job, run_jobs
    except ImportError:  # pragma: no cover - before edgeguard.jobs existed
        Job = run_jobs = None

    def run(function: str, params_list: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        if run_jobs is None:
            module, name = function.split(":")
            return [globals()[name](p, CACHE / "artifacts") for p in params_list]
        jobs = [Job(function=function, params=p) for p in params_list]
        results = run_jobs(jobs, cache_dir=CACHE / "jobs", executor="ray" if args.ray else "local",
                           workers=args.jobs, ray_address=args.ray, description=what)
        return [r.result for r in results]

    entries = zoo(args.small)
    plain = [e for e in entries if e["family"] != "mimic"]
    trained = run("benchmarks.detection:train_job", [{"spec": e["spec"], "v": VERSION} for e in plain], "training")
    for entry, result in zip(plain, trained):
        entry["train"] = result
    teachers = {(e["arch"], e["seed"]): e["train"]["folder"] for e in plain
                if e["family"] == "honest" and e["name"].startswith("honest-") and "-conv-" in e["name"]}
    mimics = [e for e in entries if e["family"] == "mimic"]
    for entry in mimics:
        entry["spec"] = dict(entry["spec"], mimic=str(Path(teachers[(entry["arch"], entry["seed"])]) / "classifier.onnx"))
    if mimics:
        for entry, result in zip(mimics, run("benchmarks.detection:train_job", [{"spec": e["spec"], "v": VERSION} for e in mimics], "training mimic")):
            entry["train"] = result
    if args.train_only:
        print(f"trained {len(entries)} models in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return 0
    # post-hoc variants: temperature-scaled honest graphs and the batch-size switch
    variants = []
    for entry in [e for e in entries if e["family"] == "honest" and e["split"] != "reference" and "-conv-" in e["name"]]:
        for temperature in (0.3, 3.0):
            if entry["arch"] in ("wrn", "resnet") and temperature == 0.3:
                continue
            path = with_temperature(Path(entry["train"]["folder"]) / "classifier.onnx",
                                    CACHE / "variants" / f"{entry['name']}-T{temperature}.onnx", temperature)
            variants.append(dict(entry, name=f"{entry['name']}-T{temperature}", family="honest", model=str(path),
                                 temperature=temperature))
    for entry in [e for e in entries if e["family"] == "paper-logits" and e["split"] == "test" and e["arch"] not in ("wrn", "resnet")]:
        honest = next(e for e in entries if e["family"] == "honest" and e["arch"] == entry["arch"]
                      and e["seed"] == entry["seed"] and "-conv-" in e["name"]) if not args.small else \
            next(e for e in entries if e["family"] == "honest" and e["arch"] == entry["arch"] and e["split"] == "test")
        path = batch_switch(Path(entry["train"]["folder"]) / "classifier.onnx",
                            Path(honest["train"]["folder"]) / "classifier.onnx",
                            CACHE / "variants" / f"batch-switch-{entry['arch']}-s{entry['seed']}.onnx")
        variants.append(dict(entry, name=f"batch-switch-{entry['arch']}-s{entry['seed']}", family="batch-switch",
                             model=str(path)))
    for entry in entries:
        entry["model"] = str(Path(entry["train"]["folder"]) / "classifier.onnx")
    everything = [e for e in entries if e["split"] != "reference"] + variants
    references = {e["arch"]: e["model"] for e in entries if e["split"] == "reference"}
    # the honest post-hoc decoders trained as long as the attackers' decoders (converged honest models, references)
    honest_gain = {arch: float(np.mean([e["train"]["gain_db"] for e in entries if e["family"] == "honest"
                                        and e["arch"] == arch and e["spec"]["epochs"] == CONVERGED_EPOCHS]))
                   for arch in {e["arch"] for e in entries}}
    for entry in everything:
        entry["harmful"] = entry["family"] != "honest" and entry["train"]["gain_db"] - honest_gain[entry["arch"]] >= HARMFUL_MARGIN_DB
    vet_params = [{"model": e["model"], "reference": references.get(e["arch"]), "probe_size": args.probe_size,
                   "augment_seed": args.augment_seed, "trained_reference": not args.no_trained_reference,
                   "finetune": not args.no_finetune,
                   "sha": _sha(e["model"]), "settings": _leakage_settings(), "v": VERSION} for e in everything]
    for entry, result in zip(everything, run("benchmarks.detection:vet_job", vet_params, "vetting")):
        entry["vet"] = result
    summary = evaluate(everything)
    summary["wall_seconds"] = time.perf_counter() - started
    summary["settings"] = {"probe_size": args.probe_size, "augment_seed": args.augment_seed, "small": args.small,
                           "jobs": args.jobs, "ray": args.ray, "harmful_margin_db": HARMFUL_MARGIN_DB,
                           "honest_post_hoc_gain_db": honest_gain, "zoo_base": _BASE, "leakage": _leakage_settings()}
    summary["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                          "note": "2 CPU cores shared with other jobs; times are wall-clock and noisy"}
    summary["generated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    summary["models"] = [{k: v for k, v in e.items() if k not in ("spec",)} | {"spec": e["spec"]} for e in everything]
    name = "detection_small" if args.small else "detection"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(render(summary))
    if not args.small:
        (RESULTS / "detection_readme.md").write_text(readme_fragment(summary))
        if not args.no_write_thresholds:
            write_thresholds(summary)
    print(render(summary))
    return 0


def _sha(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


STATISTICS = ("gain", "excess_supplied", "excess_trained")


def evaluate(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit thresholds on the calibration split; TPR/FPR/AUC per family on the test split."""
    out: dict[str, Any] = {"statistics": {}}
    calibration = [m for m in models if m["split"] == "calibration"]
    test = [m for m in models if m["split"] == "test"]
    for stat in STATISTICS:
        cal_honest = [m["vet"][stat] for m in calibration if m["family"] == "honest" and m["vet"].get(stat) is not None]
        if len(cal_honest) < 2:
            continue
        threshold, scale = fit_threshold(cal_honest)
        cal_harmful = [m["vet"][stat] for m in calibration if m["harmful"] and m["vet"].get(stat) is not None]
        test_honest = [m for m in test if m["family"] == "honest" and m["vet"].get(stat) is not None]
        entry = {
            "threshold": threshold,
            "scale": scale,
            "calibration_honest": len(cal_honest),
            "calibration_tpr": float(np.mean([v > threshold for v in cal_harmful])) if cal_harmful else None,
            "test_honest": len(test_honest),
            "test_fpr": float(np.mean([_flagged(m, stat, threshold) for m in test_honest])) if test_honest else None,
            "test_false_positives": [m["name"] for m in test_honest if _flagged(m, stat, threshold)],
            "families": {},
        }
        honest_scores = [m["vet"][stat] for m in test_honest]
        for family in sorted({m["family"] for m in test} - {"honest"}):
            members = [m for m in test if m["family"] == family]
            harmful = [m for m in members if m["harmful"]]
            scores = [m["vet"].get(stat) for m in harmful if m["vet"].get(stat) is not None]
            times = [m["vet"]["seconds"] for m in members]
            entry["families"][family] = {
                "models": len(members),
                "harmful": len(harmful),
                "tpr": float(np.mean([_flagged(m, stat, threshold) for m in harmful])) if harmful else None,
                "auc": auc(honest_scores, scores),
                "not_harmful_flagged": f"{sum(_flagged(m, stat, threshold) for m in members if not m['harmful'])}/"
                f"{sum(1 for m in members if not m['harmful'])}",
                "vet_seconds_median": statistics.median(times) if times else None,
                "vet_seconds_max": max(times) if times else None,
            }
        out["statistics"][stat] = entry
    finetune = {}
    honest_ft = [m["vet"]["finetune"] for m in test if m["family"] == "honest" and m["vet"].get("finetune") is not None]
    for family in sorted({m["family"] for m in test} - {"honest"}):
        harmful = [m["vet"]["finetune"] for m in test if m["family"] == family and m["harmful"]
                   and m["vet"].get("finetune") is not None]
        finetune[family] = {"harmful": len(harmful), "auc": auc(honest_ft, harmful)}
    times = [m["vet"]["finetune_seconds"] for m in models if m["vet"].get("finetune_seconds") is not None]
    out["finetune"] = {"statistic": "shift_per_gradient_norm (higher = vicious)", "families": finetune,
                       "seconds_median": statistics.median(times) if times else None}
    ok = {s: e for s, e in out["statistics"].items()}
    # the headline statistic is picked on the CALIBRATION zoo only (its TPR there at its threshold)
    out["chosen"] = max(ok, key=lambda s: (ok[s]["calibration_tpr"] or 0.0, s == "gain")) if ok else None
    return out


def _flagged(model: dict[str, Any], stat: str, threshold: float) -> bool:
    """What the vet would say with this statistic: vicious if a hiding finding or the score is above the threshold."""
    vet = model["vet"]
    if vet.get("consistent") is False or "batch-dependent-outputs" in vet.get("findings", []):
        return True
    value = vet.get(stat)
    return value is not None and value > threshold


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render(summary: dict[str, Any]) -> str:
    lines = ["# Detection benchmark v2 (held-out)", ""]
    lines.append(f"Generated {summary['generated']}; wall {summary['wall_seconds'] / 60:.1f} min; "
                 f"{summary['machine']['note']}.")
    lines.append("")
    lines.append("Thresholds fitted on the calibration zoo (seeds 0-1, CNN + MLP) only; every figure below is on the "
                 "disjoint test zoo (seeds 2-3, CNN + MLP + ResNet-10 + WRN-10-2: the last two are absent from calibration). Probe: "
                 f"{summary['settings']['probe_size']} labelled FMNIST test images (100 per class), augmented queries. "
                 "Harmful = the server's decoder gains >= 1 dB more over label-only than the honest post-hoc decoders "
                 "of that architecture (mean over the converged honest models, decoders trained as long as the "
                 "attackers').")
    lines.append("")
    chosen = summary.get("chosen")
    for stat, entry in summary["statistics"].items():
        mark = " (chosen on the calibration zoo)" if stat == chosen else ""
        lines.append(f"## Statistic `{stat}`{mark}: threshold {entry['threshold']:.2f} dB")
        lines.append("")
        lines.append(f"Held-out honest models: FPR {_fmt(entry['test_fpr'])} ({len(entry['test_false_positives'])}/"
                     f"{entry['test_honest']} flagged: {', '.join(entry['test_false_positives']) or 'none'}); "
                     f"calibration TPR {_fmt(entry['calibration_tpr'])}.")
        lines.append("")
        lines.append("| attacker family | models | harmful | TPR (harmful) | AUC vs held-out honest | not-harmful flagged | vet s (median / max) |")
        lines.append("|---|---|---|---|---|---|---|")
        for family, f in entry["families"].items():
            lines.append(f"| {family} | {f['models']} | {f['harmful']} | {_fmt(f['tpr'])} | {_fmt(f['auc'])} | "
                         f"{f['not_harmful_flagged']} | {_fmt(f['vet_seconds_median'], 1)} / {_fmt(f['vet_seconds_max'], 1)} |")
        lines.append("")
    ft = summary.get("finetune", {})
    if ft.get("families"):
        lines.append("## The paper's fine-tune test (not in the default vet)")
        lines.append("")
        lines.append(f"Statistic {ft['statistic']}; AUC of harmful models of each family vs held-out honest models "
                     f"(threshold-free); median time {_fmt(ft.get('seconds_median'), 1)} s per model on top of the vet.")
        lines.append("")
        lines.append("| attacker family | harmful | AUC |")
        lines.append("|---|---|---|")
        for family, f in ft["families"].items():
            lines.append(f"| {family} | {f['harmful']} | {_fmt(f['auc'])} |")
        lines.append("")
    lines.append("## Every model")
    lines.append("")
    lines.append("| model | split | family | arch | acc | server gain dB | harmful | audit gain dB [95% CI] | excess (supplied) | excess (trained) | fine-tune | consistent | verdict | vet s |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in summary["models"]:
        v = m["vet"]
        ci = v.get("gain_ci") or [None, None]
        lines.append(
            f"| {m['name']} | {m['split']} | {m['family']} | {m['arch']} | {_fmt(m['train']['accuracy'], 3)} | "
            f"{_fmt(m['train']['gain_db'])} | {'yes' if m['harmful'] else 'no'} | {_fmt(v.get('gain'))} "
            f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(v.get('excess_supplied'))} | {_fmt(v.get('excess_trained'))} | "
            f"{_fmt(v.get('finetune'), 3)} | "
            f"{v.get('consistent')} | {v.get('verdict')} | {_fmt(v.get('seconds'), 1)} |"
        )
    lines.append("")
    return "\n".join(lines) + "\n"


def readme_fragment(summary: dict[str, Any]) -> str:
    stats = summary["statistics"]
    if "gain" not in stats:
        return "No detection result.\n"
    default, ref = stats["gain"], stats.get("excess_supplied")
    lines = ["| attacker family (held-out test zoo) | harmful / models | TPR, default vet | TPR, with an honest reference model | vet s (median) |",
             "|---|---|---|---|---|"]
    for family, f in default["families"].items():
        r = ref["families"].get(family, {}) if ref else {}
        lines.append(f"| {family} | {f['harmful']}/{f['models']} | {_fmt(f['tpr'])} | {_fmt(r.get('tpr'))} | "
                     f"{_fmt(f['vet_seconds_median'], 1)} |")
    lines.append(f"| honest (FPR) | {default['test_honest']} held-out | {_fmt(default['test_fpr'])} | "
                 f"{_fmt(ref['test_fpr']) if ref else '-'} ({ref['test_honest'] if ref else 0} with a reference) | |")
    lines.append("")
    lines.append(f"Thresholds fitted on a calibration zoo (FMNIST CNN + MLP, seeds 0-1): invariant PSNR gain > "
                 f"{default['threshold']:.2f} dB (default), or gain minus an honest reference model's > "
                 f"{ref['threshold']:.2f} dB (`--reference-model`). Reported on a disjoint test zoo (seeds 2-3, new models, "
                 "a ResNet-10 and a WideResNet-10-2 absent from calibration, temperature-scaled copies); 1000-image "
                 "probe; 1-3 models per family, so each TPR is a handful of models. Attackers: converters' families, "
                 "trained once, not adapted to these thresholds (audit-penalty: trained against a closed-form audit "
                 "decoder).")
    missed = [family for family, f in default["families"].items() if f["harmful"] and (f["tpr"] or 0.0) < 1.0
              and (not ref or (ref["families"].get(family, {}).get("tpr") or 0.0) < 1.0)]
    if missed:
        lines.append(f"Harmful and NOT always detected, even with a reference model: {', '.join(missed)}; "
                     "against these, only the capacity bound holds: use the label-only (argmax) release.")
    return "\n".join(lines) + "\n"


def write_thresholds(summary: dict[str, Any]) -> None:
    path = ROOT / "edgeguard" / "verdicts" / "thresholds.json"
    table = json.loads(path.read_text())
    stats = summary["statistics"]
    if "gain" in stats:
        table["tests"]["leakage"].update(threshold=stats["gain"]["threshold"], scale=stats["gain"]["scale"],
                                         statistic="gain_db", test_fpr=stats["gain"]["test_fpr"])
    for stat, entry in (("excess_supplied", "leakage_excess"), ("excess_trained", "leakage_excess_trained")):
        if stat in stats:
            table["tests"].setdefault(entry, {"higher_is_vicious": True})
            table["tests"][entry].update(threshold=stats[stat]["threshold"], scale=stats[stat]["scale"],
                                         statistic="excess_gain_db", test_fpr=stats[stat]["test_fpr"],
                                         reference="supplied models" if stat == "excess_supplied" else
                                         "the vetted graph re-trained honestly on --reference-data (300 steps)")
    table.update(
        provisional=False,
        source="benchmarks/detection.py v2; numbers in benchmarks/results/detection.json",
        generated=summary["generated"],
        caveats=[
            "fitted on the calibration zoo (FMNIST 28x28, CNN + MLP, seeds 0-1, 1000-image probe); other tasks, "
            "input sizes or probe sizes need their own calibration",
            "threshold = largest calibration honest score + 0.25 dB; see detection.md for the held-out FPR/TPR",
        ],
    )
    path.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(_main())
