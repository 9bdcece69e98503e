"""The input-reconstruction threat on tabular classifiers, and what the release filters leave.

For each data set that ships with scikit-learn (breast cancer: 30 features, 2 classes;
8x8 digits as 64-vectors, 10 classes) an honest and a vicious MLP are trained
(:mod:`converters.tabular`), exported to ONNX and run by onnxruntime through
``SafeModel``-style releases. Every figure is held out (a 30% test split never trained on)
and names its attacker:

- joint decoder: the vicious model's secret decoder, trained with it (for the honest
  model: the same decoder architecture fitted post hoc on its raw outputs);
- refit decoder: the same architecture re-fitted on the FILTERED training release (the
  attacker who knows the filter);
- label-only: the per-class mean of the standardised features (what the label the user
  shares anyway tells).

Scores: MSE gain over label-only in dB (standardised features; > 0 = the release tells
more than the label) and R^2 per feature. The filters' worst case is the larger gain of
the two attackers.

Run: ``OMP_NUM_THREADS=1 python benchmarks/attack_tabular.py`` (a few minutes on one core);
writes ``benchmarks/results/attack_tabular.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from converters.tabular import TABULAR_SETS, TabularDecoder, _fit_decoder, decoder_scores, export_tabular, train_tabular
from edgeguard import SafeModel
from edgeguard.filters import parse_filter_spec

RESULTS = Path(__file__).resolve().parent / "results"
#: Releases checked on the vicious models (filter specs; "none" is the raw logits).
FILTERS = (
    "none",
    "softmax>round:3",
    "softmax>round:2",
    "softmax>round:1",
    "gaussian:1",
    "softmax>top_k:1",
    "softmax>label_confidence:4",
    "clipped_laplace:c=5,eps=10",
    "argmax",
)


def _release(path: Path, spec: str, x: np.ndarray) -> tuple[np.ndarray | None, float]:
    """What SafeModel releases with ``spec`` on rows ``x`` (as logits for the decoders) and its capacity."""
    if spec == "none":
        model = SafeModel(path, filters=parse_filter_spec("softmax").build(), allow_unsafe_raw_outputs=True)
        return model.predict_unfiltered_unsafe(x).astype(np.float64), float("inf")
    model = SafeModel(path, filters=parse_filter_spec(spec).build())
    released = model.predict(x.astype(np.float32), seed=0)
    if released.ndim == 1:  # labels only
        return None, model.capacity_bits
    kinds = model.pipeline.domains(model.num_classes)
    kind = kinds[-1].kind
    if kind == "probabilities":
        return np.log(np.clip(released.astype(np.float64), 1e-6, None)), model.capacity_bits
    return released.astype(np.float64), model.capacity_bits


def _refit(threat, released_train: np.ndarray, released_test: np.ndarray, epochs: int) -> dict:
    decoder = TabularDecoder(len(threat.class_names), threat.x_train.shape[1])
    z = torch.from_numpy(threat.standardise(threat.x_train))
    _fit_decoder(decoder, torch.from_numpy(released_train.astype(np.float32)), z, epochs, seed=7)
    decoder.eval()
    joint = threat.decoder
    threat.decoder = decoder
    try:
        return decoder_scores(threat, released_test)
    finally:
        threat.decoder = joint


def _summary(scores: dict) -> dict:
    r2 = np.asarray(scores["r2_per_feature"], dtype=float)
    base = np.asarray(scores["r2_per_feature_label_only"], dtype=float)
    return {
        "gain_db": round(scores["gain_db"], 3),
        "mean_r2": round(float(np.nanmean(r2)), 3),
        "mean_r2_label_only": round(float(np.nanmean(base)), 3),
        "features_r2_above_label_only_by_0.1": int(np.sum(r2 - base > 0.1)),
    }


def run(epochs: int, lam: dict[str, float], seed: int) -> dict:
    torch.set_num_threads(1)
    report: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_before": os.getloadavg()},
        "settings": {"epochs": epochs, "lam": lam, "seed": seed, "filters": list(FILTERS), "test_fraction": 0.3},
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        for data_set in TABULAR_SETS:
            entry: dict = {}
            for vicious in (False, True):
                started = time.perf_counter()
                threat = train_tabular(data_set, vicious=vicious, lam=lam[data_set], epochs=epochs, seed=seed)
                path = Path(folder) / f"{threat.name}.onnx"
                path.write_bytes(export_tabular(threat))
                raw_scores = decoder_scores(threat)
                record = {
                    "accuracy": round(threat.accuracy, 4),
                    "raw": _summary(raw_scores),
                    "per_feature": {
                        name: [None if a is None else round(a, 3), None if b is None else round(b, 3)]
                        for name, a, b in zip(
                            threat.feature_names, raw_scores["r2_per_feature"], raw_scores["r2_per_feature_label_only"]
                        )
                    },
                    "train_seconds": round(time.perf_counter() - started, 1),
                }
                if vicious:
                    filters = {}
                    for spec in FILTERS:
                        test_release, bits = _release(path, spec, threat.x_test)
                        if test_release is None:
                            filters[spec] = {"capacity_bits": bits, "worst_gain_db": 0.0, "note": "labels only"}
                            continue
                        train_release, _ = _release(path, spec, threat.x_train)
                        joint = _summary(decoder_scores(threat, test_release))
                        refit = _summary(_refit(threat, train_release, test_release, epochs))
                        worst = max(joint, refit, key=lambda s: s["gain_db"])
                        filters[spec] = {
                            "capacity_bits": None if np.isinf(bits) else round(float(bits), 2),
                            "joint": joint,
                            "refit": refit,
                            "worst_gain_db": worst["gain_db"],
                            "worst_mean_r2": worst["mean_r2"],
                        }
                    record["filters"] = filters
                entry["vicious" if vicious else "honest"] = record
            report["sets"][data_set] = entry
    report["machine"]["load_average_after"] = os.getloadavg()
    return report


def _r2(value: float | None) -> str:
    return "- (constant)" if value is None or value != value else f"{value:.3f}"


def markdown(report: dict) -> str:
    lines = [
        "# The threat on tabular classifiers",
        "",
        "Written by `benchmarks/attack_tabular.py`. Held-out test split (30%); scores on standardised features. "
        "gain = MSE gain over label-only (the per-class mean) in dB; R^2 averaged over features. "
        "Attackers: *joint* = the decoder trained with the vicious model (for the honest model: the same decoder "
        "fitted post hoc on its raw outputs); *refit* = that decoder re-fitted on the filtered training release. "
        "A filter's figure is its worst case over these two attackers only, not a bound: the capacity column is the "
        "only guarantee that holds against every decoder.",
        "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs, load average before "
        f"{[round(v, 2) for v in report['machine']['load_average_before']]}, after "
        f"{[round(v, 2) for v in report['machine']['load_average_after']]} (shared machine). "
        f"Settings: {json.dumps(report['settings'])}.",
        "",
        "## Honest vs vicious (raw outputs, joint/post-hoc decoder)",
        "",
        "| data set | model | accuracy | gain over label-only (dB) | mean R^2 decoder | mean R^2 label-only | features with R^2 > label-only + 0.1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["sets"].items():
        for kind in ("honest", "vicious"):
            r = entry[kind]
            raw = r["raw"]
            lines.append(
                f"| {name} | {kind} | {r['accuracy']:.3f} | {raw['gain_db']:.2f} | {raw['mean_r2']:.3f} | "
                f"{raw['mean_r2_label_only']:.3f} | {raw['features_r2_above_label_only_by_0.1']} |"
            )
    for name, entry in report["sets"].items():
        lines += [
            "",
            f"## {name}: R^2 per feature, decoder vs label-only (raw outputs)",
            "",
            "| feature | honest decoder | honest label-only | vicious decoder | vicious label-only |",
            "|---|---|---|---|---|",
        ]
        honest, vicious = entry["honest"]["per_feature"], entry["vicious"]["per_feature"]
        for feature in honest:
            cells = [_r2(value) for value in (*honest[feature], *vicious[feature])]
            lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Filters on the vicious models: worst case over the two attackers",
        "",
        "| data set | release | capacity (bits/row) | joint gain (dB) | refit gain (dB) | worst gain (dB) | worst mean R^2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["sets"].items():
        for spec, f in entry["vicious"]["filters"].items():
            bits = "unbounded" if f["capacity_bits"] is None else f"{f['capacity_bits']:g}"
            if "joint" not in f:
                lines.append(f"| {name} | `{spec}` | {bits} | - | - | 0 (labels only) | - |")
                continue
            lines.append(
                f"| {name} | `{spec}` | {bits} | {f['joint']['gain_db']:.2f} | {f['refit']['gain_db']:.2f} | "
                f"{f['worst_gain_db']:.2f} | {f['worst_mean_r2']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lam-breast-cancer", type=float, default=10.0)
    parser.add_argument("--lam-digits", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "attack_tabular")
    args = parser.parse_args()
    report = run(args.epochs, {"breast_cancer": args.lam_breast_cancer, "digits": args.lam_digits}, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
