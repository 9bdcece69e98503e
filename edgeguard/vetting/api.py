"""``vet()``: static audit, consistency test, leakage audit (and optionally the fine-tune test) of one ONNX file."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard._version import __version__
from edgeguard.data import Dataset
from edgeguard.errors import ConfigError, EdgeguardError, InferenceError, ModelLoadError, UnsupportedOpError
from edgeguard.model import ModelInfo
from edgeguard.model.limits import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES
from edgeguard.model.signature import looks_like_probabilities
from edgeguard.vectors import DEFAULT_LABEL_COLUMN
from edgeguard.verdicts.thresholds import likelihood, load_thresholds, margin
from edgeguard.vetting.augment import draw_seed
from edgeguard.vetting.consistency import ConsistencySettings, consistency_test
from edgeguard.vetting.finetune import STATISTICS, FinetuneSettings, finetune_test
from edgeguard.vetting.leakage import LeakageResult, LeakageSettings, leakage_audit, paired_excess
from edgeguard.vetting.probe import (
    Probe,
    apply_overrides,
    coverage_problems,
    load_probe,
    model_info_with_overrides,
)
from edgeguard.vetting.reference import ReferenceSettings, train_reference
from edgeguard.vetting.report import Finding, TestResult, VetReport
from edgeguard.vetting.running import load_for_vet as _load
from edgeguard.vetting.running import runner as _runner
from edgeguard.vetting.running import scaler as _scaler
from edgeguard.vetting.running import session as _session
from edgeguard.vetting.static import _audit
from edgeguard.vetting.verdict import decide

__all__ = ["vet", "TESTS", "DEFAULT_TESTS", "DEFAULT_MIN_PER_CLASS"]

logger = logging.getLogger("edgeguard.vetting")

#: Every behavioural test, in the order they run.
TESTS = ("consistency", "leakage", "finetune")
#: What ``vet`` runs by default: the fine-tune test adds nothing to the calibrated verdict
#: (weight 0, see thresholds.json) and costs about half the time, so it runs on request only.
DEFAULT_TESTS = ("consistency", "leakage")
#: Fewest probe samples per class (per attribute value) for a conclusive verdict.
DEFAULT_MIN_PER_CLASS = 10
#: Largest max-abs difference (relative to the output scale) allowed between the
#: fine-tune interpreter and onnxruntime before the fine-tune test is distrusted.
_PARITY_TOLERANCE = 1e-3
_FINETUNE_KNOBS = {f"finetune_{name}": name for name in FinetuneSettings.__dataclass_fields__}
_LEAKAGE_KNOBS = {f"leakage_{name}": name for name in LeakageSettings.__dataclass_fields__}
_REFERENCE_KNOBS = {f"reference_{name}": name for name in ReferenceSettings.__dataclass_fields__}


def vet(
    model_path: str | os.PathLike,
    probe_data: str | os.PathLike | Dataset,
    *,
    seed: int = 0,
    augment_seed: int | None = None,
    tests: Sequence[str] = DEFAULT_TESTS,
    probe_limit: int | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    class_names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    pixel_range: Sequence[float] | None = None,
    output_kind: str | None = None,
    task_type: str | None = None,
    output: str | None = None,
    input_layout: str | None = None,
    label_column: str = DEFAULT_LABEL_COLUMN,
    thresholds: str | os.PathLike | dict[str, Any] | None = None,
    release: str | None = None,
    reference_models: Sequence[str | os.PathLike] = (),
    reference_data: str | os.PathLike | Dataset | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    progress: Callable[[str], None] | None = None,
    **knobs: Any,
) -> VetReport:
    """Vet an ONNX classifier before any of its outputs is shared.

    ``probe_data`` is a sample of the claimed task: a folder with one subfolder per
    class, an ``.npz`` with ``x`` and ``y``, a folder with an IDX pair, or a
    :class:`~edgeguard.data.Dataset`; for vector and sequence models an ``.npz``, a ``.csv``
    or a ``.parquet`` file (its label column named by ``label_column``) or a
    :class:`~edgeguard.vectors.VectorSet`. ``output`` picks the graph output that is vetted
    (by default the first float (N, K) output, else a ZipMap, else an int64 label);
    ``input_layout`` ("NCHW" / "NHWC") settles an image input the graph leaves ambiguous. Labels are used for the coverage check, the
    accuracy and the fine-tune test; the leakage audit needs none and queries augmented
    copies of the images (``augment_seed``: None draws a fresh seed from the OS, recorded
    in the report). 1000 images (100 per class) are enough.

    ``release`` (a filter spec, :func:`edgeguard.filters.parse_filter_spec`) audits the
    outputs SafeModel will release with those filters, next to the raw outputs.
    ``reference_models`` (honest models of the same architecture) and ``reference_data``
    (labelled data on which the vetted graph is re-initialised and trained honestly)
    give the architecture-matched comparison; the verdict then uses the excess leakage.

    Knobs: ``leakage_<field>`` (:class:`LeakageSettings`), ``finetune_<field>``
    (:class:`FinetuneSettings`), ``reference_<field>`` (:class:`ReferenceSettings`).

    Raises :class:`ModelLoadError` when there is no file at ``model_path`` and the
    errors of the probe loaders for a bad probe set; everything wrong with the file
    itself is a finding in the returned report (critical ones stop the vet).
    """
    started = time.perf_counter()
    say = progress or logger.info
    unknown_tests = [t for t in tests if t not in TESTS]
    if unknown_tests:
        raise ConfigError(f"expected tests among {TESTS}, got {unknown_tests}; pick from that list")
    table = load_thresholds(thresholds)
    finetune_settings, leakage_settings, reference_settings = _settings(knobs, table)
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"expected an ONNX file at {path}, but there is none; check the path")
    if augment_seed is None:
        augment_seed = draw_seed()
    release_spec = _parse_release(release)
    settings_record = {
        "seed": seed,
        "augment_seed": augment_seed,
        "tests": list(tests),
        "probe_limit": probe_limit,
        "min_per_class": min_per_class,
        "release": release_spec.text if release_spec is not None else None,
        "reference_models": [str(p) for p in reference_models],
        "reference_data": None if reference_data is None else str(reference_data),
        "finetune": _as_dict(finetune_settings),
        "leakage": _as_dict(leakage_settings),
        "reference": _as_dict(reference_settings),
    }
    report = VetReport(
        model_path=str(path),
        model_sha256="",
        verdict="inconclusive",
        thresholds=_threshold_record(table),
        settings=settings_record,
        edgeguard_version=__version__,
        thresholds_sha256=table["sha256"],
    )

    say(f"static audit of {path}")
    findings, loaded = _audit(path, max_tensor_bytes, max_total_bytes)  # the one read of the file
    report.findings = findings
    if report.critical:
        report.model_sha256 = _file_digest(path)
        report.reasons.append("a critical finding stopped the vet: the file was not run")
        return _finish(report, started)
    describe = {
        "output": output,
        "input_shape": None if input_shape is None else tuple(input_shape),
        "input_layout": input_layout,
        "class_names": None if class_names is None else tuple(str(c) for c in class_names),
    }
    try:
        if loaded is None or any(value is not None for value in describe.values()):
            loaded = _load(path, max_tensor_bytes, max_total_bytes, describe)  # the audit's load is the same read
    except EdgeguardError as error:
        report.model_sha256 = _file_digest(path)
        report.findings.append(Finding("load-failed", "critical", str(error), "", str(path)))
        report.reasons.append("the file could not be loaded: nothing was vetted")
        return _finish(report, started)
    report.model_sha256 = loaded.sha256  # the digest of the very bytes parsed and run below
    if loaded.info is None:  # what the file lacks and the options did not supply: say it (ModelLoadError)
        ModelInfo.from_model(loaded.proto, **{k: v for k, v in describe.items() if v is not None})
    info = apply_overrides(loaded.info, {"pixel_range": pixel_range, "output_kind": output_kind, "task_type": task_type})
    report.model = info.to_dict()
    say(f"loading the probe set {probe_data if isinstance(probe_data, str | os.PathLike) else '<in memory>'}")
    probe = load_probe(probe_data, info, limit=probe_limit, seed=seed, label_column=label_column)
    report.probe = probe.summary()

    say(f"running the model on {len(probe)} probe samples (onnxruntime)")
    try:
        session = _session(loaded.serialized)
        run_inputs = _runner(session, info)
        outputs = run_inputs(probe.inputs)
    except InferenceError as error:
        report.findings.append(
            Finding(
                "onnxruntime-failed",
                "critical",
                str(error),
                "the model cannot run on this device as shipped; ask the provider for a standard-operator export",
                str(path),
            )
        )
        report.reasons.append("onnxruntime could not run the model: nothing was vetted")
        return _finish(report, started)
    if info.output_kind_source == "default" and looks_like_probabilities(outputs, info.task_type):
        info = dataclasses.replace(info, output_kind="probabilities", output_kind_source="values")
        report.model = info.to_dict()
    report.findings += _output_findings(outputs, info)
    report.capacity_bits = _capacity(info)
    report.probe["accuracy"] = _accuracy(outputs, probe.labels, info.task_type)
    problems = coverage_problems(probe, info.task_type, min_per_class)
    report.reasons += problems
    report.checked = {"runtime": "onnxruntime", "providers": ["CPUExecutionProvider"], "batch_sizes": []}

    if "consistency" in tests:
        report.tests["consistency"] = _run_consistency(session, info, probe, seed, say, report)
    if "leakage" in tests:
        report.tests["leakage"] = _run_leakage(
            loaded, run_inputs, probe, info, leakage_settings, reference_settings, table, seed, augment_seed,
            reference_models, reference_data, max_tensor_bytes, max_total_bytes, say, report, outputs,
        )
        if release_spec is not None:
            report.release = _run_release(release_spec, run_inputs, probe, info, leakage_settings, seed, augment_seed, report)
    report.checked["release"] = release_spec.text if release_spec is not None else None
    if "finetune" in tests:
        report.tests["finetune"] = _run_finetune(loaded.proto, outputs, probe, info, finetune_settings, table, seed, say)
        _finetune_findings(report, path)
    decide(report, table, problems)
    _uncalibrated_target(report)
    return _finish(report, started)


# -- loading and running ------------------------------------------------------------------------


def _uncalibrated_target(report: VetReport) -> None:
    """No "honest" from a raw gain on a target the thresholds were not calibrated on.

    The leakage thresholds were calibrated on pixel targets (28x28 images). A gain on a
    thumbnail of a large image or on standardised features can still show leakage (a large
    gain is leakage whatever the target), but a small one is no positive evidence: without an
    honest twin (reference_models / reference_data) the verdict stays inconclusive.
    """
    leakage = report.tests.get("leakage")
    if report.verdict != "honest" or leakage is None or not leakage.details:
        return
    target = str(leakage.details.get("target", "pixels"))
    if target.startswith("pixels") or leakage.details.get("threshold_entry", "leakage") != "leakage":
        return
    report.verdict = "inconclusive"
    report.reasons.insert(
        0,
        f"the leakage thresholds are calibrated on image pixels, and this audit regressed {target}: a low gain is "
        "no evidence of honesty here; compare with an honest twin (--reference-data labelled data, or "
        "--reference-model honest models of this architecture)",
    )


def _file_digest(path: Path) -> str:
    from edgeguard.model import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return "0" * 64



# -- the tests ----------------------------------------------------------------------------------


def _run_consistency(session: Any, info: Any, probe: Probe, seed: int, say: Callable, report: VetReport) -> TestResult:
    say("consistency test (batch 1 vs batched, shuffled, repeated rows)")
    exact = _runner(session, info, chunk=1 << 30)
    started = time.perf_counter()
    try:
        result = consistency_test(probe.inputs, exact, settings=ConsistencySettings(), seed=seed)
    except InferenceError as error:
        report.findings.append(
            Finding(
                "batch-dependent-outputs",
                "high",
                f"the model runs on some batch sizes and fails on others: {error}",
                "do not use this model; it behaves differently depending on how it is called",
                "input",
            )
        )
        return TestResult("consistency", "failed", reason=str(error), seconds=time.perf_counter() - started)
    details = result.to_dict()
    if result.consistent:
        report.checked["batch_sizes"] = list(result.batch_sizes)
        report.checked["max_batch"] = max(result.batch_sizes)
    else:
        report.findings.append(
            Finding(
                "batch-dependent-outputs",
                "high",
                f"per-row outputs change with the batch ({result.worst_case}: max difference "
                f"{result.max_difference:.3g} of the output scale): the model can show the vet one behaviour "
                "and an app calling it one image at a time another",
                "do not use this model; an honest classifier's row outputs do not depend on the other rows",
                "output",
            )
        )
    return TestResult(
        "consistency",
        "ran",
        score=result.max_difference,
        flagged=not result.consistent,
        seconds=time.perf_counter() - started,
        details=details,
    )


def _audit_with(
    run_images: Callable[[np.ndarray], np.ndarray],
    probe: Probe,
    kind: str,
    task_type: str,
    settings: LeakageSettings,
    seed: int,
    augment_seed: int,
    outputs: np.ndarray | None = None,
) -> LeakageResult:
    return leakage_audit(
        probe.images, run_images, output_kind=kind, task_type=task_type, settings=settings, seed=seed,
        augment_seed=augment_seed, labels=probe.labels, outputs_of_images=outputs,
    )


def _run_leakage(
    loaded: Any,
    run_inputs: Callable,
    probe: Probe,
    info: Any,
    settings: LeakageSettings,
    reference_settings: ReferenceSettings,
    table: dict,
    seed: int,
    augment_seed: int,
    reference_models: Sequence[str | os.PathLike],
    reference_data: Any,
    max_tensor_bytes: int,
    max_total_bytes: int,
    say: Callable,
    report: VetReport,
    outputs: np.ndarray | None = None,
) -> TestResult:
    if len(probe) < settings.min_samples:
        return TestResult(
            "leakage",
            "skipped",
            reason=f"probe set too small: the leakage audit needs at least {settings.min_samples} images, got {len(probe)}",
        )
    scale = _scaler(info)
    say(f"leakage audit ({settings.decoder}, {len(probe)} images x {settings.augmentations + 2} queries)")
    started = time.perf_counter()
    try:
        mine = _audit_with(
            lambda x: run_inputs(scale(x)), probe, info.output_kind, info.task_type, settings, seed, augment_seed,
            outputs=outputs,
        )
    except InferenceError as error:
        return TestResult("leakage", "failed", reason=str(error), seconds=time.perf_counter() - started)
    details = mine.to_dict()
    references: list[LeakageResult] = []
    records: list[dict[str, Any]] = []
    for reference in reference_models:
        say(f"leakage audit of the reference model {reference}")
        try:
            ref_loaded = _load(Path(reference), max_tensor_bytes, max_total_bytes)
            ref_info = model_info_with_overrides(ref_loaded.proto, {"input_shape": info.input_shape, "class_names": info.class_names})
            ref_run = _runner(_session(ref_loaded.serialized), ref_info)
            ref_scale = _scaler(ref_info)
            result = _audit_with(
                lambda x, r=ref_run, s=ref_scale: r(s(x)), probe, ref_info.output_kind, ref_info.task_type, settings, seed,
                augment_seed,
            )
        except EdgeguardError as error:
            raise ModelLoadError(f"expected a usable reference model at {reference}, got an error: {error}") from None
        references.append(result)
        records.append({"kind": "supplied", "path": str(reference), "sha256": ref_loaded.sha256, "gain_db": result.gain_db})
    if reference_data is not None:
        say(f"training an honest reference of this architecture on {reference_data}")
        labelled = load_probe(reference_data, info, seed=seed)
        try:
            ref_run, record = train_reference(
                loaded.proto, labelled.inputs, labelled.labels, output_kind=info.output_kind, task_type=info.task_type,
                settings=reference_settings, seed=seed,
            )
            result = _audit_with(lambda x: ref_run(scale(x)), probe, info.output_kind, info.task_type, settings, seed, augment_seed)
            references.append(result)
            record["gain_db"] = result.gain_db
            records.append(record)
        except (UnsupportedOpError, RuntimeError) as error:
            records.append({"kind": "trained", "error": _short(error)})
            report.findings.append(
                Finding(
                    "reference-training-failed",
                    "medium",
                    f"the vetted graph could not be re-trained as an honest reference: {_short(error)}",
                    "supply an honest model of this architecture with --reference-model",
                    "graph",
                )
            )
    entry_name = "leakage"
    score = mine.gain_db
    if references:
        excess, low, high = paired_excess(mine, references, np.random.default_rng([seed, 11]), settings.bootstrap)
        details.update(
            excess_gain_db=excess,
            excess_ci95_db=[low, high],
            reference_gain_db=float(np.median([r.gain_db for r in references])),
            references=records,
        )
        # supplied honest models and a re-trained graph have different honest spreads: each its own threshold
        supplied = any(r.get("kind") == "supplied" for r in records)
        candidates = ("leakage_excess",) if supplied else ("leakage_excess_trained", "leakage_excess")
        entry_name = next((name for name in candidates if name in table["tests"]), "leakage")
        if entry_name != "leakage":
            score = excess
    details["threshold_entry"] = entry_name
    details["statistic"] = "gain_db" if entry_name == "leakage" else "excess_gain_db"
    result = _scored("leakage", score, details, table, time.perf_counter() - started, entry_name)
    note = _calibration_note(settings, table["tests"]["leakage"])
    if note:
        result.details["calibration_note"] = note
    return result


def _parse_release(release: Any) -> Any:
    if release is None:
        return None
    from edgeguard.filters import parse_filter_spec

    return parse_filter_spec(release) if isinstance(release, str) else release


def _run_release(
    spec: Any, run_inputs: Callable, probe: Probe, info: Any, settings: LeakageSettings, seed: int, augment_seed: int,
    report: VetReport,
) -> dict[str, Any]:
    """Leakage of exactly what SafeModel releases with ``spec``, next to the raw outputs and the capacity bound."""
    from edgeguard.filters import FilterPipeline

    raw = report.tests.get("leakage")
    record: dict[str, Any] = {
        "spec": spec.text,
        "raw_gain_db": raw.details.get("gain_db") if raw is not None and raw.status == "ran" else None,
    }
    if spec.is_raw:
        record.update(capacity_bits="unbounded", gain_db=record["raw_gain_db"], kind=info.output_kind)
        return record
    pipeline = FilterPipeline(spec.build(), input_kind=info.output_kind, task_type=info.task_type)
    bits = pipeline.capacity_bits(info.num_classes)
    record["capacity_bits"] = "unbounded" if math.isinf(bits) else float(bits)
    released = pipeline.domains(info.num_classes)[-1]
    record["kind"] = "labels" if released.terminal else released.kind
    if released.terminal:
        record.update(gain_db=0.0, gain_ci95_db=[0.0, 0.0], note="labels only: nothing beyond the label is released")
        return record
    scale = _scaler(info)
    rng = np.random.default_rng([augment_seed, 3])
    kind = "probabilities" if released.kind == "probabilities" else "logits"
    try:
        result = _audit_with(
            lambda x: np.asarray(pipeline(run_inputs(scale(x)).astype(np.float32), rng), dtype=np.float64),
            probe, kind, info.task_type, settings, seed, augment_seed,
        )
    except EdgeguardError as error:
        record["error"] = str(error)
        return record
    record.update(gain_db=result.gain_db, gain_ci95_db=[result.ci_low_db, result.ci_high_db])
    return record


def _run_finetune(
    model: Any,
    outputs: np.ndarray,
    probe: Probe,
    info: Any,
    settings: FinetuneSettings,
    table: dict,
    seed: int,
    say: Callable,
) -> TestResult:
    needed = settings.train_samples + settings.eval_samples
    if len(probe) < needed:
        return TestResult(
            "finetune",
            "skipped",
            higher_is_vicious=bool(table["tests"]["finetune"]["higher_is_vicious"]),
            reason=f"probe set too small: the fine-tune test needs {needed} samples "
            f"({settings.train_samples} + {settings.eval_samples}), got {len(probe)}",
        )
    try:
        import torch
    except ImportError:
        return TestResult("finetune", "skipped", reason="torch is not installed (pip install 'edgeguard[torch]')")
    from edgeguard.onnx_torch import to_torch

    started = time.perf_counter()
    say(
        f"fine-tune test ({settings.optimiser}, lr {settings.learning_rate}, {settings.steps} steps of "
        f"{settings.batch_size})"
    )
    try:
        module = to_torch(model)
    except UnsupportedOpError as error:
        return TestResult("finetune", "skipped", reason=f"unsupported by the fine-tune interpreter: {_short(error)}")
    except (ModelLoadError, EdgeguardError) as error:
        return TestResult("finetune", "failed", reason=f"the fine-tune interpreter could not load the model: {error}")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        with torch.no_grad():
            sample = min(len(probe), 64)
            mine = module(torch.as_tensor(probe.inputs[:sample])).double().numpy()
        scale = max(1.0, float(np.abs(outputs[:sample]).max()))
        diff = float(np.abs(mine - outputs[:sample]).max())
        if not diff <= _PARITY_TOLERANCE * scale:
            return TestResult(
                "finetune",
                "skipped",
                reason=f"the fine-tune interpreter disagrees with onnxruntime (max abs diff {diff:.3g})",
                details={"interpreter_max_abs_diff": diff},
            )
        details = finetune_test(
            module,
            probe.inputs,
            probe.labels,
            output_kind=info.output_kind,
            task_type=info.task_type,
            settings=settings,
            seed=seed,
        )
    except EdgeguardError as error:
        return TestResult("finetune", "failed", reason=str(error))
    except RuntimeError as error:  # torch errors while running the interpreted graph
        return TestResult("finetune", "failed", reason=f"the fine-tune run failed: {error}")
    finally:
        torch.set_num_threads(threads)
    details["interpreter_max_abs_diff"] = diff
    calibrated = table["tests"]["finetune"].get("statistic", "cosine")
    if settings.statistic != calibrated:
        return TestResult(
            "finetune",
            "ran",
            score=float(details.pop("score")),
            higher_is_vicious=STATISTICS[settings.statistic],
            reason=f"no threshold for statistic {settings.statistic!r} (calibrated: {calibrated!r}); not used",
            seconds=time.perf_counter() - started,
            details=details,
        )
    result = _scored("finetune", details.pop("score"), details, table, time.perf_counter() - started)
    note = _calibration_note(settings, table["tests"]["finetune"])
    if note:
        result.details["calibration_note"] = note
    return result


def _finetune_findings(report: VetReport, path: Path) -> None:
    test = report.tests["finetune"]
    parity = test.details.get("interpreter_max_abs_diff")
    if test.status == "skipped" and parity is not None:
        report.findings.append(
            Finding(
                "interpreter-mismatch",
                "high",
                f"the fine-tune interpreter and onnxruntime disagree on this model (max abs diff {parity:.3g})",
                "the fine-tune test was skipped; report the model to the edgeguard maintainers",
                str(path),
            )
        )
    if test.reason.startswith("unsupported"):
        report.findings.append(
            Finding(
                "finetune-unsupported",
                "medium",
                test.reason,
                "the verdict rests on the leakage audit alone; ask for a standard-operator export",
                str(path),
            )
        )


# -- helpers -------------------------------------------------------------------------------


def _settings(
    knobs: dict[str, Any], table: dict[str, Any]
) -> tuple[FinetuneSettings, LeakageSettings, ReferenceSettings]:
    """Test settings: the calibrated ones from the thresholds file, then the caller's knobs."""
    known = set(_FINETUNE_KNOBS) | set(_LEAKAGE_KNOBS) | set(_REFERENCE_KNOBS)
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise ConfigError(f"expected test knobs among {sorted(known)}, got unknown {unknown}; check the spelling")
    finetune = dict(table["tests"]["finetune"].get("settings", {}))
    leakage = dict(table["tests"]["leakage"].get("settings", {}))
    reference = dict(table.get("reference", {}).get("settings", {}))
    finetune.update({_FINETUNE_KNOBS[k]: v for k, v in knobs.items() if k in _FINETUNE_KNOBS and v is not None})
    leakage.update({_LEAKAGE_KNOBS[k]: v for k, v in knobs.items() if k in _LEAKAGE_KNOBS and v is not None})
    reference.update({_REFERENCE_KNOBS[k]: v for k, v in knobs.items() if k in _REFERENCE_KNOBS and v is not None})
    return FinetuneSettings(**finetune), LeakageSettings(**leakage), ReferenceSettings(**reference)


def _as_dict(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}




def _threshold_record(table: dict[str, Any]) -> dict[str, Any]:
    keep = ("file", "sha256", "source", "generated", "provisional", "caveats", "combined")
    record = {key: table[key] for key in keep if key in table}
    record["tests"] = {
        name: {k: v for k, v in entry.items() if k != "settings"} for name, entry in table["tests"].items()
    }
    return record


def _output_findings(outputs: np.ndarray, info: Any) -> list[Finding]:
    findings = []
    if not np.all(np.isfinite(outputs)):
        findings.append(
            Finding("non-finite-outputs", "high", "the model outputs NaN or inf on probe samples", "", "output")
        )
    elif info.output_kind == "probabilities" and info.task_type == "multiclass":
        sums = outputs.sum(axis=1)
        if np.max(np.abs(sums - 1.0)) > 1e-3 or outputs.min() < -1e-6:
            findings.append(
                Finding(
                    "not-probabilities",
                    "medium",
                    f"the model declares probabilities, but its outputs sum to {sums.min():.4g}..{sums.max():.4g}",
                    "treat the outputs as raw scores (--output-kind logits) and apply a Softmax filter",
                    "output",
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


def _accuracy(outputs: np.ndarray, labels: np.ndarray, task_type: str) -> float:
    if task_type == "multilabel":
        threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
        return float(((outputs > threshold) == (labels > 0.5)).mean())
    return float((outputs.argmax(axis=1) == labels).mean())


def _scored(
    name: str, score: float, details: dict[str, Any], table: dict[str, Any], seconds: float, entry_name: str | None = None
) -> TestResult:
    entry = table["tests"][entry_name or name]
    return TestResult(
        name=name,
        status="ran",
        score=float(score),
        threshold=float(entry["threshold"]),
        higher_is_vicious=bool(entry["higher_is_vicious"]),
        flagged=margin(score, entry) > 0,
        likelihood=likelihood(score, entry),
        seconds=seconds,
        details=details,
    )


def _calibration_note(settings: Any, entry: dict[str, Any]) -> str:
    calibrated = entry.get("settings")
    if not calibrated:
        return ""
    mine = _as_dict(settings)
    differ = {k: (mine[k], v) for k, v in calibrated.items() if k in mine and mine[k] != v}
    if not differ:
        return ""
    return "threshold calibrated with other settings: " + ", ".join(
        f"{k}={a!r} (calibrated {b!r})" for k, (a, b) in differ.items()
    )


def _short(error: Exception) -> str:
    """The 'got ...' part of an "expected X, got Y; fix" message (the list of supported ops is long)."""
    text = str(error)
    if "got " in text:
        text = "got " + text.split("got ", 1)[1]
    return text.split(";", 1)[0]


def _finish(report: VetReport, started: float) -> VetReport:
    report.findings = sorted(report.findings, key=lambda f: -f.rank)
    report.seconds = time.perf_counter() - started
    return report
