"""``vet()``: static audit, then the behavioural checks and the leakage audit of one ONNX file.

The checks (each in its own module) are the consistency test (:mod:`.consistency`), the
float64 re-evaluation (:mod:`.precision`), the continuity test (:mod:`.continuity`), the
leakage audit against an honest twin (:mod:`.leakage_stage`, :mod:`.audit`, :mod:`.twin`)
and, on request, the paper's fine-tune test. The verdict comes from the decision rule in
:mod:`edgeguard.verdicts.rule`, the one SafeModel re-runs when it reads the report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard._version import __version__
from edgeguard.errors import EdgeguardError, InferenceError, ModelLoadError
from edgeguard.model import ModelInfo
from edgeguard.model.signature import looks_like_probabilities
from edgeguard.verdicts.thresholds import load_thresholds
from edgeguard.vetting import checks, leakage_stage
from edgeguard.vetting.accuracy import top1_accuracy
from edgeguard.vetting.augment import draw_seed
from edgeguard.vetting.context import VetContext
from edgeguard.vetting.probe import apply_overrides, coverage_problems, load_probe
from edgeguard.vetting.report import Finding, VetReport
from edgeguard.vetting.running import load_for_vet, runner, session
from edgeguard.vetting.settings import DEFAULT_MIN_PER_CLASS, DEFAULT_TESTS, TESTS, VetSettings
from edgeguard.vetting.static import _audit
from edgeguard.vetting.verdict import decide

__all__ = ["vet", "TESTS", "DEFAULT_TESTS", "DEFAULT_MIN_PER_CLASS", "VetSettings"]

logger = logging.getLogger("edgeguard.vetting")


def vet(
    model_path: str | os.PathLike,
    probe_data: Any,
    settings: VetSettings | None = None,
    *,
    thresholds: str | os.PathLike | dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    sign_key: bytes | str | os.PathLike | None = None,
    **knobs: Any,
) -> VetReport:
    """Vet an ONNX classifier before any of its outputs is shared.

    ``probe_data`` is labelled data of the claimed task: a folder with one subfolder per
    class, an ``.npz`` with ``x`` and ``y``, a folder with an IDX pair, or a
    :class:`~edgeguard.data.Dataset`; for vector and sequence models an ``.npz``, a ``.csv``
    or a ``.parquet`` file (its label column named by ``label_column``) or a
    :class:`~edgeguard.vectors.VectorSet`. ``output`` picks the graph output that is vetted;
    ``input_layout`` ("NCHW" / "NHWC") settles an image input the graph leaves ambiguous. 1000 images (100 per class) is the size the installed
    thresholds were calibrated on (a smaller probe gives at best "inconclusive").

    ``settings`` (:class:`VetSettings`) and ``knobs`` (its field names, or
    ``leakage_<field>`` / ``finetune_<field>`` / ``reference_<field>`` for the nested
    settings) say how; nested settings default to the ones the thresholds were calibrated
    with. ``sign_key`` (bytes or a key file) signs the report (HMAC-SHA256), so that
    ``SafeModel(verdict=report, verdict_key=...)`` can tell it was not edited.

    The verdict is "honest" only when every check ran and passed and the upper 95% bound of
    the leakage excess over an architecture-matched honest twin is below its margin;
    "vicious" when a check fails hard or the lower bound exceeds the margin; else
    "inconclusive", with the reasons.

    Raises :class:`ModelLoadError` when there is no file at ``model_path`` and the errors of
    the probe loaders for a bad probe set; everything wrong with the file itself is a
    finding in the returned report (critical ones stop the vet).
    """
    started = time.perf_counter()
    say = progress or logger.info
    table = load_thresholds(thresholds)
    settings = VetSettings.from_knobs(table, settings, **knobs)
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"expected an ONNX file at {path}, but there is none; check the path")
    augment_seed = settings.augment_seed if settings.augment_seed is not None else draw_seed()
    release_spec = _parse_release(settings.release)
    record = settings.record()
    record.update(augment_seed=augment_seed, reference_data=None if settings.reference_data is None else str(settings.reference_data))
    report = VetReport(
        model_path=str(path), model_sha256="", verdict="inconclusive", thresholds=_threshold_record(table),
        settings=record, edgeguard_version=__version__, thresholds_sha256=table["sha256"],
    )
    report = _vet_file(path, probe_data, settings, table, report, augment_seed, release_spec, say)
    decide(report, table)
    report.findings = sorted(report.findings, key=lambda f: -f.rank)
    report.seconds = time.perf_counter() - started
    if sign_key is not None:
        report.sign(sign_key)
    return report


def _vet_file(
    path: Path, probe_data: Any, settings: VetSettings, table: dict[str, Any], report: VetReport, augment_seed: int,
    release_spec: Any, say: Callable[[str], None],
) -> VetReport:
    say(f"static audit of {path}")
    findings, loaded = _audit(path, settings.max_tensor_bytes, settings.max_total_bytes)  # the one read of the file
    report.findings = findings
    if report.critical:
        report.model_sha256 = file_digest(path)
        report.reasons.append("a critical finding stopped the vet: the file was not run")
        return report
    describe = {
        "output": settings.output,
        "input_shape": settings.input_shape,
        "input_layout": settings.input_layout,
        "class_names": settings.class_names,
    }
    try:
        if loaded is None or any(value is not None for value in describe.values()):
            loaded = load_for_vet(path, settings.max_tensor_bytes, settings.max_total_bytes, describe)
    except EdgeguardError as error:
        report.model_sha256 = file_digest(path)
        report.findings.append(Finding("load-failed", "critical", str(error), "", str(path)))
        report.reasons.append("the file could not be loaded: nothing was vetted")
        return report
    report.model_sha256 = loaded.sha256  # the digest of the very bytes parsed and run below
    if loaded.info is None:  # what the file lacks and the options did not supply: say it (ModelLoadError)
        ModelInfo.from_model(loaded.proto, **{k: v for k, v in describe.items() if v is not None})
    info = apply_overrides(
        loaded.info, {"pixel_range": settings.pixel_range, "output_kind": settings.output_kind, "task_type": settings.task_type}
    )
    report.model = info.to_dict()
    say(f"loading the probe set {probe_data if isinstance(probe_data, str | os.PathLike) else '<in memory>'}")
    probe = load_probe(probe_data, info, limit=settings.probe_limit, seed=settings.seed, label_column=settings.label_column)
    report.probe = probe.summary()
    say(f"running the model on {len(probe)} probe samples (onnxruntime)")
    try:
        sess = session(loaded.serialized)
        run_inputs = runner(sess, info)
        outputs = run_inputs(probe.inputs)
    except InferenceError as error:
        report.findings.append(
            Finding(
                "onnxruntime-failed", "critical", str(error),
                "the model cannot run on this device as shipped; ask the provider for a standard-operator export",
                str(path),
            )
        )
        report.reasons.append("onnxruntime could not run the model: nothing was vetted")
        return report
    if info.output_kind_source == "default" and looks_like_probabilities(outputs, info.task_type):
        info = dataclasses.replace(info, output_kind="probabilities", output_kind_source="values")
        report.model = info.to_dict()
    report.findings += _output_findings(outputs, info)
    report.capacity_bits = _capacity(info)
    accuracy = top1_accuracy(outputs, probe.labels, info.task_type)
    report.probe["accuracy"] = accuracy
    report.probe["coverage_problems"] = coverage_problems(probe, info.task_type, settings.min_per_class)
    report.checked = {"runtime": "onnxruntime", "providers": ["CPUExecutionProvider"], "batch_sizes": []}
    ctx = VetContext(path, settings, table, loaded, info, probe, sess, run_inputs, outputs, report, say, augment_seed)
    tests = settings.tests
    if "consistency" in tests:
        report.tests["consistency"] = checks.run_consistency(ctx)
    if "precision" in tests:
        report.tests["precision"] = checks.run_precision(ctx)
    if "continuity" in tests:
        report.tests["continuity"] = checks.run_continuity(ctx)
    if "leakage" in tests:
        report.tests["leakage"] = leakage_stage.run_leakage(ctx, accuracy)
        if release_spec is not None:
            report.release = leakage_stage.run_release(ctx, release_spec)
    report.checked["release"] = release_spec.text if release_spec is not None else None
    if "finetune" in tests:
        report.tests["finetune"] = checks.run_finetune(ctx)
        checks.finetune_findings(ctx)
    return report


def _parse_release(release: Any) -> Any:
    if release is None:
        return None
    from edgeguard.filters import parse_filter_spec

    return parse_filter_spec(release) if isinstance(release, str) else release


def file_digest(path: Path) -> str:
    from edgeguard.model import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return "0" * 64


def _threshold_record(table: dict[str, Any]) -> dict[str, Any]:
    keep = ("file", "sha256", "source", "generated", "provisional", "caveats", "combined", "version")
    record = {key: table[key] for key in keep if key in table}
    record["tests"] = {name: {k: v for k, v in entry.items() if k != "settings"} for name, entry in table["tests"].items()}
    return record


def _output_findings(outputs: np.ndarray, info: Any) -> list[Finding]:
    findings = []
    if not np.all(np.isfinite(outputs)):
        findings.append(Finding("non-finite-outputs", "high", "the model outputs NaN or inf on probe samples", "", "output"))
    elif info.output_kind == "probabilities" and info.task_type == "multiclass":
        sums = outputs.sum(axis=1)
        if np.max(np.abs(sums - 1.0)) > 1e-3 or outputs.min() < -1e-6:
            findings.append(
                Finding(
                    "not-probabilities", "medium",
                    f"the model declares probabilities, but its outputs sum to {sums.min():.4g}..{sums.max():.4g}",
                    "treat the outputs as raw scores (--output-kind logits) and apply a Softmax filter", "output",
                )
            )
    return findings


def _capacity(info: Any) -> float | str:
    """Bits one raw output row can carry: unbounded for raw floats, log2 K for a label output."""
    if getattr(info, "output_type", "scores") == "label":
        return float(math.log2(info.num_classes)) if info.num_classes > 1 else 0.0
    from edgeguard.filters import pipeline_capacity_bits

    bits = pipeline_capacity_bits([], info.num_classes)
    return "unbounded" if math.isinf(bits) else float(bits)

