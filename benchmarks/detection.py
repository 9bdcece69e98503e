"""How well does ``edgeguard vet`` tell vicious from honest Fashion-MNIST classifiers?

Builds (through the cached zoo, benchmarks/_zoo.py) a zoo of 20 honest and vicious models:
3 seeds x {logits, softmax} x {honest 1 epoch, honest to convergence, vicious with
finish-CE epochs and a refitted decoder (an attacker who knows the fine-tune test)}, plus
two plain vicious models (seed 0), b2 in {0.3, 1, 3}, two architectures (cnn, mlp). For every model it runs
the vet's tests with many candidate settings (the paper's fine-tune cosine test and its
normalised variants; k-NN and kernel-ridge leakage decoders), reports ROC AUC, TPR at 5%
FPR and wall time per candidate, picks the defaults, fits the thresholds and writes
them with their provenance to ``edgeguard/vetting/thresholds.json``, then times the full
``edgeguard.vetting`` with those defaults. Circularity: the thresholds are fitted on this
zoo, so the report also gives a leave-one-seed-out evaluation (fit on two seeds, judge
the third).

    nice -n 5 python benchmarks/detection.py --threads 2            # build + evaluate
    python benchmarks/detection.py --build-only --threads 2         # train the zoo only

Writes benchmarks/results/detection.md and detection.json.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._zoo import DEFAULT_ROOT, build, folder_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS_PATH = Path(__file__).resolve().parents[1] / "edgeguard" / "vet" / "thresholds.json"
SEEDS = (0, 1, 2)
OUTPUTS = ("logits", "softmax")
BETA2_VALUES = (0.3, 1.0, 3.0)
TRAIN_LIMIT = 20000
TEST_LIMIT = 2000  # the converters' own evaluation (first 2000 test images)
PROBE_SLICE = (7000, 10000)  # the vet's probe set: the last 3000 test images (disjoint from the above)
CONVERGED_EPOCHS = 6
VICIOUS_EPOCHS = 4
FINISH_CE_EPOCHS = 2
DECODER_EPOCHS = 1
TARGET_AUC = 0.99
#: Cross-validated AUCs closer than this count as tied when choosing the vet's defaults.
AUC_TIE = 0.02
#: Tie-break between tied leakage decoders (see fit_rule). Added after the first full run, whose
#: strict-AUC pick was the linear ridge decoder (0.01 better cross-validated AUC than krr), on
#: security grounds: a linear audit is the easiest for an attacker to evade.
DECODER_STRENGTH = {"krr": 2, "knn": 1, "ridge": 0}
TARGET_SECONDS = 20.0


def architecture(seed: int, output: str) -> str:
    """cnn and mlp alternate so that every seed and every output setting has both."""
    return "cnn" if (seed + (output == "softmax")) % 2 == 0 else "mlp"


def zoo_specs(threads: int) -> list[dict[str, Any]]:
    """The 20 zoo specs (TrainConfig fields): 3 per seed and setting, plus 2 plain vicious models for seed 0."""
    specs = []
    for seed in SEEDS:
        for index, output in enumerate(OUTPUTS):
            common = {
                "output": output,
                "arch": architecture(seed, output),
                "seed": seed,
                "train_limit": TRAIN_LIMIT,
                "test_limit": TEST_LIMIT,
                "decoder_epochs": DECODER_EPOCHS,
                "threads": threads,
            }
            finish_b2 = BETA2_VALUES[(2 * seed + index) % 3]
            plain_b2 = BETA2_VALUES[(2 * seed + index + 1) % 3]
            specs += [
                {"objective": "honest", "epochs": 1, **common},
                {"objective": "honest", "epochs": CONVERGED_EPOCHS, **common},
                {
                    "objective": "vicious",
                    "beta2": finish_b2,
                    "epochs": VICIOUS_EPOCHS,
                    "finish_ce_epochs": FINISH_CE_EPOCHS,
                    **common,
                },
            ]
            if seed == SEEDS[0]:  # the paper's attacker (no finish-CE epochs), as a reference
                specs.append({"objective": "vicious", "beta2": plain_b2, "epochs": VICIOUS_EPOCHS, **common})
    return specs


def describe(spec: dict[str, Any]) -> str:
    if spec["objective"] == "honest":
        kind = "honest-1ep" if spec["epochs"] == 1 else f"honest-{spec['epochs']}ep"
    else:
        kind = f"vicious-b2={spec['beta2']:g}" + ("+finish" if spec.get("finish_ce_epochs") else "")
    return f"{kind} {spec['output']} {spec['arch']} s{spec['seed']}"


def build_zoo(specs: list[dict[str, Any]], root: Path) -> list[tuple[dict[str, Any], Path, float, bool]]:
    built = []
    for number, spec in enumerate(specs, 1):
        cached = (folder_for(spec, root) / "report.json").is_file()
        started = time.perf_counter()
        print(f"[{number}/{len(specs)}] {describe(spec)}{' (cached)' if cached else ''}", file=sys.stderr, flush=True)
        folder = build(spec, root)
        built.append((spec, folder, time.perf_counter() - started, not cached))
    return built


# -- candidate settings ----------------------------------------------------------------------

#: Leakage-audit candidates: name -> LeakageSettings fields.
LEAKAGE_CANDIDATES: dict[str, dict[str, Any]] = {
    "knn5": {"decoder": "knn", "neighbours": 5},
    "knn10": {"decoder": "knn", "neighbours": 10},
    "knn20": {"decoder": "knn", "neighbours": 20},
    "knn10-prob": {"decoder": "knn", "neighbours": 10, "features": "probabilities"},
    "ridge": {"decoder": "ridge", "ridge_alpha": 1.0},
    "krr-g1-a0.3": {"decoder": "krr", "kernel_gamma": 1.0, "ridge_alpha": 0.3},
    "krr-g1-a1": {"decoder": "krr", "kernel_gamma": 1.0, "ridge_alpha": 1.0},
    "krr-g2-a0.3": {"decoder": "krr", "kernel_gamma": 2.0, "ridge_alpha": 0.3},
    "krr-g2-a1": {"decoder": "krr", "kernel_gamma": 2.0, "ridge_alpha": 1.0},
    "krr-g4-a1": {"decoder": "krr", "kernel_gamma": 4.0, "ridge_alpha": 1.0},
    "krr-g1-a0.3-both": {"decoder": "krr", "kernel_gamma": 1.0, "ridge_alpha": 0.3, "features": "both"},
}
#: Fine-tune candidates: name -> FinetuneSettings fields (the statistic is chosen separately).
FINETUNE_CANDIDATES: dict[str, dict[str, Any]] = {
    "paper-sgd-lr0.01-4x64": {"optimiser": "sgd", "learning_rate": 0.01, "steps": 4, "batch_size": 64},
    "sgd-lr0.001-10x64": {"optimiser": "sgd", "learning_rate": 0.001, "steps": 10, "batch_size": 64},
    "sgd-lr0.003-30x128": {"optimiser": "sgd", "learning_rate": 0.003, "steps": 30, "batch_size": 128},
    "adam-lr1e-4-4x64": {"optimiser": "adam", "learning_rate": 1e-4, "steps": 4, "batch_size": 64},
    "adam-lr1e-3-10x64": {"optimiser": "adam", "learning_rate": 1e-3, "steps": 10, "batch_size": 64},
}


# -- statistics -------------------------------------------------------------------------------


def roc_auc(honest: np.ndarray, vicious: np.ndarray) -> float:
    """P(score of a vicious model > score of an honest one), ties count 1/2 (Mann-Whitney)."""
    honest, vicious = np.asarray(honest, float), np.asarray(vicious, float)
    greater = (vicious[:, None] > honest[None, :]).mean()
    ties = (vicious[:, None] == honest[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(honest: np.ndarray, vicious: np.ndarray, fpr: float = 0.05) -> tuple[float, float]:
    """(TPR, threshold) for the lowest threshold whose false-positive rate stays <= ``fpr``.

    Flags scores strictly above the threshold; with 12 honest models 5% allows no false positive.
    """
    ordered = np.sort(np.asarray(honest, float))[::-1]
    allowed = int(math.floor(fpr * len(ordered) + 1e-9))
    threshold = ordered[allowed] if allowed < len(ordered) else -math.inf
    return float(np.mean(np.asarray(vicious, float) > threshold)), float(threshold)


def fit_threshold(honest: np.ndarray, vicious: np.ndarray) -> dict[str, float]:
    """Threshold on an oriented score (higher = vicious) and a scale for the likelihood.

    The operating point is "no honest model of the zoo flagged": the threshold sits
    midway between the highest honest score and the lowest vicious score above it (or
    one honest spread above the highest honest score when no vicious score is above).
    A false positive refuses an honest provider's model, so the vet errs that way.
    Scale: the honest scores' standard deviation (floored), so the likelihood is 0.5 at
    the threshold and falls off over about one honest spread.
    """
    honest, vicious = np.asarray(honest, float), np.asarray(vicious, float)
    finite_honest = honest[np.isfinite(honest)]
    spread = float(np.std(finite_honest)) if len(finite_honest) > 1 else 0.0
    top = float(np.max(honest))
    above = vicious[vicious > top]
    if not np.isfinite(top):
        threshold = top
    elif len(above) and np.isfinite(np.min(above)):
        threshold = (top + float(np.min(above))) / 2
    else:
        threshold = top + max(spread, 1e-6)
    scale = max(spread, 1e-3 * max(1.0, abs(threshold)), 1e-6)
    return {"threshold": float(threshold), "scale": scale}


def logistic_fit(features: np.ndarray, labels: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (weights, bias) on margins; scipy only."""
    from scipy.optimize import minimize

    features = np.clip(np.asarray(features, float), -20.0, 20.0)

    def loss(params: np.ndarray) -> float:
        z = features @ params[:-1] + params[-1]
        return float(
            np.sum(np.logaddexp(0.0, -np.where(labels > 0, 1.0, -1.0) * z)) + 0.5 * l2 * params[:-1] @ params[:-1]
        )

    result = minimize(loss, np.zeros(features.shape[1] + 1), method="L-BFGS-B")
    return result.x[:-1], float(result.x[-1])


# -- measuring one model ------------------------------------------------------------------------


def load_probe_set() -> Any:
    """The vet's probe set: the last 3000 Fashion-MNIST test images (never trained on)."""
    from edgeguard.data import load_fashion_mnist

    data = load_fashion_mnist("test")
    return data.subset(slice(*PROBE_SLICE))


def measure_candidates(classifier: Path, probe: Any, seed: int = 0) -> dict[str, Any]:
    """Every candidate statistic of both tests for one model (the same splits as ``vet``)."""
    import torch

    from edgeguard.model_info import ModelInfo, load_onnx
    from edgeguard.onnx_torch import to_torch
    from edgeguard.vetting._probe import load_probe
    from edgeguard.vetting.api import _run_onnxruntime
    from edgeguard.vetting.finetune import FinetuneSettings, finetune_test
    from edgeguard.vetting.leakage import LeakageSettings, leakage_audit

    model = load_onnx(classifier)
    info = ModelInfo.from_model(model)
    data = load_probe(probe, info, seed=seed)
    outputs = _run_onnxruntime(model, info, data.inputs)
    record: dict[str, Any] = {
        "accuracy": float((outputs.argmax(1) == data.labels).mean()),
        "leakage": {},
        "finetune": {},
    }
    for name, fields in LEAKAGE_CANDIDATES.items():
        started = time.perf_counter()
        result = leakage_audit(
            outputs,
            data.images,
            output_kind=info.output_kind,
            task_type=info.task_type,
            settings=LeakageSettings(**fields),
            seed=seed,
            measures=False,
        )
        record["leakage"][name] = {
            "score": result["score"],
            "mean_entropy": result["mean_entropy"],
            "psnr_decoder_db": result["psnr_decoder_db"],
            "psnr_label_only_db": result["psnr_label_only_db"],
            "seconds": time.perf_counter() - started,
        }
    module = to_torch(model)
    for name, fields in FINETUNE_CANDIDATES.items():
        started = time.perf_counter()
        torch.manual_seed(seed)
        result = finetune_test(
            module,
            data.inputs,
            data.labels,
            output_kind=info.output_kind,
            task_type=info.task_type,
            settings=FinetuneSettings(**fields),
            seed=seed,
        )
        result["seconds"] = time.perf_counter() - started
        record["finetune"][name] = result
    return record


# -- choosing and fitting -------------------------------------------------------------------------


def oriented(score: float, higher_is_vicious: bool) -> float:
    return float(score) if higher_is_vicious else -float(score)


def candidate_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AUC and TPR@5%FPR of every candidate (test, setting, statistic) over ``rows``."""
    from edgeguard.vetting.finetune import STATISTICS

    labels = np.array([row["vicious"] for row in rows])
    table = []

    def add(test: str, setting: str, statistic: str, higher: bool, scores: list[float], seconds: list[float]) -> None:
        values = np.array([oriented(s, higher) for s in scores])
        tpr, _ = tpr_at_fpr(values[~labels], values[labels])
        table.append(
            {
                "test": test,
                "setting": setting,
                "statistic": statistic,
                "higher_is_vicious": higher,
                "auc": roc_auc(values[~labels], values[labels]),
                "tpr_at_5fpr": tpr,
                "seconds": float(np.median(seconds)),
                "honest_range": [float(np.min(np.array(scores)[~labels])), float(np.max(np.array(scores)[~labels]))],
                "vicious_range": [float(np.min(np.array(scores)[labels])), float(np.max(np.array(scores)[labels]))],
            }
        )

    for setting in LEAKAGE_CANDIDATES:
        seconds = [row["candidates"]["leakage"][setting]["seconds"] for row in rows]
        add("leakage", setting, "psnr_gain_db", True, list(leakage_scores(rows, setting)), seconds)
        slope = entropy_slope([row for row in rows if not row["vicious"]], setting)
        add("leakage", setting, "entropy_adjusted_gain_db", True, list(leakage_scores(rows, setting, slope)), seconds)
        table[-1]["entropy_slope"] = slope
    for setting in FINETUNE_CANDIDATES:
        for statistic, higher in STATISTICS.items():
            add(
                "finetune",
                setting,
                statistic,
                higher,
                [row["candidates"]["finetune"][setting][statistic] for row in rows],
                [row["candidates"]["finetune"][setting]["seconds"] for row in rows],
            )
    return table


def leakage_scores(rows: list[dict[str, Any]], setting: str, slope: float | None = None) -> np.ndarray:
    """PSNR gains of ``setting``; minus ``slope`` x mean output entropy when a slope is given."""
    gains = np.array([row["candidates"]["leakage"][setting]["score"] for row in rows], float)
    if slope is None:
        return gains
    return gains - slope * np.array([row["candidates"]["leakage"][setting]["mean_entropy"] for row in rows], float)


def entropy_slope(honest_rows: list[dict[str, Any]], setting: str) -> float:
    """Least-squares slope of the honest models' PSNR gain on their mean output entropy."""
    gains = np.array([row["candidates"]["leakage"][setting]["score"] for row in honest_rows], float)
    entropy = np.array([row["candidates"]["leakage"][setting]["mean_entropy"] for row in honest_rows], float)
    if len(gains) < 2 or np.ptp(entropy) == 0:
        return 0.0
    return float(np.polyfit(entropy, gains, 1)[0])


def choose(table: list[dict[str, Any]], test: str) -> dict[str, Any]:
    """The best candidate of ``test``: highest AUC, then TPR@5%FPR, then the fastest."""
    entries = [entry for entry in table if entry["test"] == test]
    return max(entries, key=lambda e: (round(e["auc"], 6), round(e["tpr_at_5fpr"], 6), -e["seconds"]))


def candidate_scores(rows: list[dict[str, Any]], pick: dict[str, Any]) -> np.ndarray:
    if pick["test"] == "leakage":
        return leakage_scores(rows, pick["setting"], pick.get("entropy_slope"))
    return np.array([row["candidates"]["finetune"][pick["setting"]][pick["statistic"]] for row in rows], float)


def fixed_rule(
    rows: list[dict[str, Any]],
    leakage_pick: dict[str, Any],
    use_finetune: bool,
    table: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Thresholds and logistic combination on ``rows`` for a given leakage candidate.

    The fine-tune test always gets its own threshold (best fine-tune candidate on ``rows``),
    so it can be reported; it enters the combination only when ``use_finetune``.
    """
    table = table or candidate_table(rows)
    labels = np.array([row["vicious"] for row in rows])
    leakage_pick = next(
        e
        for e in table
        if e["test"] == "leakage"
        and (e["setting"], e["statistic"]) == (leakage_pick["setting"], leakage_pick["statistic"])
    )  # re-read: the entropy slope is refitted on ``rows``
    rule: dict[str, Any] = {"tests": {}, "use_finetune": use_finetune}
    margins = []
    for test, pick in (("leakage", leakage_pick), ("finetune", choose(table, "finetune"))):
        scores = candidate_scores(rows, pick)
        values = np.array([oriented(s, pick["higher_is_vicious"]) for s in scores])
        fitted = fit_threshold(values[~labels], values[labels])
        threshold = fitted["threshold"] if pick["higher_is_vicious"] else -fitted["threshold"]
        rule["tests"][test] = {"pick": pick, "threshold": threshold, "scale": fitted["scale"]}
        margins.append((values - fitted["threshold"]) / fitted["scale"])
    if use_finetune:
        weights, bias = logistic_fit(np.stack(margins, axis=1), labels.astype(float))
        rule["combined"] = {"weights": {"leakage": float(weights[0]), "finetune": float(weights[1])}, "bias": bias}
    else:  # one test: its own likelihood, so the verdict flips exactly at its threshold
        rule["combined"] = {"weights": {"leakage": 1.0, "finetune": 0.0}, "bias": 0.0}
    return rule


def cross_validated(rows: list[dict[str, Any]], make_rule: Any) -> tuple[float, float]:
    """(AUC, accuracy) of ``make_rule`` refitted without each seed and judged on it."""
    seeds = sorted({row["spec"]["seed"] for row in rows})
    labels = np.array([row["vicious"] for row in rows])
    held = np.zeros(len(rows))
    for seed in seeds:
        train = [row for row in rows if row["spec"]["seed"] != seed]
        test = [i for i, row in enumerate(rows) if row["spec"]["seed"] == seed]
        held[test] = combined_likelihood([rows[i] for i in test], make_rule(train))
    return roc_auc(held[~labels], held[labels]), float(np.mean((held >= 0.5) == labels))


def fit_rule(rows: list[dict[str, Any]], table: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Choose the leakage candidate and whether the fine-tune test enters the verdict, then fit on ``rows``.

    The choice is made by leave-one-seed-out cross-validation *within* ``rows``, not by
    in-sample AUC: with 20 models and dozens of candidates, in-sample selection overfits.
    Candidates within ``AUC_TIE`` of the best cross-validated AUC (about two of ~100
    honest/vicious pairs) count as tied; among them: higher cross-validated accuracy, then
    the stronger decoder (krr > knn > ridge: the audit should approximate what an
    attacker's decoder can read, and a linear decoder is the easiest to evade), then AUC.
    """
    table = table or candidate_table(rows)
    results = []
    for entry in (e for e in table if e["test"] == "leakage"):
        for use_finetune in (False, True):
            auc, accuracy = cross_validated(rows, lambda train, e=entry, u=use_finetune: fixed_rule(train, e, u))
            results.append((auc, accuracy, entry, use_finetune))
    best_auc = max(result[0] for result in results)
    eligible = [result for result in results if result[0] >= best_auc - AUC_TIE]
    auc, accuracy, entry, use_finetune = max(
        eligible,
        key=lambda r: (
            round(r[1], 6),
            DECODER_STRENGTH[LEAKAGE_CANDIDATES[r[2]["setting"]]["decoder"]],
            r[0],
            r[2]["auc"],
            not r[3],
        ),
    )
    rule = fixed_rule(rows, entry, use_finetune, table)
    same = {r[3]: (r[0], r[1]) for r in results if r[2] is entry}
    rule["selection"] = {
        "cv_auc": auc,
        "cv_accuracy": accuracy,
        "cv_leakage_only": same[False],
        "cv_with_finetune": same[True],
    }
    return rule


def combined_likelihood(rows: list[dict[str, Any]], rule: dict[str, Any]) -> np.ndarray:
    total = np.full(len(rows), rule["combined"]["bias"])
    for test, entry in rule["tests"].items():
        pick = entry["pick"]
        values = np.array([oriented(s, pick["higher_is_vicious"]) for s in candidate_scores(rows, pick)])
        threshold = oriented(entry["threshold"], pick["higher_is_vicious"])
        total = total + rule["combined"]["weights"][test] * np.clip((values - threshold) / entry["scale"], -50, 50)
    return 1.0 / (1.0 + np.exp(-np.clip(total, -50, 50)))


def leave_one_seed_out(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Refit everything (candidate choice, thresholds, combination) on two seeds; judge the third."""
    held_likelihood = np.zeros(len(rows))
    folds = []
    for seed in SEEDS:
        train = [row for row in rows if row["spec"]["seed"] != seed]
        test_index = [i for i, row in enumerate(rows) if row["spec"]["seed"] == seed]
        rule = fit_rule(train)
        likelihoods = combined_likelihood([rows[i] for i in test_index], rule)
        held_likelihood[test_index] = likelihoods
        labels = np.array([rows[i]["vicious"] for i in test_index])
        folds.append(
            {
                "held_out_seed": seed,
                "leakage_pick": rule["tests"]["leakage"]["pick"]["setting"],
                "leakage_statistic": rule["tests"]["leakage"]["pick"]["statistic"],
                "finetune_used": rule["use_finetune"],
                "accuracy": float(np.mean((likelihoods >= 0.5) == labels)),
                "false_positives": int(np.sum((likelihoods >= 0.5) & ~labels)),
                "false_negatives": int(np.sum((likelihoods < 0.5) & labels)),
            }
        )
    labels = np.array([row["vicious"] for row in rows])
    flagged = held_likelihood >= 0.5
    tpr, _ = tpr_at_fpr(held_likelihood[~labels], held_likelihood[labels])
    return {
        "folds": folds,
        "auc": roc_auc(held_likelihood[~labels], held_likelihood[labels]),
        "tpr_at_5fpr": tpr,
        "accuracy": float(np.mean(flagged == labels)),
        "tpr_at_0.5": float(np.mean(flagged[labels])),
        "fpr_at_0.5": float(np.mean(flagged[~labels])),
        "likelihoods": held_likelihood.tolist(),
    }


# -- thresholds file ------------------------------------------------------------------------------


def thresholds_document(rule: dict[str, Any], rows: list[dict[str, Any]], loso: dict[str, Any], command: str) -> dict:
    """The content of edgeguard/vetting/thresholds.json for ``rule`` (fitted on all of ``rows``)."""
    from edgeguard.vetting.finetune import FinetuneSettings
    from edgeguard.vetting.leakage import LeakageSettings

    leakage_pick = rule["tests"]["leakage"]["pick"]
    finetune_pick = rule["tests"]["finetune"]["pick"]
    leakage_settings = LeakageSettings(**LEAKAGE_CANDIDATES[leakage_pick["setting"]])
    finetune_settings = FinetuneSettings(
        **FINETUNE_CANDIDATES[finetune_pick["setting"]], statistic=finetune_pick["statistic"]
    )
    weights = rule["combined"]["weights"]
    strongest = max(abs(w) for w in weights.values())
    honest = sum(not row["vicious"] for row in rows)
    return {
        "provisional": False,
        "source": f"benchmarks/detection.py ({command}); numbers in benchmarks/results/detection.json",
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "zoo": {
            "models": len(rows),
            "honest": honest,
            "vicious": len(rows) - honest,
            "seeds": list(SEEDS),
            "data": f"Fashion-MNIST, first {TRAIN_LIMIT} training images; probe = test images {PROBE_SLICE[0]}-{PROBE_SLICE[1] - 1}",
        },
        "caveats": [
            f"fitted on the same {len(rows)}-model zoo the in-sample numbers come from; leave-one-seed-out "
            f"(refit on two seeds, judged on the third): AUC {loso['auc']:.3f}, accuracy {loso['accuracy']:.3f}",
            "calibrated on 28x28 grayscale Fashion-MNIST classifiers (cnn, mlp) with a 3000-image probe set; "
            "other tasks, architectures or probe sizes need their own calibration",
        ],
        "tests": {
            "leakage": {
                "statistic": leakage_pick["statistic"],
                **({"entropy_slope": leakage_pick["entropy_slope"]} if "entropy_slope" in leakage_pick else {}),
                "threshold": rule["tests"]["leakage"]["threshold"],
                "scale": rule["tests"]["leakage"]["scale"],
                "higher_is_vicious": True,
                "candidate": leakage_pick["setting"],
                "auc": leakage_pick["auc"],
                "tpr_at_5fpr": leakage_pick["tpr_at_5fpr"],
                "settings": {name: getattr(leakage_settings, name) for name in leakage_settings.__dataclass_fields__},
            },
            "finetune": {
                "statistic": finetune_pick["statistic"],
                "threshold": rule["tests"]["finetune"]["threshold"],
                "scale": rule["tests"]["finetune"]["scale"],
                "higher_is_vicious": finetune_pick["higher_is_vicious"],
                "candidate": finetune_pick["setting"],
                "auc": finetune_pick["auc"],
                "tpr_at_5fpr": finetune_pick["tpr_at_5fpr"],
                "settings": {name: getattr(finetune_settings, name) for name in finetune_settings.__dataclass_fields__},
            },
        },
        "combined": {
            "method": "sigmoid(bias + sum of weight x margin), margin = (score - threshold) / scale; with both tests "
            "the weights are an L2-regularised logistic regression on the zoo, with one test weight 1 and bias 0; "
            "the leakage candidate and the use of the fine-tune test are chosen by leave-one-seed-out "
            "cross-validation",
            "cv_auc": rule["selection"]["cv_auc"],
            "cv_accuracy": rule["selection"]["cv_accuracy"],
            "weights": weights,
            "bias": rule["combined"]["bias"],
            "likelihood_threshold": 0.5,
            "required": [name for name, w in weights.items() if abs(w) >= 0.1 * strongest],
        },
    }


# -- report ---------------------------------------------------------------------------------------


def _group(row: dict[str, Any]) -> str:
    spec = row["spec"]
    if spec["objective"] == "honest":
        return "honest, 1 epoch" if spec["epochs"] == 1 else f"honest, {spec['epochs']} epochs"
    return "vicious + finish-CE" if spec.get("finish_ce_epochs") else "vicious (plain)"


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(result: dict[str, Any]) -> str:
    rows, final, loso = result["rows"], result["final"], result["leave_one_seed_out"]
    doc = result["thresholds"]
    selection = result["selection"]
    finetune_entries = [e for e in result["candidates"] if e["test"] == "finetune"]
    paper = next(e for e in finetune_entries if e["setting"].startswith("paper") and e["statistic"] == "cosine")
    best_finetune = max(finetune_entries, key=lambda e: (e["auc"], e["tpr_at_5fpr"]))
    leakage_entries = [e for e in result["candidates"] if e["test"] == "leakage"]
    best_raw = max((e for e in leakage_entries if e["statistic"] == "psnr_gain_db"), key=lambda e: e["auc"])
    best_adjusted = max((e for e in leakage_entries if e["statistic"] != "psnr_gain_db"), key=lambda e: e["auc"])
    finish_gain = {
        output: float(
            np.mean(
                [
                    row["report"]["psnr"] - row["report"]["baseline"]["psnr"]
                    for row in rows
                    if row["spec"].get("finish_ce_epochs") and row["spec"]["output"] == output
                ]
                or [float("nan")]
            )
        )
        for output in OUTPUTS
    }
    machine = result["machine"]
    lines = [
        "# Vicious-model detection (`edgeguard vet`) on a Fashion-MNIST model zoo",
        "",
        f"Generated {result['generated']} by `{result['command']}` in {result['wall_time_s']:.0f} s "
        f"({result['built_now']} of {len(rows)} models trained in this run, the rest from the zoo cache; "
        f"zoo training time {result['zoo_train_s'] / 60:.1f} min in total, as reported by the converters).",
        "",
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, torch "
        f"{machine['torch']}, {result['settings']['threads']} torch threads; the CPU was shared with other jobs "
        f"(1-minute load average {machine['load_average_start']:.1f} at the start, {machine['load_average_end']:.1f} "
        "at the end), so timings are indicative.",
        "",
        f"Zoo: {len(rows)} models, seeds {list(SEEDS)}, {TRAIN_LIMIT} training images (10% of them for "
        f"validation), logits and softmax settings, architectures cnn and mlp (alternating by seed and setting). Per "
        f"seed and setting: honest 1 epoch, honest {CONVERGED_EPOCHS} epochs (best validation epoch), vicious "
        f"{VICIOUS_EPOCHS} joint epochs + {FINISH_CE_EPOCHS} CE-only epochs + refitted decoder (an attacker who "
        f"knows the fine-tune test); for seed 0 also a plain vicious model ({VICIOUS_EPOCHS} epochs, the paper's "
        f"attacker) per setting; b2 in {list(BETA2_VALUES)}. Probe set: "
        f"Fashion-MNIST test images {PROBE_SLICE[0]}-{PROBE_SLICE[1] - 1} (3000, never trained on).",
        "",
        "**Circularity.** The candidate choice, thresholds and combination are fitted on this same zoo, so the "
        "in-sample numbers are optimistic. The leave-one-seed-out rows refit everything on two seeds and judge the "
        "third seed's models.",
        "",
        "## Result",
        "",
        "| detector | setting | ROC AUC | TPR @ 5% FPR | accuracy at its threshold | vet s/model (median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("leakage", "finetune", "combined"):
        entry = final[name]
        lines.append(
            f"| {name} | {entry['setting']} | {_f(entry['auc'])} | {_f(entry['tpr_at_5fpr'])} | {_f(entry['accuracy'])} "
            f"| {_f(entry['seconds_median'], 1)} / {_f(entry['seconds_max'], 1)} |"
        )
    lines.append(
        f"| combined, leave-one-seed-out | refit per fold | {_f(loso['auc'])} | {_f(loso['tpr_at_5fpr'])} "
        f"| {_f(loso['accuracy'])} | – |"
    )
    met_auc = final["combined"]["auc"] >= TARGET_AUC
    met_time = final["combined"]["seconds_max"] <= TARGET_SECONDS
    lines += [
        "",
        f"Targets: combined AUC >= {TARGET_AUC} ({'met' if met_auc else 'NOT met'}: {final['combined']['auc']:.3f} "
        f"in-sample, {loso['auc']:.3f} leave-one-seed-out); <= {TARGET_SECONDS:.0f} s per model "
        f"({'met' if met_time else 'NOT met'}: max {final['combined']['seconds_max']:.1f} s for the whole vet).",
        "",
        f"Verdicts (full `edgeguard.vetting` with the fitted defaults): {final['verdicts']}.",
        "",
        f"Vicious models that actually leak more than honest ones: {final['effective']['effective_vicious_models']} of "
        f"{final['effective']['vicious_models']} vicious models have a server-decoder gain over the label-only baseline "
        f"above the best honest model's post-hoc decoder ({final['effective']['honest_server_gain_max_db']:.2f} dB). "
        f"Against those: combined AUC {_f(final['effective']['auc'])}, TPR @ 5% FPR "
        f"{_f(final['effective']['tpr_at_5fpr'])}, flagged {final['effective']['flagged']} of "
        f"{final['effective']['effective_vicious_models']}.",
        "",
        "Leave-one-seed-out folds: "
        + "; ".join(
            f"seed {f['held_out_seed']}: accuracy {f['accuracy']:.3f} ({f['false_positives']} FP, "
            f"{f['false_negatives']} FN; picks {f['leakage_pick']} {f['leakage_statistic']}, fine-tune "
            f"{'in' if f['finetune_used'] else 'not in'} the verdict)"
            for f in loso["folds"]
        )
        + ".",
        "",
        "## Conclusions",
        "",
        f"- The paper's fine-tune test (SGD lr 0.01, 4 steps of 64, raw cosine) has ROC AUC "
        f"{_f(paper['auc'])} on this zoo (TPR @ 5% FPR {_f(paper['tpr_at_5fpr'])}, 0.5 = chance) with honest "
        "models trained for 1 epoch or to convergence and vicious ones finished with CE-only epochs. "
        f"The best of its {len(finetune_entries)} variants (settings x normalisations) reaches "
        f"AUC {_f(best_finetune['auc'])} in-sample (`{best_finetune['setting']}` / `{best_finetune['statistic']}`, "
        f"TPR @ 5% FPR {_f(best_finetune['tpr_at_5fpr'])}); adding the chosen fine-tune variant to the leakage "
        f"audit changes the cross-validated AUC from {selection['cv_leakage_only'][0]:.3f} to "
        f"{selection['cv_with_finetune'][0]:.3f}, so the verdict "
        + (
            "uses it."
            if doc["combined"]["weights"]["finetune"] != 0
            else "gives it weight 0 (it is still run and reported)."
        ),
        f"- The leakage audit's raw PSNR gain is confounded by confidence: less confident honest models reveal more. "
        f"Subtracting slope x mean output entropy changes the best leakage AUC from {_f(best_raw['auc'])} "
        f"(`{best_raw['setting']}`) to {_f(best_adjusted['auc'])} (`{best_adjusted['setting']}`).",
        f"- {final['effective']['effective_vicious_models']} of {final['effective']['vicious_models']} vicious models "
        f"leak more than every honest model (server-decoder gain above {final['effective']['honest_server_gain_max_db']:.2f} "
        f"dB); the vet flags {final['effective']['flagged']} of them. Mean server-decoder gain of the finish-CE "
        f"vicious models: {finish_gain['logits']:.2f} dB (logits setting) and {finish_gain['softmax']:.2f} dB "
        "(softmax setting), against a label-only baseline.",
        "",
        "## Fitted defaults (written to `edgeguard/vetting/thresholds.json`)",
        "",
        f"- leakage audit: decoder `{doc['tests']['leakage']['candidate']}`, statistic "
        f"`{doc['tests']['leakage']['statistic']}`"
        + (
            f" (PSNR gain minus {doc['tests']['leakage']['entropy_slope']:.3f} x mean output entropy)"
            if "entropy_slope" in doc["tests"]["leakage"]
            else " (PSNR gain over the label-only baseline)"
        )
        + f", flags above {doc['tests']['leakage']['threshold']:.3f} dB (scale {doc['tests']['leakage']['scale']:.3f}).",
        f"- fine-tune test: `{doc['tests']['finetune']['candidate']}`, statistic `{doc['tests']['finetune']['statistic']}`, "
        f"flags {'above' if doc['tests']['finetune']['higher_is_vicious'] else 'below'} "
        f"{doc['tests']['finetune']['threshold']:.5g} (scale {doc['tests']['finetune']['scale']:.3g})"
        + (
            "; reported, but not used in the verdict (cross-validation preferred the leakage audit alone)."
            if doc["combined"]["weights"]["finetune"] == 0
            else "."
        ),
        f"- combined: likelihood = sigmoid({doc['combined']['bias']:.3f} + "
        + " + ".join(f"{w:.3f} x margin_{n}" for n, w in doc["combined"]["weights"].items())
        + f"), vicious at >= 0.5; required tests: {doc['combined']['required']}. Chosen among "
        f"{sum(e['test'] == 'leakage' for e in result['candidates'])} leakage candidates x (with / without the "
        f"fine-tune test) by leave-one-seed-out cross-validation on the zoo (AUC {doc['combined']['cv_auc']:.3f}, "
        f"accuracy {doc['combined']['cv_accuracy']:.3f}); cross-validated AUCs within {AUC_TIE} count as tied and "
        "ties go to the higher cross-validated accuracy, then to the stronger decoder (krr > knn > ridge; this "
        "tie-break was added after a first run picked the linear ridge decoder by 0.01 AUC, because a linear audit "
        "is the easiest for an attacker to evade). The leave-one-seed-out row above repeats that whole selection "
        "inside each fold.",
        "",
        "## Undertrained honest vs vicious: the fine-tune test",
        "",
        "Mean (min-max) of each statistic per model group; the paper's setting is SGD lr 0.01, 4 steps of 64.",
        "",
    ]
    groups = sorted({_group(row) for row in rows})
    header = "| setting | statistic | AUC | " + " | ".join(groups) + " |"
    lines += [header, "|---|---|---|" + "---|" * len(groups)]
    for entry in result["candidates"]:
        if entry["test"] != "finetune" or entry["statistic"] not in (
            "cosine",
            "cosine_centred",
            "shift_per_gradient_norm",
            "loss_decrease_per_shift",
            "class_coherence",
            "non_target_fraction",
        ):
            continue
        cells = []
        for group in groups:
            values = np.array(
                [
                    row["candidates"]["finetune"][entry["setting"]][entry["statistic"]]
                    for row in rows
                    if _group(row) == group
                ]
            )
            cells.append(
                f"{_f(float(np.mean(values)), 4)} ({_f(float(np.min(values)), 4)}-{_f(float(np.max(values)), 4)})"
            )
        lines.append(f"| {entry['setting']} | {entry['statistic']} | {_f(entry['auc'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Leakage audit candidates",
        "",
        "| decoder | statistic | AUC | TPR @ 5% FPR | " + " | ".join(groups) + " | median s |",
        "|---|---|---|---|" + "---|" * len(groups) + "---|",
    ]
    for entry in result["candidates"]:
        if entry["test"] != "leakage":
            continue
        cells = []
        for group in groups:
            members = [row for row in rows if _group(row) == group]
            values = leakage_scores(members, entry["setting"], entry.get("entropy_slope"))
            cells.append(f"{np.mean(values):.2f} ({np.min(values):.2f}-{np.max(values):.2f})")
        lines.append(
            f"| {entry['setting']} | {entry['statistic']} | {_f(entry['auc'])} | {_f(entry['tpr_at_5fpr'])} | "
            + " | ".join(cells)
            + f" | {entry['seconds']:.2f} |"
        )
    lines += [
        "",
        "Scores are PSNR gains in dB of the client-side decoder over the label-only baseline (mean probe image of "
        "the predicted class), 2000 probe images to fit, 1000 to score; `entropy_adjusted_gain_db` subtracts "
        "slope x mean output entropy (nats), the slope fitted on the honest models (less confident honest models "
        "reveal more through their soft outputs).",
        "",
        "## Every model",
        "",
        "| model | acc % | server decoder PSNR / label-only dB (gain) | leakage score | fine-tune score | paper cosine "
        "| likelihood | verdict | vet s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        vet = row["vet"]
        lines.append(
            f"| {row['name']} | {100 * row['report']['accuracy']:.1f} | {row['report']['psnr']:.2f} / "
            f"{row['report']['baseline']['psnr']:.2f} ({row['report']['psnr'] - row['report']['baseline']['psnr']:+.2f}) "
            f"| {_f(vet['leakage_score'])} | {_f(vet['finetune_score'], 5)} "
            f"| {_f(row['candidates']['finetune']['paper-sgd-lr0.01-4x64']['cosine'], 5)} | {_f(vet['likelihood'])} "
            f"| {vet['verdict']} | {vet['seconds']:.1f} |"
        )
    lines += [
        "",
        "Server decoder PSNR: the converters' decoder (joint, refitted after finish-CE, or post-hoc for honest "
        "models) on the first 2000 test images, next to the label-only baseline, from each model's report.json.",
        "",
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def _final_metrics(rows: list[dict[str, Any]], rule: dict[str, Any]) -> dict[str, Any]:
    labels = np.array([row["vicious"] for row in rows])
    final: dict[str, Any] = {}
    for test in ("leakage", "finetune"):
        pick = rule["tests"][test]["pick"]
        scores = np.array([oriented(row["vet"][f"{test}_score"], pick["higher_is_vicious"]) for row in rows])
        threshold = oriented(rule["tests"][test]["threshold"], pick["higher_is_vicious"])
        seconds = np.array([row["vet"][f"{test}_seconds"] for row in rows])
        final[test] = {
            "setting": f"{pick['setting']} / {pick['statistic']}",
            "auc": roc_auc(scores[~labels], scores[labels]),
            "tpr_at_5fpr": tpr_at_fpr(scores[~labels], scores[labels])[0],
            "accuracy": float(np.mean((scores > threshold) == labels)),
            "seconds_median": float(np.median(seconds)),
            "seconds_max": float(np.max(seconds)),
        }
    likelihood = np.array([row["vet"]["likelihood"] for row in rows])
    seconds = np.array([row["vet"]["seconds"] for row in rows])
    verdicts = [row["vet"]["verdict"] for row in rows]
    final["combined"] = {
        "setting": "thresholds.json combination, vicious at likelihood >= 0.5",
        "auc": roc_auc(likelihood[~labels], likelihood[labels]),
        "tpr_at_5fpr": tpr_at_fpr(likelihood[~labels], likelihood[labels])[0],
        "accuracy": float(np.mean((np.array(verdicts) == "vicious") == labels)),
        "seconds_median": float(np.median(seconds)),
        "seconds_max": float(np.max(seconds)),
    }
    server_gain = np.array([row["report"]["psnr"] - row["report"]["baseline"]["psnr"] for row in rows])
    honest_ceiling = float(np.max(server_gain[~labels]))
    effective = labels & (server_gain > honest_ceiling)
    final["effective"] = {
        "honest_server_gain_max_db": honest_ceiling,
        "vicious_models": int(labels.sum()),
        "effective_vicious_models": int(effective.sum()),
        "auc": roc_auc(likelihood[~labels], likelihood[effective]) if effective.any() else None,
        "tpr_at_5fpr": tpr_at_fpr(likelihood[~labels], likelihood[effective])[0] if effective.any() else None,
        "flagged": int(np.sum(np.array(verdicts)[effective] == "vicious")),
    }
    pairs = list(zip(verdicts, labels))

    def count(verdict: str, vicious: bool) -> int:
        return sum(v == verdict and bool(is_vicious) == vicious for v, is_vicious in pairs)

    final["verdicts"] = (
        f"honest models: {count('honest', False)} honest, {count('vicious', False)} vicious, "
        f"{count('inconclusive', False)} inconclusive; vicious models: {count('vicious', True)} vicious, "
        f"{count('honest', True)} honest, {count('inconclusive', True)} inconclusive"
    )
    return final


@click.command()
@click.option(
    "--threads", type=click.IntRange(min=1, max=2), default=2, show_default=True, help="torch threads (at most 2)."
)
@click.option("--zoo-root", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_ROOT, show_default=True)
@click.option("--build-only", is_flag=True, help="Train (or find cached) the zoo and stop.")
@click.option("--write-thresholds/--no-write-thresholds", default=True, show_default=True,
              help="Rewrite edgeguard/vetting/thresholds.json with the fitted values.")  # fmt: skip
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS / "detection.md",
    show_default=True,
)
def main(threads: int, zoo_root: Path, build_only: bool, write_thresholds: bool, out_path: Path) -> None:
    """Build the zoo, measure every candidate, fit the vet's defaults and thresholds, report."""
    import torch

    from converters import load_report
    from edgeguard.vetting.api import vet

    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    torch.set_num_threads(threads)
    command = "python benchmarks/detection.py " + " ".join(sys.argv[1:])
    specs = zoo_specs(threads)
    built = build_zoo(specs, zoo_root)
    if build_only:
        print(f"zoo ready: {len(built)} models in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return
    probe = load_probe_set()
    rows = []
    for number, (spec, folder, _, new) in enumerate(built, 1):
        print(f"[{number}/{len(built)}] measuring {describe(spec)}", file=sys.stderr, flush=True)
        report = load_report(folder)
        rows.append(
            {
                "name": describe(spec),
                "spec": {k: v for k, v in spec.items() if k != "threads"},
                "folder": str(folder),
                "vicious": spec["objective"] == "vicious",
                "built_now": new,
                "report": {
                    "accuracy": report.accuracy,
                    "psnr": report.psnr,
                    "ssim": report.ssim,
                    "baseline": report.baseline,
                    "wall_time_s": report.wall_time_s,
                },
                "candidates": measure_candidates(folder / "classifier.onnx", probe),
            }
        )
    table = candidate_table(rows)
    rule = fit_rule(rows, table)
    loso = leave_one_seed_out(rows)
    document = thresholds_document(rule, rows, loso, command)
    if write_thresholds:
        THRESHOLDS_PATH.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {THRESHOLDS_PATH}", file=sys.stderr)
    # the full vet with the fitted defaults, as a user would run it
    for number, row in enumerate(rows, 1):
        print(f"[{number}/{len(rows)}] vetting {row['name']}", file=sys.stderr, flush=True)
        report = vet(Path(row["folder"]) / "classifier.onnx", probe, thresholds=document)
        row["vet"] = {
            "verdict": report.verdict,
            "likelihood": report.likelihood,
            "seconds": report.seconds,
            "leakage_score": report.tests["leakage"].score,
            "leakage_seconds": report.tests["leakage"].seconds,
            "finetune_score": report.tests["finetune"].score,
            "finetune_seconds": report.tests["finetune"].seconds,
            "findings": [f.code for f in report.findings if f.severity != "info"],
        }
    final = _final_metrics(rows, rule)
    result = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "wall_time_s": time.perf_counter() - started,
        "built_now": sum(row["built_now"] for row in rows),
        "zoo_train_s": sum(row["report"]["wall_time_s"] for row in rows),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg()[0],
        },
        "settings": {"threads": threads, "train_limit": TRAIN_LIMIT, "probe": list(PROBE_SLICE)},
        "final": final,
        "leave_one_seed_out": loso,
        "selection": rule["selection"],
        "thresholds": document,
        "candidates": table,
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    out_path.write_text(render_markdown(result))
    print(f"wrote {out_path} and {out_path.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
