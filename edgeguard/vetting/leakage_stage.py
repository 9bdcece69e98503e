"""The leakage check of the vet: the v3 audit of the model, of its honest twin, and of a release."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from edgeguard.errors import EdgeguardError, InferenceError
from edgeguard.verdicts.rule import accuracy_adjustment
from edgeguard.vetting.accuracy import output_head, recoverable_accuracy
from edgeguard.vetting.audit import audit_model, make_views, summarise
from edgeguard.vetting.checks import scored
from edgeguard.vetting.context import VetContext
from edgeguard.vetting.large_inputs import describe
from edgeguard.vetting.report import Finding, TestResult
from edgeguard.vetting.running import head_inputs
from edgeguard.vetting.twin import build_twins

__all__ = ["run_leakage", "run_release", "ABSOLUTE_ENTRY", "TWIN_ENTRY", "SUPPLIED_ENTRY"]

#: Thresholds entries: the maximum gain without a twin (decides "vicious" only), and the excess over a twin.
ABSOLUTE_ENTRY, TWIN_ENTRY, SUPPLIED_ENTRY = "leakage_gain_max", "leakage_excess_twin", "leakage_excess"
#: How ``details.accuracy_gap`` is measured (model minus twin), said in every report.
ACCURACY_MEASURE = (
    "recoverable accuracy: the best of top-1, cross-validated linear and kNN label probes on the outputs and a "
    "linear probe on the input of the last dense layer; trusted only when nothing but an affine map or a "
    "normalisation follows that layer (edgeguard.vetting.accuracy)"
)
#: Older thresholds tables name these entries differently: the first one present is used.
_FALLBACKS = {
    ABSOLUTE_ENTRY: (ABSOLUTE_ENTRY, "leakage"),
    TWIN_ENTRY: (TWIN_ENTRY, "leakage_excess_trained", "leakage_excess", "leakage"),
    SUPPLIED_ENTRY: (TWIN_ENTRY, SUPPLIED_ENTRY, "leakage"),  # one margin for the excess over any honest twin
}


def _present(table: dict[str, Any], name: str) -> str:
    return next((n for n in _FALLBACKS[name] if n in table["tests"]), "leakage")


def _median_twin(audits: list[Any]) -> int:
    gains = [max(a.gains().values()) for a in audits]
    return int(np.argsort(gains)[len(gains) // 2])


def run_leakage(ctx: VetContext, model_accuracy: float) -> TestResult:
    settings = ctx.settings.leakage
    probe = ctx.probe
    if len(probe) < settings.min_samples:
        return TestResult(
            "leakage", "skipped",
            reason=f"probe set too small: the leakage audit needs at least {settings.min_samples} images, got {len(probe)}",
        )
    started = time.perf_counter()
    views = make_views(probe.images, ctx.augment_seed, settings.augmentations)
    details_target = views.target.to_dict()
    ctx.say(f"leakage audit ({len(probe)} images x {len(views.kinds)} views; decoders {', '.join(settings.decoders)})")
    try:
        mine = audit_model(ctx.run_images, views, probe.labels, task_type=ctx.info.task_type, settings=settings,
                           seed=ctx.settings.seed, clean_outputs=ctx.outputs)
    except (InferenceError, EdgeguardError) as error:
        return TestResult("leakage", "failed", reason=str(error), seconds=time.perf_counter() - started)
    head = output_head(ctx.loaded.proto)
    head_values = head_inputs(ctx.loaded.proto, head, probe.inputs)
    recoverable = recoverable_accuracy(
        ctx.outputs, probe.labels, task_type=ctx.info.task_type, seed=ctx.settings.seed, head=head_values
    )
    twins, records, missing = build_twins(ctx, recoverable["accuracy"])
    twin_audits, usable = [], []
    for twin in twins:
        ctx.say(f"leakage audit of the {twin.kind} twin")
        try:
            twin_audits.append(audit_model(twin.run_images, views, probe.labels, task_type=ctx.info.task_type,
                                           settings=settings, seed=ctx.settings.seed))
            usable.append(twin)
        except Exception as error:  # noqa: BLE001 - a twin that cannot be run is no twin (said in the report)
            twin.record["used"] = False
            twin.record["error"] = f"the twin could not be audited: {type(error).__name__}"
            missing = "; ".join(filter(None, [missing, twin.record["error"]]))
    twins = usable
    chosen = _median_twin(twin_audits) if twin_audits else None
    summary = summarise(
        mine, twin_audits[chosen] if chosen is not None else None, rounds=settings.bootstrap, seed=ctx.settings.seed,
        gap_margin_db=settings.gap_margin_db,
    )
    details: dict[str, Any] = dict(summary)
    details["twins"] = records
    details["augment_seed"] = ctx.augment_seed
    details["samples"] = len(probe)
    details["target"] = details_target["name"]
    if views.large:  # the cheaper path for large images, said in the report
        details["large_input"] = describe(probe.images)
    _kind_findings(ctx, mine.simplex)
    if chosen is not None:
        twin = twins[chosen]
        ctx.twin_module = twin.module
        details.update(statistic="excess_gain_db", twin=twin.record, model_accuracy=model_accuracy)
        if isinstance(twin.record.get("recoverable_accuracy"), float):  # the decision adjusts for it (verdicts.rule)
            details.update(
                twin_accuracy=twin.record["accuracy"],
                model_recoverable_accuracy=recoverable["accuracy"],
                twin_recoverable_accuracy=twin.record["recoverable_accuracy"],
                model_accuracy_probes=recoverable,
                accuracy_gap=recoverable["accuracy"] - twin.record["recoverable_accuracy"],
                accuracy_measure_trusted=head.trusted and (head.value is None or head_values is not None),
                accuracy_head=head.to_dict(),
                accuracy_measure=ACCURACY_MEASURE,
            )
        entry_name = SUPPLIED_ENTRY if twin.kind == "supplied" else TWIN_ENTRY
        score, ci = summary["excess_gain_db"], summary["excess_ci95_db"]
    else:
        details.update(statistic="gain_db", twin_missing_reason=missing)
        entry_name, score, ci = ABSOLUTE_ENTRY, summary["gain_db"], summary["gain_ci95_db"]
    if summary["gap_flagged"]:
        low, high = summary["clean_minus_augmented_ci95_db"]
        ctx.report.findings.append(
            Finding(
                "deployment-gap",
                "medium",  # the statistic already keeps the worse view; this says which one and by how much
                f"the outputs of clean (8-bit) images leak {summary['clean_minus_augmented_db']:.2f} dB more than those "
                f"of augmented copies (95% interval [{low:.2f}, {high:.2f}]): the model behaves differently on the "
                "images an app will feed it",
                "do not release more than the label from this model",
                "output",
            )
        )
    note = _calibration_note(settings, ctx.table)
    if note:
        details["calibration_note"] = note
    entry_name = _present(ctx.table, entry_name)
    result = scored("leakage", score, details, ctx.table, time.perf_counter() - started, entry_name, tuple(ci))
    entry = (ctx.table.get("tests") or {}).get(entry_name) or {}
    to_convict, to_pass = accuracy_adjustment(entry, details)
    if to_convict or to_pass:  # flagged as the decision will see it: the lower bound raised for the accuracy lead
        details["accuracy_adjustment_db"] = [to_convict, to_pass]
        result.flagged = bool(entry.get("higher_is_vicious", True)) and ci[0] + to_convict > float(entry["threshold"])
    return result


def _kind_findings(ctx: VetContext, simplex: bool) -> None:
    declared = ctx.info.output_kind
    if ctx.info.task_type == "multiclass" and simplex != (declared == "probabilities"):
        ctx.report.findings.append(
            Finding(
                "output-kind-mismatch",
                "medium",
                f"the metadata says {declared}, but the output rows {'are' if simplex else 'are not'} probability "
                "vectors: the audit decided the form from the values",
                "correct the model's output_kind metadata (filters that assume the declared form may misbehave)",
                "output",
            )
        )


def run_release(ctx: VetContext, spec: Any) -> dict[str, Any]:
    """Leakage of exactly what SafeModel releases with ``spec``, next to the raw outputs and the capacity bound."""
    from edgeguard.filters import FilterPipeline

    info, report = ctx.info, ctx.report
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
    rng = np.random.default_rng([ctx.augment_seed, 3])
    settings = ctx.settings.leakage
    views = make_views(ctx.probe.images, ctx.augment_seed, settings.augmentations)
    try:
        audit = audit_model(
            lambda x: np.asarray(pipeline(ctx.run_images(x).astype(np.float32), rng), dtype=np.float64),
            views, ctx.probe.labels, task_type=info.task_type, settings=settings, seed=ctx.settings.seed,
        )
    except EdgeguardError as error:
        record["error"] = str(error)
        return record
    summary = summarise(audit, rounds=settings.bootstrap, seed=ctx.settings.seed)
    record.update(gain_db=summary["gain_db"], gain_ci95_db=summary["gain_ci95_db"])
    return record


def _calibration_note(settings: Any, table: dict[str, Any]) -> str:
    """Which audit settings differ from the ones the thresholds were calibrated with ("" when none)."""
    import dataclasses

    calibrated = (table.get("audit") or {}).get("settings") or {}
    mine = dataclasses.asdict(settings)
    differ = {}
    for key, value in calibrated.items():
        if key in mine:
            own = list(mine[key]) if isinstance(mine[key], tuple) else mine[key]
            if own != value:
                differ[key] = (own, value)
    if not differ:
        return ""
    return "thresholds calibrated with other audit settings: " + ", ".join(
        f"{k}={a!r} (calibrated {b!r})" for k, (a, b) in differ.items()
    )
