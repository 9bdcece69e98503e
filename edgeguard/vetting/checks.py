"""The vet's behavioural checks besides the leakage audit: consistency, precision, continuity, fine-tune."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from edgeguard.errors import EdgeguardError, InferenceError, ModelLoadError, UnsupportedOpError
from edgeguard.verdicts.rule import DEFAULT_ENTRIES
from edgeguard.verdicts.thresholds import likelihood, margin
from edgeguard.vetting.consistency import DEFAULT_BATCH_SIZES, ConsistencySettings, batch_sizes_for, consistency_test
from edgeguard.vetting.context import VetContext
from edgeguard.vetting.continuity import continuity_test
from edgeguard.vetting.finetune import STATISTICS, finetune_test
from edgeguard.vetting.precision import precision_check, rows_per_view
from edgeguard.vetting.report import Finding, TestResult
from edgeguard.vetting.running import chunk_rows, runner, scaler
from edgeguard.vetting.targets import audit_target

__all__ = ["run_consistency", "run_precision", "run_continuity", "run_finetune", "scored", "entry"]

#: Largest max-abs difference (relative to the output scale) allowed between the
#: fine-tune interpreter and onnxruntime before the fine-tune test is distrusted.
_PARITY_TOLERANCE = 1e-3
#: Fewest held-out probe samples the fine-tune test compares outputs on (when the probe is short of the setting).
MIN_FINETUNE_EVAL = 500


def entry(table: dict[str, Any], name: str) -> dict[str, Any]:
    """The thresholds entry ``name``: the installed table's, else the built-in default."""
    return table["tests"].get(name) or DEFAULT_ENTRIES[name]


def scored(name: str, score: float, details: dict[str, Any], table: dict[str, Any], seconds: float,
           entry_name: str | None = None, ci: tuple[float, float] | None = None) -> TestResult:
    """A ran TestResult scored against its thresholds entry (flagged: the interval is past the threshold)."""
    found = entry(table, entry_name or name)
    details = dict(details)
    details["threshold_entry"] = entry_name or name
    if ci is not None:
        details["ci95"] = [float(ci[0]), float(ci[1])]
    low = ci[0] if ci is not None else score
    high = ci[1] if ci is not None else score
    bound = low if found["higher_is_vicious"] else high
    return TestResult(
        name=name, status="ran", score=float(score), threshold=float(found["threshold"]),
        higher_is_vicious=bool(found["higher_is_vicious"]), flagged=margin(bound, found) > 0,
        likelihood=likelihood(score, found), seconds=seconds, details=details,
    )


def run_consistency(ctx: VetContext) -> TestResult:
    ctx.say("consistency test (batch 1 vs batched, shuffled, repeated rows)")
    exact = runner(ctx.session, ctx.info, chunk=1 << 30)
    started = time.perf_counter()
    report = ctx.report
    shape = tuple(ctx.info.input_shape)
    sizes, batch_cap = batch_sizes_for(DEFAULT_BATCH_SIZES, chunk_rows(shape), int(np.prod(shape)))
    try:
        result = consistency_test(ctx.probe.inputs, exact, settings=ConsistencySettings(batch_sizes=sizes),
                                  seed=ctx.settings.seed)
    except InferenceError as error:
        report.findings.append(
            Finding(
                "batch-dependent-outputs", "high", f"the model runs on some batch sizes and fails on others: {error}",
                "do not use this model; it behaves differently depending on how it is called", "input",
            )
        )
        return TestResult("consistency", "failed", reason=str(error), seconds=time.perf_counter() - started)
    result.batch_cap = batch_cap
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
        "consistency", "ran", score=result.max_difference, flagged=not result.consistent,
        seconds=time.perf_counter() - started, details=result.to_dict(),
    )


def run_precision(ctx: VetContext) -> TestResult:
    """Float32 onnxruntime vs the graph re-evaluated in float64, on clean and off-grid probe images."""
    ctx.say("precision check (float32 onnxruntime vs a float64 re-evaluation)")
    images = ctx.probe.images
    rng = np.random.default_rng([ctx.augment_seed, 64])
    scale = scaler(ctx.info)
    # Only precision_rows rows of each view are re-evaluated: draw them first, then scale and augment just those
    # (for 1000 224x224 RGB images, two full-probe copies would be 1.2 GB for 48 rows' worth of checks).
    rows, row_cap = rows_per_view(ctx.settings.precision_rows, int(np.prod(images.shape[1:])))
    subset = images[np.sort(rng.choice(len(images), min(rows, len(images)), replace=False))]
    views = {"clean": scale(subset), "off-grid": scale(audit_target(images).augment(subset, 1, rng)[0])}
    result = precision_check(ctx.loaded.proto, views, ctx.run_inputs, rows=rows, seed=ctx.settings.seed)
    result.row_cap = row_cap
    if not result.ran:
        return TestResult("precision", "skipped", reason=result.reason, seconds=result.seconds, details=result.to_dict())
    test = scored("precision", result.max_difference, result.to_dict(), ctx.table, result.seconds)
    limits = entry(ctx.table, "precision")
    if result.max_difference > float(limits["threshold"]):
        hard = result.max_difference > float(limits.get("hard", float("inf")))
        ctx.report.findings.append(
            Finding(
                "precision-dependent-outputs",
                "high",
                f"the outputs change by {result.max_difference:.3g} of their scale when the graph is evaluated in "
                f"float64 instead of float32 ({result.engine}), far beyond float error: the graph relies on float32 "
                "rounding (a magic-number rounding, a 16-bit cast, a lattice snap)"
                + (" to compute its outputs" if hard else ""),
                "do not use this model; an honest classifier does not depend on float32 rounding",
                "output",
            )
        )
    return test


def run_continuity(ctx: VetContext) -> TestResult:
    ctx.say("continuity test (sub-quantum dither, 8-bit re-quantisation, 1% brightness)")
    try:
        details = continuity_test(
            ctx.probe.images, ctx.run_images, task_type=ctx.info.task_type, rows=ctx.settings.continuity_rows,
            seed=ctx.settings.seed,
        )
    except InferenceError as error:
        return TestResult("continuity", "failed", reason=str(error))
    test = scored("continuity", details["jump_ratio"], details, ctx.table, details["seconds"])
    if test.flagged:
        ctx.report.findings.append(
            Finding(
                "output-discontinuity",
                "high",
                f"the outputs jump under a change of the input below one grey level (ratio {details['jump_ratio']:.3g} "
                "to the change under a 1% brightness step): the model switches on the 8-bit pixel grid",
                "do not use this model; an honest network moves smoothly with its input",
                "input",
            )
        )
    return test


def run_finetune(ctx: VetContext) -> TestResult:
    settings, probe, info, table = ctx.settings.finetune, ctx.probe, ctx.info, ctx.table
    needed = settings.train_samples + settings.eval_samples
    if len(probe) < needed and len(probe) - settings.train_samples >= MIN_FINETUNE_EVAL:
        # a 1000-image probe: evaluate on what is left after the fine-tuning samples (said in the details)
        settings = dataclasses.replace(settings, eval_samples=len(probe) - settings.train_samples)
    elif len(probe) < needed:
        return TestResult(
            "finetune", "skipped", higher_is_vicious=bool(table["tests"]["finetune"]["higher_is_vicious"]),
            reason=f"probe set too small: the fine-tune test needs {settings.train_samples} samples to fine-tune on "
            f"and at least {MIN_FINETUNE_EVAL} held out, got {len(probe)}",
        )
    try:
        import torch
    except ImportError:
        return TestResult("finetune", "skipped", reason="torch is not installed (pip install 'edgeguard[torch]')")
    from edgeguard.onnx_torch import to_torch

    started = time.perf_counter()
    ctx.say(f"fine-tune test ({settings.optimiser}, lr {settings.learning_rate}, {settings.steps} steps of {settings.batch_size})")
    try:
        module = to_torch(ctx.loaded.proto)
    except UnsupportedOpError as error:
        return TestResult("finetune", "skipped", reason=f"unsupported by the fine-tune interpreter: {_short(error)}")
    except (ModelLoadError, EdgeguardError) as error:
        return TestResult("finetune", "failed", reason=f"the fine-tune interpreter could not load the model: {error}")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    outputs = ctx.outputs
    try:
        with torch.no_grad():
            sample = min(len(probe), 64)
            mine = module(torch.as_tensor(probe.inputs[:sample])).double().numpy()
        scale = max(1.0, float(np.abs(outputs[:sample]).max()))
        diff = float(np.abs(mine - outputs[:sample]).max())
        if not diff <= _PARITY_TOLERANCE * scale:
            return TestResult(
                "finetune", "skipped", reason=f"the fine-tune interpreter disagrees with onnxruntime (max abs diff {diff:.3g})",
                details={"interpreter_max_abs_diff": diff},
            )
        details = finetune_test(
            module, probe.inputs, probe.labels, output_kind=info.output_kind, task_type=info.task_type,
            settings=settings, seed=ctx.settings.seed,
        )
    except EdgeguardError as error:
        return TestResult("finetune", "failed", reason=str(error))
    except RuntimeError as error:  # torch errors while running the interpreted graph
        return TestResult("finetune", "failed", reason=f"the fine-tune run failed: {error}")
    finally:
        torch.set_num_threads(threads)
    details["interpreter_max_abs_diff"] = diff
    _against_twin(ctx, details, settings)
    calibrated = table["tests"]["finetune"].get("statistic", "cosine")
    if settings.statistic != calibrated:
        return TestResult(
            "finetune", "ran", score=float(details.pop("score")), higher_is_vicious=STATISTICS[settings.statistic],
            reason=f"no threshold for statistic {settings.statistic!r} (calibrated: {calibrated!r}); not used",
            seconds=time.perf_counter() - started, details=details,
        )
    return scored("finetune", details.pop("score"), details, table, time.perf_counter() - started)


#: Fine-tune statistics compared with the honest twin's (ratio model / twin), issue 17 item 8.
TWIN_STATISTICS = ("loss_decrease_per_shift", "shift_per_gradient_norm", "output_shift", "cosine")


def _against_twin(ctx: VetContext, details: dict[str, Any], settings: Any) -> None:
    """The same fine-tune on the trained twin: each statistic's ratio model / twin (informational).

    Across architectures ``loss_decrease_per_shift`` differs by 10x, so it only means
    something next to an honest model of the same architecture: a vicious model's is lower.
    """
    if ctx.twin_module is None:
        details["twin"] = "no trained twin (the leakage check did not build one)"
        return
    try:
        twin = finetune_test(
            ctx.twin_module, ctx.probe.inputs, ctx.probe.labels, output_kind=ctx.info.output_kind,
            task_type=ctx.info.task_type, settings=settings, seed=ctx.settings.seed,
        )
    except (EdgeguardError, RuntimeError) as error:
        details["twin"] = f"the fine-tune of the twin failed: {_short(error)}"
        return
    details["twin"] = {name: twin.get(name) for name in TWIN_STATISTICS}
    details["ratio_to_twin"] = {
        name: (details[name] / twin[name]) if twin.get(name) not in (None, 0.0) and name in details else None
        for name in TWIN_STATISTICS
    }


def finetune_findings(ctx: VetContext) -> None:
    test = ctx.report.tests["finetune"]
    parity = test.details.get("interpreter_max_abs_diff")
    if test.status == "skipped" and parity is not None:
        ctx.report.findings.append(
            Finding(
                "interpreter-mismatch", "high",
                f"the fine-tune interpreter and onnxruntime disagree on this model (max abs diff {parity:.3g})",
                "the fine-tune test was skipped; report the model to the edgeguard maintainers", str(ctx.path),
            )
        )
    if test.reason.startswith("unsupported"):
        ctx.report.findings.append(
            Finding("finetune-unsupported", "medium", test.reason,
                    "the verdict rests on the other checks; ask for a standard-operator export", str(ctx.path))
        )


def _short(error: Exception) -> str:
    """The 'got ...' part of an "expected X, got Y; fix" message (the list of supported ops is long)."""
    text = str(error)
    if "got " in text:
        text = "got " + text.split("got ", 1)[1]
    return text.split(";", 1)[0]
