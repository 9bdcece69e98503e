"""Detection benchmark v3: does ``edgeguard vet`` earn an "honest" on models it never saw, and refuse harmful ones?

The verdict is three-way (honest / vicious / inconclusive) and reported as such: for every
attacker family the NON-PASS rate of its harmful members (vicious or inconclusive: the app
does not release more than the label), for the honest models the HONEST-PASS rate next to
the false-positive rate (vicious verdicts), each with a 95% Wilson interval; the honest
models that end inconclusive are listed with the vet's reason.

Protocol (held out): the vet's thresholds must come from the *calibration* zoo (seeds 0-1,
CNN and MLP; ``--calibrate`` vets it and reports its verdicts apart, in-sample); every
headline figure is on the disjoint *test* zoo (seeds 2-3, new models, and a ResNet-10 and a
WideResNet-10-2, architectures calibration never saw). The probe is 1000 labelled
Fashion-MNIST test images (100 per class, test images 5000-9999, disjoint from every zoo
model's data); ``--reference-data`` (default on) gives the vet 2000 labelled training images
no zoo model was trained on (54000-55999), for its architecture-matched honest twin.

Attackers (test zoo only):

* trained (benchmarks/zoo.py's detection zoo): the paper's joint training on logits / on
  softmax, log-probabilities, an output temperature, CE-only finishing epochs, training
  through release filters, distillation towards an honest teacher (mimic), a penalty on a
  closed-form audit decoder;
* the red team (benchmarks/zoo.py ``redteam_zoo``, converters.attacks.graph_edits): one family
  per training-free graph edit, built from held-out honest/vicious pairs (input-statistic
  switches, output-kind lie, scale inflation, five lattice codes (one, relu, built from allowed ops
  only), noise gate, probe-balance and batch-size switches). Never used for calibration.

"Harmful": the server's own decoder gains >= 1 dB more over the label-only baseline than the
honest post-hoc decoders of that architecture (the "honest twin": mean over the converged
honest models). For the red team the server decodes what it recovers from the edited
model's outputs on clean test images (exact lattice decoding, spike removal, ...).

Usage: ``python benchmarks/detection.py [--jobs N] [--ray ADDRESS] [--small] [--calibrate]
[--redteam-pairs N] [--from-json PATH]``. Results: benchmarks/results/detection{.md,.json,_readme.md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
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

CACHE = ROOT / "benchmarks" / ".cache" / "detection"
RESULTS = ROOT / "benchmarks" / "results"
DATA = os.environ.get("EDGEGUARD_FMNIST", "/usr/share/datasets/fashion-mnist")
HARMFUL_MARGIN_DB = 1.0
VERSION = 3

from benchmarks import zoo as _zoo  # noqa: E402  (after the sys.path set-up above)
from benchmarks.detection_report import readme_fragment, render  # noqa: E402

_BASE = _zoo.DETECTION_BASE
CONVERGED_EPOCHS = _zoo.DETECTION_CONVERGED_EPOCHS


#: The red team's base pair in the --small zoo.
_SMALL_REDTEAM_PAIRS = (("honest-cnn-s1", "paper-logits-cnn-s1"),)


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


def redteam_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Build (or reuse) one graph-edit model and measure its server gain (benchmarks/zoo.py)."""
    from benchmarks.zoo import build_graph_edit
    from edgeguard.errors import InvalidInputError

    try:
        record = build_graph_edit(params["family"], params["honest"], params["vicious"], data=DATA)
    except InvalidInputError as error:  # the attacker's own check: the edit would cost more accuracy than it allows
        return {"refused": str(error)}
    return {**record, "folder": str(Path(record["classifier"]).parent)}


def vet_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Vet one model with the installed vet (its default tests and thresholds); a compact record."""
    import torch

    torch.set_num_threads(1)
    from edgeguard.vetting import vet

    probe = _probe_set(params["probe_size"])
    knobs: dict[str, Any] = {}
    if params.get("reference_data"):
        knobs["reference_data"] = _reference_set()
    if params.get("reference_models"):  # a supplied honest twin instead of the trained one
        knobs["reference_models"] = list(params["reference_models"])
    started = time.perf_counter()
    report = vet(params["model"], probe, seed=0, augment_seed=params["augment_seed"], progress=lambda _m: None, **knobs)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **compact(report.to_dict())}


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark keeps of a vet report: verdict, reasons, findings, each test's scalar figures."""
    tests = {}
    for name, test in report.get("tests", {}).items():
        details = {k: v for k, v in (test.get("details") or {}).items() if _small(v)}
        tests[name] = {k: test.get(k) for k in ("status", "score", "threshold", "flagged", "reason", "seconds")}
        tests[name]["details"] = details
    return {
        "verdict": report["verdict"],
        "likelihood": report.get("likelihood"),
        "reasons": list(report.get("reasons", []))[:6],
        "findings": sorted({(f["code"], f["severity"]) for f in report.get("findings", [])}),
        "tests": tests,
        "accuracy_probe": (report.get("probe") or {}).get("accuracy"),
        "requested_tests": list((report.get("settings") or {}).get("tests") or []),
        "probe": {k: (report.get("probe") or {}).get(k) for k in ("samples", "coverage_problems", "accuracy")},
        "thresholds_sha256": report.get("thresholds_sha256"),
    }


def _small(value: Any) -> bool:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return not isinstance(value, str) or len(value) < 300
    if isinstance(value, (list, tuple)):
        return len(value) <= 12 and all(isinstance(v, (int, float, str, bool)) or v is None for v in value)
    return False


@functools.cache
def vet_version() -> str:
    """Hash of what the vet's *scores* depend on: a changed one re-runs every vet job.

    edgeguard/vetting, metrics, model and onnx_torch sources, and the thresholds table without its
    decisive numbers (margins, the accuracy slope: :data:`_DECISIVE`). The decision itself
    (edgeguard/verdicts) is not hashed: :func:`redecide` re-runs it on every cached report with the
    installed rule and thresholds, as SafeModel does, so refitting a margin costs no re-vet.
    """
    digest = hashlib.sha256()
    for folder in ("vetting", "metrics", "model", "onnx_torch"):
        for path in sorted((ROOT / "edgeguard" / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    table = json.loads(_thresholds_path().read_text())
    for entry in (table.get("tests") or {}).values():
        for key in _DECISIVE:
            entry.pop(key, None)
    digest.update(json.dumps({"tests": table.get("tests"), "reference": table.get("reference")}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


#: Thresholds-table keys that only the decision reads (a refit changes them without a re-vet).
_DECISIVE = ("threshold", "scale", "hard", "accuracy_slope_db", "accuracy_gap_range", "provisional", "fitted_on",
             "note", "test_fpr", "calibration")


def _thresholds_path() -> Path:
    candidates = (ROOT / "edgeguard" / "verdicts" / "thresholds.json", ROOT / "edgeguard" / "vetting" / "thresholds.json")
    return next(p for p in candidates if p.is_file())


def redecide(models: list[dict[str, Any]]) -> None:
    """Re-run the installed decision rule (edgeguard.verdicts) on each model's cached report, in place."""
    from edgeguard.verdicts.rule import decide_record
    from edgeguard.verdicts.thresholds import thresholds_sha256

    table = json.loads(_thresholds_path().read_text())
    digest = thresholds_sha256(table)  # as the vet records it in a report (canonical JSON), read once
    for m in models:
        vet = m.get("vet")
        if not vet:
            continue
        record = {
            "tests": vet["tests"],
            "findings": [{"code": c, "severity": s} for c, s in vet.get("findings", [])],
            "settings": {"tests": vet.get("requested_tests") or []},
            "probe": vet.get("probe") or {},
        }
        decision = decide_record(record, table)
        vet.update(verdict=decision.verdict, reasons=list(decision.reasons)[:6], likelihood=decision.likelihood)
        vet["thresholds_sha256"] = digest


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


# -- post-hoc honest variants (no training) ----------------------------------------------------------------


def with_temperature(source: Path, target: Path, temperature: float) -> Path:
    """The same graph with its output divided by ``temperature`` (one Div node): still an honest model."""
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


# -- statistics -------------------------------------------------------------------------------------------------


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a rate (None for an empty sample)."""
    if total == 0:
        return None, None
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def rate(successes: int, total: int) -> dict[str, Any]:
    low, high = wilson(successes, total)
    return {"k": successes, "n": total, "rate": successes / total if total else None, "ci95": [low, high]}


def median_ci(values: list[float], seed: int = 0, draws: int = 2000) -> dict[str, Any]:
    """Median with a 95% bootstrap interval (percentile)."""
    if not values:
        return {"median": None, "ci95": [None, None], "n": 0}
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(data, size=(draws, len(data)), replace=True), axis=1)
    return {
        "median": float(np.median(data)),
        "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        "n": len(values),
    }


def _observed(group: list[dict[str, Any]]) -> dict[str, int]:
    """What actually stopped (or passed) the family's models: verdict and the vet's first reason, counted."""
    counts: dict[str, int] = {}
    for m in group:
        reason = (m["vet"]["reasons"] or ["-"])[0]
        key = f"{m['vet']['verdict']}: {reason[:90]}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def mean_range(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def evaluate(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Three-way figures per family on the test split (and, apart, on the calibration split)."""
    out: dict[str, Any] = {}
    for split in ("test", "calibration"):
        members = [m for m in models if m["split"] == split and "vet" in m]
        if not members:
            continue
        honest = [m for m in members if m["family"] == "honest"]
        part: dict[str, Any] = {
            "honest": {
                "models": len(honest),
                "honest_pass": rate(sum(m["vet"]["verdict"] == "honest" for m in honest), len(honest)),
                "fpr_vicious": rate(sum(m["vet"]["verdict"] == "vicious" for m in honest), len(honest)),
                "inconclusive": rate(sum(m["vet"]["verdict"] == "inconclusive" for m in honest), len(honest)),
                "not_passed": [
                    {"name": m["name"], "verdict": m["vet"]["verdict"], "reason": (m["vet"]["reasons"] or ["-"])[0]}
                    for m in honest
                    if m["vet"]["verdict"] != "honest"
                ],
                "vet_seconds": median_ci([m["vet"]["seconds"] for m in honest]),
            },
            "families": {},
        }
        for family in sorted({m["family"] for m in members} - {"honest"}):
            group = [m for m in members if m["family"] == family]
            harmful = [m for m in group if m["harmful"]]
            gains = [m["server_gain_db"] for m in group]
            over_twin = [m["server_gain_db"] - m["twin_gain_db"] for m in group]
            part["families"][family] = {
                "redteam": any(m.get("redteam") for m in group),
                "stopped_by": next((m.get("stopped_by") for m in group if m.get("stopped_by")), None),
                "models": len(group),
                "harmful": len(harmful),
                "non_pass_harmful": rate(sum(m["vet"]["verdict"] != "honest" for m in harmful), len(harmful)),
                "vicious_harmful": rate(sum(m["vet"]["verdict"] == "vicious" for m in harmful), len(harmful)),
                "passed_harmful": [m["name"] for m in harmful if m["vet"]["verdict"] == "honest"],
                "passed_not_harmful": f"{sum(m['vet']['verdict'] == 'honest' for m in group if not m['harmful'])}/"
                f"{sum(1 for m in group if not m['harmful'])}",
                "server_gain_db": mean_range(gains),
                "gain_over_twin_db": mean_range(over_twin),
                "gain_dithered_db": mean_range(
                    [m["gain_dithered_db"] for m in group if m.get("gain_dithered_db") is not None]
                ),
                "vet_seconds": median_ci([m["vet"]["seconds"] for m in group]),
                "observed": _observed(group),
            }
        out[split] = part
    test = out.get("test", {})
    harmful_passed = {f: e["passed_harmful"] for f, e in test.get("families", {}).items() if e["passed_harmful"]}
    honest_rate = (test.get("honest", {}).get("honest_pass") or {}).get("rate")
    out["bar"] = {
        "no_harmful_vicious_passes": not harmful_passed,
        "harmful_passed": harmful_passed,
        "honest_pass_rate": honest_rate,
        "honest_pass_at_least_90": honest_rate is not None and honest_rate >= 0.9,
    }
    cnn = [m["vet"]["seconds"] for m in models if m["split"] == "test" and m["arch"] == "cnn" and "vet" in m]
    out["vet_seconds_cnn"] = median_ci(cnn)
    return out


# -- calibration (the calibration zoo only) -----------------------------------------------------------------------

#: Slack added above the largest calibration honest upper bound when the leakage margin is refitted (dB).
MARGIN_SLACK_DB = 0.1


def fit_thresholds(models: list[dict[str, Any]], table: dict[str, Any]) -> dict[str, Any]:
    """Refit the vet's decisive margins on the CALIBRATION zoo's honest models; returns what changed.

    - the leakage entry each honest model was decided on (``details.threshold_entry``: the excess
      over the twin when the twin ran): the slope of the honest excess against the accuracy lead
      over the twin (least squares, never positive; ``accuracy_slope_db``, with the range of leads
      seen, read by ``edgeguard.verdicts.rule.accuracy_adjustment``), then margin = the largest
      upper 95% bound, raised for the lead, over the calibration honest models + :data:`MARGIN_SLACK_DB`;
    - continuity / precision: the threshold is raised to 1.5x the largest calibration honest score
      when an honest model reached it (never lowered; hard limits unchanged).

    The held-out zoo never enters: its figures then test the refitted margins out of sample.
    """
    honest = [m for m in models if m["split"] == "calibration" and m["family"] == "honest" and "vet" in m]
    changes: dict[str, Any] = {}
    points: dict[str, list[tuple[float, float, float | None]]] = {}  # entry -> (score, upper bound, accuracy gap)
    for m in honest:
        leak = m["vet"]["tests"].get("leakage") or {}
        details = leak.get("details") or {}
        ci = details.get("ci95")
        if leak.get("status") == "ran" and isinstance(ci, list) and len(ci) == 2 and ci[1] is not None:
            gap = details.get("accuracy_gap")
            points.setdefault(str(details.get("threshold_entry") or "leakage"), []).append(
                (float(leak["score"]), float(ci[1]), float(gap) if gap is not None else None)
            )
    for key, rows in points.items():
        entry = table.setdefault("tests", {}).setdefault(key, {"higher_is_vicious": True})
        gaps = [g for _, _, g in rows if g is not None]
        slope = None
        if len(gaps) == len(rows) and len(rows) >= 3 and float(np.var(gaps)) > 0:
            # honest excess against the accuracy lead over the twin: least squares, never a positive slope
            slope = min(0.0, float(np.polyfit(gaps, [score for score, _, _ in rows], 1)[0]))
        uppers = [high - (slope or 0.0) * max(g or 0.0, 0.0) for _, high, g in rows]
        new = max(uppers) + MARGIN_SLACK_DB
        changes[key] = {
            "old": entry.get("threshold"),
            "new": new,
            "calibration_honest": len(rows),
            "largest_upper_bound": max(uppers),
            "accuracy_slope_db": slope,
            "accuracy_gaps": gaps,
        }
        entry.update(
            threshold=new,
            provisional=False,
            fitted_on=f"benchmarks/detection.py v3 calibration zoo ({len(rows)} honest models, seeds 0-1, CNN + "
            f"MLP): largest upper 95% bound (raised for the accuracy lead over the twin) + {MARGIN_SLACK_DB} dB",
        )
        entry["note"] = (
            "fitted on the calibration zoo (see fitted_on); vicious if the lower 95% bound, raised for the accuracy "
            "lead over the twin (edgeguard.verdicts.rule.accuracy_adjustment), exceeds it; honest only if the upper "
            "bound does not; held-out figures in benchmarks/results/detection.md"
        )
        if slope is not None:
            entry.update(accuracy_slope_db=slope, accuracy_gap_range=[min(gaps), max(gaps)])
    for name in ("continuity", "precision"):
        scores = [
            float(m["vet"]["tests"][name]["score"])
            for m in honest
            if (m["vet"]["tests"].get(name) or {}).get("score") is not None
        ]
        entry = table.get("tests", {}).get(name)
        if not scores or not entry:
            continue
        changes[name] = {"old": entry.get("threshold"), "calibration_honest_max": max(scores)}
        if max(scores) >= float(entry["threshold"]):
            entry["threshold"] = min(1.5 * max(scores), float(entry.get("hard", float("inf"))))
        changes[name]["new"] = entry["threshold"]
    return changes


def _write_thresholds(models: list[dict[str, Any]], generated: str) -> dict[str, Any]:
    path = _thresholds_path()
    table = json.loads(path.read_text())
    changes = fit_thresholds(models, table)
    table["source"] = (
        "benchmarks/detection.py v3 (calibration zoo); held-out figures in benchmarks/results/detection.md"
    )
    table["generated"] = generated
    path.write_text(json.dumps(table, indent=2) + "\n")
    return {"path": str(path.relative_to(ROOT)), "changes": changes}


# -- main -----------------------------------------------------------------------------------------------------------


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="run the jobs on Ray (auto or an address)")
    parser.add_argument("--small", action="store_true", help="a handful of tiny models (a few minutes)")
    parser.add_argument("--probe-size", type=int, default=1000)
    parser.add_argument("--augment-seed", type=int, default=12345)
    parser.add_argument(
        "--no-reference-data",
        "--no-trained-reference",
        action="store_true",
        help="vet without --reference-data (no labelled data for the honest twin)",
    )
    parser.add_argument(
        "--write-thresholds",
        action="store_true",
        help="refit the vet's margins on the calibration zoo (implies --calibrate), then vet the held-out zoo with them",
    )
    parser.add_argument("--no-write-thresholds", action="store_true", help="accepted for old callers (the default)")
    parser.add_argument(
        "--calibrate", action="store_true", help="also vet the calibration zoo (in-sample, reported apart)"
    )
    parser.add_argument(
        "--redteam-pairs",
        type=int,
        default=len(_zoo.REDTEAM_PAIRS),
        help="how many of zoo.REDTEAM_PAIRS the red-team families are built on (0: none)",
    )
    parser.add_argument("--no-trained-attackers", action="store_true", help="vet only honest models and the red team")
    parser.add_argument(
        "--no-temperature-variants", action="store_true", help="skip the temperature-scaled honest graphs"
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="use only zoo models already trained (benchmarks/.cache/zoo); the skipped ones are listed in the results",
    )
    parser.add_argument(
        "--models",
        default=None,
        metavar="PATTERNS",
        help="comma-separated name patterns (fnmatch) of the models to vet, vetted in that order (a budget cut, "
        "stated in the results)",
    )
    parser.add_argument(
        "--supplied-twin",
        default=None,
        metavar="PATTERNS",
        help="also vet these held-out models (fnmatch patterns) with a SUPPLIED honest twin (--reference-model: the "
        "converged honest model of the same architecture and the other held-out seed): what the verdict rests on "
        "when a twin does exist",
    )
    parser.add_argument(
        "--vetted-only",
        action="store_true",
        help="report only the models whose vet already ran (job cache); the others are listed as a budget cut",
    )
    parser.add_argument("--train-only", action="store_true", help="train (cache) the zoo and stop")
    parser.add_argument(
        "--from-json", metavar="PATH", help="re-render detection.md / the README fragment from a results JSON"
    )
    args = parser.parse_args()
    if args.from_json:
        summary = json.loads(Path(args.from_json).read_text())
        (RESULTS / "detection.md").write_text(render(summary))
        (RESULTS / "detection_readme.md").write_text(readme_fragment(summary))
        return 0
    started = time.perf_counter()
    from edgeguard.jobs import Job, run_jobs

    def run(function: str, params_list: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        jobs = [Job(function=function, params=p) for p in params_list]
        results = run_jobs(
            jobs,
            cache_dir=CACHE / "jobs",
            executor="ray" if args.ray else "local",
            workers=args.jobs,
            ray_address=args.ray,
            description=what,
        )
        return [r.result for r in results]

    entries = zoo(args.small)
    skipped: list[str] = []
    if args.cached_only:  # a budget cut, stated in the results: models not trained yet are left out
        cached = [
            e for e in entries if e["family"] == "mimic" or (_zoo.folder_for(e["spec"]) / "report.json").is_file()
        ]
        skipped = sorted(e["name"] for e in entries if e not in cached)
        entries = cached
    plain = [e for e in entries if e["family"] != "mimic"]
    for entry, result in zip(
        plain, run("benchmarks.detection:train_job", [{"spec": e["spec"], "v": VERSION} for e in plain], "training")
    ):
        entry["train"] = result
    teachers = {
        (e["arch"], e["seed"]): e["train"]["folder"] for e in plain if e["family"] == "honest" and "-conv-" in e["name"]
    }
    mimics = [e for e in entries if e["family"] == "mimic" and (e["arch"], e["seed"]) in teachers]
    entries = [e for e in entries if e["family"] != "mimic" or e in mimics]
    for entry in mimics:
        entry["spec"] = dict(
            entry["spec"], mimic=str(Path(teachers[(entry["arch"], entry["seed"])]) / "classifier.onnx")
        )
    for entry, result in zip(
        mimics,
        run("benchmarks.detection:train_job", [{"spec": e["spec"], "v": VERSION} for e in mimics], "training mimic"),
    ):
        entry["train"] = result
    if args.train_only:
        print(f"trained {len(entries)} models in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return 0
    for entry in entries:
        entry["model"] = str(Path(entry["train"]["folder"]) / "classifier.onnx")
        entry["server_gain_db"] = entry["train"]["gain_db"]
    # the honest twin's gain: honest post-hoc decoders trained as long as the attackers' decoders (converged models)
    twin_gain = {arch: _twin_gain(entries, arch) for arch in {e["arch"] for e in entries}}
    variants = []  # honest graphs with an appended temperature (still honest)
    for entry in [
        e for e in entries if e["family"] == "honest" and e["split"] != "reference" and "-conv-" in e["name"]
    ]:
        for temperature in () if args.no_temperature_variants else (0.3, 3.0):
            if entry["arch"] in ("wrn", "resnet") and temperature == 0.3:
                continue
            path = with_temperature(
                Path(entry["model"]), CACHE / "variants" / f"{entry['name']}-T{temperature}.onnx", temperature
            )
            variants.append(
                dict(entry, name=f"{entry['name']}-T{temperature}", model=str(path), temperature=temperature)
            )
    pairs = (_SMALL_REDTEAM_PAIRS if args.small else _zoo.REDTEAM_PAIRS)[: max(0, args.redteam_pairs)]
    red = _zoo.redteam_zoo(entries, pairs)
    if args.models:  # build only the red-team models that will be vetted
        import fnmatch

        red = [r for r in red if any(fnmatch.fnmatch(r["name"], p.strip()) for p in args.models.split(","))]
    by_name = {e["name"]: e for e in entries}
    params = [
        {
            "family": r["family"],
            "honest": by_name[r["honest"]]["train"]["folder"],
            "vicious": by_name[r["vicious"]]["train"]["folder"],
            "v": _zoo.REDTEAM_VERSION,
        }
        for r in red
    ]
    refused = []
    for entry, result in zip(red, run("benchmarks.detection:redteam_job", params, "red team")):
        if "refused" in result:  # not a model: listed with the attacker's reason, never vetted
            refused.append({"name": entry["name"], "reason": result["refused"]})
            continue
        if result.get("gain_over_posthoc_twin_db") is not None:  # blend: its fresh decoder vs the same one on the honest base
            entry["twin_gain_db"] = result["gain_db"] - result["gain_over_posthoc_twin_db"]
        entry.update(
            redteam=True,
            model=result["classifier"],
            server_gain_db=result["gain_db"],
            gain_dithered_db=result.get("gain_dithered_db"),
            stopped_by=result["stopped_by"],
            train={
                "accuracy": result["accuracy"],
                "gain_db": result["gain_db"],
                "folder": result["folder"],
                "label": result["label"],
                "code": result["code"],
            },
        )
    red = [r for r in red if "model" in r]
    skipped += [f"{r['name']} (the red team could not build it: {r['reason'][:120]})" for r in refused]
    everything = [e for e in entries if e["split"] != "reference"] + variants + red
    if args.no_trained_attackers:
        everything = [e for e in everything if e["family"] == "honest" or e.get("redteam")]
    if not (args.calibrate or args.write_thresholds):
        everything = [e for e in everything if e["split"] != "calibration"]
    if args.models:  # keep the models matching the patterns, in the patterns' order
        import fnmatch

        chosen: list[dict[str, Any]] = []
        for pattern in args.models.split(","):
            chosen += [e for e in everything if fnmatch.fnmatch(e["name"], pattern.strip()) and e not in chosen]
        everything = chosen
    for entry in everything:
        entry.setdefault("twin_gain_db", twin_gain[entry["arch"]])  # like-for-like decoders on the honest model
        entry["harmful"] = (
            entry["family"] != "honest" and entry["server_gain_db"] - entry["twin_gain_db"] >= HARMFUL_MARGIN_DB
        )

    def vet_params(e: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": e["model"],
            "probe_size": args.probe_size,
            "augment_seed": args.augment_seed,
            "reference_data": not args.no_reference_data,
            "sha": _sha(e["model"]),
            "vet": vet_version(),
            "v": VERSION,
        }

    if args.vetted_only:  # a budget cut, stated in the results: only models whose vet already ran (job cache)
        from edgeguard.jobs import job_key

        def vetted(e: dict[str, Any]) -> bool:  # the job cache's layout: <key[:2]>/<key>/result.json when finished
            key = job_key("benchmarks.detection:vet_job", vet_params(e))
            return (CACHE / "jobs" / key[:2] / key / "result.json").is_file()

        done = [e for e in everything if vetted(e)]
        skipped += sorted(f"{e['name']} (not vetted in time)" for e in everything if e not in done)
        everything = done

    def vet_all(models: list[dict[str, Any]], what: str) -> None:
        params = [vet_params(e) for e in models]
        for entry, result in zip(models, run("benchmarks.detection:vet_job", params, what)):
            entry["vet"] = result

    calibration = [e for e in everything if e["split"] == "calibration"]
    refit = None
    if calibration:
        vet_all(calibration, "vetting (calibration zoo)")
        if args.write_thresholds:  # refit on the calibration zoo; the decision is re-run below, no re-vet
            refit = _write_thresholds(calibration, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            print(f"thresholds refitted: {json.dumps(refit)}", file=sys.stderr)
    vet_all([e for e in everything if e["split"] != "calibration"], "vetting (held-out zoo)")
    redecide(everything)  # the installed rule and (refitted) thresholds on every report
    summary = evaluate(everything)
    summary["refit"] = refit
    summary["supplied_twin"] = _supplied_twin(args, entries, everything, run) if args.supplied_twin else []
    summary["wall_seconds"] = time.perf_counter() - started
    summary["settings"] = {
        "probe_size": args.probe_size,
        "augment_seed": args.augment_seed,
        "small": args.small,
        "jobs": args.jobs,
        "ray": args.ray,
        "harmful_margin_db": HARMFUL_MARGIN_DB,
        "reference_data": not args.no_reference_data,
        "calibrate": args.calibrate,
        "write_thresholds": args.write_thresholds,
        "skipped_not_trained": skipped,
        "models_selected": args.models,
        "supplied_twin": args.supplied_twin,
        "temperature_variants": not args.no_temperature_variants,
        "redteam_pairs": [list(p) for p in pairs],
        "twin_gain_db": twin_gain,
        "zoo_base": _BASE,
        "vet_version": vet_version(),
    }
    summary["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_end": list(os.getloadavg()),
        "note": "2 CPU cores shared with other jobs; times are wall-clock and noisy",
    }
    summary["generated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    keep = (
        "name",
        "split",
        "family",
        "arch",
        "seed",
        "harmful",
        "server_gain_db",
        "twin_gain_db",
        "gain_dithered_db",
        "redteam",
        "stopped_by",
        "honest",
        "vicious",
        "temperature",
        "vet",
    )
    summary["models"] = [{k: e[k] for k in keep if k in e} | {"accuracy": e["train"]["accuracy"]} for e in everything]
    name = "detection_small" if args.small else "detection"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(render(summary))
    if not args.small:
        (RESULTS / "detection_readme.md").write_text(readme_fragment(summary))
    print(render(summary))
    return 0


def _supplied_twin(args: Any, entries: list[dict[str, Any]], everything: list[dict[str, Any]], run: Any) -> list:
    """Vet the chosen held-out models again with a supplied honest twin (another held-out seed's converged model)."""
    import fnmatch

    honest = {(e["arch"], e["seed"]): e["model"] for e in entries if e["family"] == "honest" and "-conv-" in e["name"]}
    chosen = []
    for pattern in args.supplied_twin.split(","):
        chosen += [
            e
            for e in everything
            if fnmatch.fnmatch(e["name"], pattern.strip()) and e["split"] == "test" and e not in chosen
        ]
    rows, params = [], []
    for e in chosen:
        base_seed = e.get("seed")
        twin = next((honest[(e["arch"], s)] for s in (3, 2) if (e["arch"], s) in honest and s != base_seed), None)
        if twin is None or twin == e["model"]:
            continue
        rows.append({"name": e["name"], "family": e["family"], "harmful": e["harmful"], "twin": Path(twin).parent.name})
        params.append(
            {
                "model": e["model"],
                "probe_size": args.probe_size,
                "augment_seed": args.augment_seed,
                "reference_models": [twin],
                "sha": _sha(e["model"]),
                "vet": vet_version(),
                "v": VERSION,
            }
        )
    for row, result in zip(rows, run("benchmarks.detection:vet_job", params, "vetting (supplied twin)")):
        redecide([{"vet": result}])  # the installed rule and thresholds, as for every other report
        leak = result["tests"].get("leakage") or {}
        row.update(
            verdict=result["verdict"],
            reason=(result["reasons"] or ["-"])[0],
            seconds=result["seconds"],
            statistic=(leak.get("details") or {}).get("statistic"),
            score=leak.get("score"),
            ci95=(leak.get("details") or {}).get("ci95"),
        )
    return rows


def _twin_gain(entries: list[dict[str, Any]], arch: str) -> float:
    """Mean gain of the honest post-hoc decoders of the architecture's converged (longest-trained) honest models."""
    honest = [e for e in entries if e["family"] == "honest" and e["arch"] == arch]
    longest = max(e["spec"]["epochs"] for e in honest)
    return float(np.mean([e["train"]["gain_db"] for e in honest if e["spec"]["epochs"] == longest]))


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


if __name__ == "__main__":
    sys.exit(_main())
