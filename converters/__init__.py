"""Server-side converters: train honest or vicious classifiers and export them to ONNX.

This package plays the provider (and the attacker) for edgeguard's tests, benchmarks
and demo. It depends on edgeguard; edgeguard never imports it.

    from converters import TrainConfig, train_and_export
    report = train_and_export(TrainConfig(objective="vicious", epochs=5), "out/vicious")
    report.psnr, report.accuracy   # also in out/vicious/report.json

Attackers that know the defense (``TrainConfig`` fields / CLI flags): ``train_through`` (a
filter spec: train through the release filter with straight-through estimators,
:mod:`converters.through_filter`), ``decoder_input``, ``output_temperature``, ``mimic``,
``audit_penalty``, ``finish_ce_epochs``; :func:`fit_post_hoc_decoder` is the refitting
attacker (and the honest yardstick); :func:`train_through_filter` the bench ladder's job.

CLI: ``python -m converters train --help``.
"""

from converters.api import CLASSIFIER_FILE, DECODER_FILE, REPORT_FILE, load_data, model_info_for, train_and_export
from converters.config import OBJECTIVES, OUTPUTS, TASKS, TrainConfig
from converters.export import ExportCheckError, export_classifier, export_decoder, run_onnx
from converters.ladder import train_through_filter
from converters.posthoc import fit_post_hoc_decoder
from converters.report import LeakageScores, ThreatReport, leakage_scores, load_report
from converters.tasks import FASHION_ATTRIBUTES, label_only_baseline
from converters.through_filter import ThroughFilter, apply_release_filter, build_through_filter
from converters.train import TrainedModels, train_models

__all__ = [
    "TrainConfig",
    "train_and_export",
    "train_models",
    "TrainedModels",
    "ThreatReport",
    "LeakageScores",
    "leakage_scores",
    "load_report",
    "load_data",
    "model_info_for",
    "export_classifier",
    "export_decoder",
    "run_onnx",
    "ExportCheckError",
    "ThroughFilter",
    "build_through_filter",
    "apply_release_filter",
    "fit_post_hoc_decoder",
    "train_through_filter",
    "label_only_baseline",
    "FASHION_ATTRIBUTES",
    "OBJECTIVES",
    "OUTPUTS",
    "TASKS",
    "CLASSIFIER_FILE",
    "DECODER_FILE",
    "REPORT_FILE",
]
