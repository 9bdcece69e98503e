"""``vet()``: static audit, leakage audit and fine-tune test of one ONNX file, and the verdict."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.data import Dataset
from edgeguard.errors import EdgeguardError, InferenceError, ModelLoadError, UnsupportedOpError
from edgeguard.vetting._probe import Probe, coverage_problems, load_probe, model_info_with_overrides
from edgeguard.vetting._thresholds import likelihood, load_thresholds, margin
from edgeguard.vetting.finetune import STATISTICS, FinetuneSettings, finetune_test
from edgeguard.vetting.leakage import LeakageSettings, leakage_audit
from edgeguard.vetting.report import Finding, TestResult, VetReport
from edgeguard.vetting.static import DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES, _audit, file_sha256

__all__ = ["vet", "TESTS", "DEFAULT_MIN_PER_CLASS"]

logger = logging.getLogger("edgeguard.vetting")

#: The behavioural tests, in the order they run.
TESTS = ("leakage", "finetune")
#: Fewest probe samples per class (per attribute value) for a conclusive verdict.
DEFAULT_MIN_PER_CLASS = 10
#: Largest max-abs difference (relative to the output scale) allowed between the
#: fine-tune interpreter and onnxruntime before the fine-tune test is distrusted.
_PARITY_TOLERANCE = 1e-3
_FINETUNE_KNOBS = {f"finetune_{name}": name for name in FinetuneSettings.__dataclass_fields__}
_LEAKAGE_KNOBS = {f"leakage_{name}": name for name in LeakageSettings.__dataclass_fields__}


def vet(
    model_path: str | os.PathLike,
    probe_data: str | os.PathLike | Dataset,
    *,
    seed: int = 0,
    tests: Sequence[str] = TESTS,
    probe_limit: int | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    class_names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    pixel_range: Sequence[float] | None = None,
    output_kind: str | None = None,
    task_type: str | None = None,
    thresholds: str | os.PathLike | dict[str, Any] | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    progress: Callable[[str], None] | None = None,
    **knobs: Any,
) -> VetReport:
    """Vet an ONNX classifier before any of its outputs is shared.

    ``probe_data`` is a labelled sample of the claimed task: a folder with one subfolder
    per class, an ``.npz`` with ``x`` and ``y``, a folder with an IDX pair, or a
    :class:`~edgeguard.data.Dataset`. It is preprocessed from the model's metadata
    (input shape, channels, pixel range), which ``class_names`` ... ``task_type`` override.

    Test knobs: ``finetune_<field>`` for every field of :class:`FinetuneSettings`
    (``finetune_steps``, ``finetune_learning_rate``, ``finetune_optimiser``,
    ``finetune_batch_size``, ``finetune_train_samples``, ``finetune_eval_samples``,
    ``finetune_statistic``) and ``leakage_<field>`` for :class:`LeakageSettings`
    (``leakage_fit_samples``, ``leakage_eval_samples``, ``leakage_neighbours``,
    ``leakage_decoder``, ...). Defaults come from the detection benchmark.

    Raises :class:`ModelLoadError` when there is no file at ``model_path`` and the
    errors of the probe loaders for a bad probe set; everything wrong with the file
    itself is a finding in the returned report (critical ones stop the vet).
    """
    started = time.perf_counter()
    say = progress or logger.info
    unknown_tests = [t for t in tests if t not in TESTS]
    if unknown_tests:
        raise ValueError(f"expected tests among {TESTS}, got {unknown_tests}")
    table = load_thresholds(thresholds)
    finetune_settings, leakage_settings = _settings(knobs, table)
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"expected an ONNX file at {path}, but there is none; check the path")
    sha256 = file_sha256(path)  # the bytes; external data is folded in below once it is known to be safe
    settings_record = {
        "seed": seed,
        "tests": list(tests),
        "probe_limit": probe_limit,
        "min_per_class": min_per_class,
        "finetune": _as_dict(finetune_settings),
        "leakage": _as_dict(leakage_settings),
    }
    report = VetReport(
        model_path=str(path),
        model_sha256=sha256,
        verdict="inconclusive",
        thresholds=_threshold_record(table),
        settings=settings_record,
        edgeguard_version=_version(),
    )

    say(f"static audit of {path}")
    findings, _ = _audit(path, max_tensor_bytes, max_total_bytes)
    report.findings = findings
    if report.critical:
        report.reasons.append("a critical finding stopped the vet: the file was not run")
        return _finish(report, started)
    report.model_sha256 = _binding_digest(path, sha256)

    from edgeguard.model_info import load_onnx

    model = load_onnx(path)  # external data, now known to stay inside the folder
    overrides = {
        "class_names": class_names,
        "input_shape": input_shape,
        "pixel_range": pixel_range,
        "output_kind": output_kind,
        "task_type": task_type,
    }
    info = model_info_with_overrides(model, overrides)
    report.model = info.to_dict()
    say(f"loading the probe set {probe_data if not isinstance(probe_data, Dataset) else '<Dataset>'}")
    probe = load_probe(probe_data, info, limit=probe_limit, seed=seed)
    report.probe = probe.summary()

    say(f"running the model on {len(probe)} probe samples (onnxruntime)")
    try:
        outputs = _run_onnxruntime(model, info, probe.inputs)
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
    report.findings += _output_findings(outputs, info)
    report.capacity_bits = _capacity(info)
    report.probe["accuracy"] = _accuracy(outputs, probe.labels, info.task_type)

    problems = coverage_problems(probe, info.task_type, min_per_class)
    report.reasons += problems

    if "leakage" in tests:
        report.tests["leakage"] = _run_leakage(outputs, probe, info, leakage_settings, table, seed, say)
    if "finetune" in tests:
        report.tests["finetune"] = _run_finetune(model, outputs, probe, info, finetune_settings, table, seed, say)
        parity = report.tests["finetune"].details.get("interpreter_max_abs_diff")
        if report.tests["finetune"].status == "skipped" and parity is not None:
            report.findings.append(
                Finding(
                    "interpreter-mismatch",
                    "high",
                    f"the fine-tune interpreter and onnxruntime disagree on this model (max abs diff {parity:.3g})",
                    "the fine-tune test was skipped; report the model to the edgeguard maintainers",
                    str(path),
                )
            )
        if report.tests["finetune"].reason.startswith("unsupported"):
            report.findings.append(
                Finding(
                    "finetune-unsupported",
                    "medium",
                    report.tests["finetune"].reason,
                    "the verdict rests on the leakage audit alone; ask for a standard-operator export",
                    str(path),
                )
            )
    _decide(report, table, problems)
    return _finish(report, started)


# -- helpers -------------------------------------------------------------------------------


def _settings(knobs: dict[str, Any], table: dict[str, Any]) -> tuple[FinetuneSettings, LeakageSettings]:
    """Test settings: the calibrated ones from the thresholds file, then the caller's knobs."""
    unknown = sorted(set(knobs) - set(_FINETUNE_KNOBS) - set(_LEAKAGE_KNOBS))
    if unknown:
        raise TypeError(
            f"expected test knobs among {sorted(_FINETUNE_KNOBS) + sorted(_LEAKAGE_KNOBS)}, got unknown {unknown}"
        )
    finetune = dict(table["tests"]["finetune"].get("settings", {}))
    leakage = dict(table["tests"]["leakage"].get("settings", {}))
    finetune.update({_FINETUNE_KNOBS[k]: v for k, v in knobs.items() if k in _FINETUNE_KNOBS and v is not None})
    leakage.update({_LEAKAGE_KNOBS[k]: v for k, v in knobs.items() if k in _LEAKAGE_KNOBS and v is not None})
    return FinetuneSettings(**finetune), LeakageSettings(**leakage)


def _as_dict(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def _binding_digest(path: Path, fallback: str) -> str:
    """The digest SafeModel binds verdicts to (external data folded in), or the file's bytes."""
    try:
        from edgeguard.safe_model import model_sha256
    except ImportError:  # pragma: no cover - safe_model is part of the package
        return fallback
    try:
        return model_sha256(path)
    except (OSError, EdgeguardError):
        return fallback


def _version() -> str:
    try:
        from edgeguard import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return ""


def _threshold_record(table: dict[str, Any]) -> dict[str, Any]:
    keep = ("file", "source", "generated", "provenance", "caveats", "combined")
    record = {key: table[key] for key in keep if key in table}
    record["tests"] = {
        name: {k: v for k, v in entry.items() if k != "settings"} for name, entry in table["tests"].items()
    }
    return record


def _run_onnxruntime(model: Any, info: Any, inputs: np.ndarray, batch: int = 500) -> np.ndarray:
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        chunks = [session.run(None, {name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    except Exception as error:  # onnxruntime raises its own exception types
        raise InferenceError(f"expected onnxruntime to run the model, got an error: {error}") from None
    outputs = np.concatenate(chunks).astype(np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != info.num_classes:
        raise InferenceError(
            f"expected outputs of shape (N, {info.num_classes}) (one score per class), got {outputs.shape}"
        )
    return outputs


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
    """Bits one raw output row can carry: unbounded for raw floats."""
    try:
        from edgeguard.metrics import capacity_bits

        bits = capacity_bits([], info.num_classes)
    except ImportError:
        return "unbounded"
    return "unbounded" if math.isinf(bits) else float(bits)


def _accuracy(outputs: np.ndarray, labels: np.ndarray, task_type: str) -> float:
    if task_type == "multilabel":
        threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
        return float(((outputs > threshold) == (labels > 0.5)).mean())
    return float((outputs.argmax(axis=1) == labels).mean())


def _scored(name: str, score: float, details: dict[str, Any], table: dict[str, Any], seconds: float) -> TestResult:
    entry = table["tests"][name]
    value = likelihood(score, entry)
    return TestResult(
        name=name,
        status="ran",
        score=float(score),
        threshold=float(entry["threshold"]),
        higher_is_vicious=bool(entry["higher_is_vicious"]),
        flagged=margin(score, entry) > 0,
        likelihood=value,
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


def _run_leakage(
    outputs: np.ndarray, probe: Probe, info: Any, settings: LeakageSettings, table: dict, seed: int, say: Callable
) -> TestResult:
    needed = settings.fit_samples + settings.eval_samples
    if len(probe) < needed:
        return TestResult(
            "leakage",
            "skipped",
            reason=f"probe set too small: the leakage audit needs {needed} samples "
            f"({settings.fit_samples} + {settings.eval_samples}), got {len(probe)}",
        )
    say(f"leakage audit ({settings.decoder}, {settings.fit_samples} fit / {settings.eval_samples} scored)")
    started = time.perf_counter()
    details = leakage_audit(
        outputs, probe.images, output_kind=info.output_kind, task_type=info.task_type, settings=settings, seed=seed
    )
    entry = table["tests"]["leakage"]
    score = details.pop("score")
    details["psnr_gain_db"] = score
    if entry.get("statistic") == "entropy_adjusted_gain_db":
        # less confident models reveal more even when honest: discount the gain by the calibrated
        # slope of the honest models' gain on their mean output entropy
        score = score - float(entry["entropy_slope"]) * details["mean_entropy"]
    result = _scored("leakage", score, details, table, time.perf_counter() - started)
    note = _calibration_note(settings, entry)
    if note:
        result.details["calibration_note"] = note
    return result


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


def _short(error: Exception) -> str:
    """The 'got ...' part of an "expected X, got Y; fix" message (the list of supported ops is long)."""
    text = str(error)
    if "got " in text:
        text = "got " + text.split("got ", 1)[1]
    return text.split(";", 1)[0]


def _decide(report: VetReport, table: dict[str, Any], problems: list[str]) -> None:
    """Combine the test results into the verdict and likelihood (rule in thresholds.json)."""
    combined = table.get("combined", {})
    weights: dict[str, float] = combined.get("weights", {name: 1.0 for name in TESTS})
    ran = {
        name: t
        for name, t in report.tests.items()
        if t.status == "ran" and t.score is not None and t.threshold is not None
    }
    required = [name for name in combined.get("required", ["leakage"]) if name in report.settings["tests"]]
    if ran:
        total = float(combined.get("bias", 0.0))
        for name, test in ran.items():
            total += float(weights.get(name, 0.0)) * margin(test.score, table["tests"][name])
        total = max(-50.0, min(50.0, total))
        report.likelihood = 1.0 / (1.0 + math.exp(-total))
    flagged = [name for name, t in ran.items() if t.flagged and weights.get(name, 0.0) > 0]
    for name, test in ran.items():
        test.details["used_in_verdict"] = float(weights.get(name, 0.0)) != 0.0
        if not test.details["used_in_verdict"]:
            test.reason = test.reason or "informational: weight 0 in the combined verdict (see the thresholds file)"
    cutoff = float(combined.get("likelihood_threshold", 0.5))
    for name, test in report.tests.items():
        if test.status != "ran":
            report.reasons.append(f"{name} test {test.status}: {test.reason}")
    if problems:
        report.verdict = "inconclusive"
        report.reasons.insert(0, "the probe set does not cover the claimed task, so no verdict is given")
        return
    if report.likelihood is not None and report.likelihood >= cutoff:
        report.verdict = "vicious"
        report.reasons.insert(
            0,
            f"combined likelihood {report.likelihood:.3f} >= {cutoff} "
            f"(tests past their threshold: {', '.join(flagged) or 'none'})",
        )
        return
    missing = [name for name in required if name not in ran]
    blinding = [f for f in report.findings if f.severity in ("high", "critical")]
    if missing or report.likelihood is None:
        if missing:
            report.reasons.insert(0, f"required test(s) did not run: {', '.join(missing)}")
        report.verdict = "inconclusive"
        return
    if blinding:
        report.verdict = "inconclusive"
        report.reasons.insert(
            0,
            "the tests passed, but high-severity findings ("
            + ", ".join(sorted({f.code for f in blinding}))
            + ") mean they may not see what the model does",
        )
        return
    report.verdict = "honest"
    report.reasons.insert(0, f"combined likelihood {report.likelihood:.3f} < {cutoff}")


def _finish(report: VetReport, started: float) -> VetReport:
    report.findings = sorted(report.findings, key=lambda f: -f.rank)
    report.seconds = time.perf_counter() - started
    return report
