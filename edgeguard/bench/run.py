"""``run_bench``: latency, accuracy and leakage of every output-filter configuration on one model.

For each filter spec the bench builds a :class:`~edgeguard.SafeModel` with those filters and
measures, on a seeded split of the data into an *evaluation* part and a disjoint
*attacker* part (:mod:`edgeguard.bench.context`):

- latency of ``SafeModel.predict`` against a raw onnxruntime session (batch 1,
  interleaved, :mod:`edgeguard.bench.latency_stage`);
- accuracy of the release (top-1 of the released rows, or the released label);
- leakage (PSNR, SSIM and the reconstruction risk R of :mod:`edgeguard.metrics`, with the
  Mahalanobis reference fitted on the attacker's images) against the attacker ladder, one
  module per rung: (1) the server's decoder as trained, run by onnxruntime on the mapped
  release (:mod:`edgeguard.bench.rung_server`, :mod:`edgeguard.bench.mapping`); (2) an
  adaptive attacker who knows the filter (:mod:`edgeguard.bench.rung_adaptive`); (3) a
  classifier + decoder trained through the filter (:mod:`edgeguard.bench.rung_through`, an
  attack trainer found by entry point, run as cached jobs), with the accuracy of that
  model's release; (4) a hand-built code that survives the filter (:mod:`edgeguard.bench.rung_codes`,
  no training), with the bits per row it actually carries; the worst case over the rungs is
  the row's measured leakage;
- task utility: top-1 and top-3 accuracy, and how well the released confidence tells
  right from wrong labels (AUROC);
- for every noise filter, fresh and consistent, leakage when R releases of the same
  input are averaged (:mod:`edgeguard.bench.repeats_experiment`);

next to the label-only baseline (per-class mean attacker image of the predicted class).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import edgeguard.bench.rung_adaptive as rung_adaptive
import edgeguard.bench.rung_codes as rung_codes
import edgeguard.bench.rung_server as rung_server
import edgeguard.bench.rung_through as rung_through
from edgeguard.bench.common import bar, labels_of, machine, seeds
from edgeguard.bench.context import MAX_RISK_PIXELS, BenchContext
from edgeguard.bench.latency_stage import WARMUP, latency_of_all, rounds
from edgeguard.bench.releases import SpecRelease, release_of
from edgeguard.bench.repeats_experiment import run_repeats, sizes
from edgeguard.bench.report import BenchReport, BenchRow
from edgeguard.bench.settings import BenchSettings
from edgeguard.bench.vector_report import VectorBenchReport
from edgeguard.data import Dataset
from edgeguard.errors import ConfigError
from edgeguard.filters import OutputDomain
from edgeguard.filters.spec import FilterSpec
from edgeguard.model import ModelInfo, load_model
from edgeguard.vectors import DEFAULT_LABEL_COLUMN, VectorSet

__all__ = ["run_bench", "MAX_RISK_PIXELS", "DecoderRequiredError"]


class DecoderRequiredError(ConfigError):
    """An image model was benched without the server's decoder (the CLI turns it into a usage error)."""


def run_bench(
    model: str | os.PathLike,
    decoder: str | os.PathLike | None,
    data: Dataset | VectorSet | str | os.PathLike,
    filters: str | Sequence[str | FilterSpec] | None = None,
    settings: BenchSettings | None = None,
    *,
    progress: bool = True,
    command: str | None = None,
    label_column: str = DEFAULT_LABEL_COLUMN,
) -> BenchReport | VectorBenchReport:
    """Benchmark every filter configuration in ``filters`` on ``model`` with the server's ``decoder``.

    ``model``: the classifier ONNX (a multiclass model; its metadata says logits or
    probabilities). ``decoder``: the server's decoder ONNX (raw classifier output (N, K) ->
    images (N, C, H, W) in [0, 1]). ``data``: a labelled :class:`~edgeguard.data.Dataset`
    or a path :func:`~edgeguard.data.load_dataset` reads (an IDX folder: its test files).
    ``filters``: specs (:mod:`edgeguard.filters.spec`; strings, ';'-separated strings or
    :class:`FilterSpec`), None = :func:`default_filter_specs` for the model's output kind.
    ``settings``: budgets and seeds (:class:`~edgeguard.bench.settings.BenchSettings`; None =
    its defaults). Progress goes to stderr (tqdm) when ``progress``; ``command`` is recorded.

    A model whose input is a vector (N, F) or a sequence (N, T, F) is benched by
    :func:`edgeguard.bench.vector_run.run_vector_bench` and gives a
    :class:`~edgeguard.bench.vector_report.VectorBenchReport`: ``data`` is then a
    :class:`~edgeguard.vectors.VectorSet` or an ``.npz`` / ``.csv`` / ``.parquet`` file (the
    label column named by ``label_column``), ``decoder`` is optional (None: the post-hoc
    attackers only), and the image-only parts are skipped with their reasons in the report.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    settings = BenchSettings() if settings is None else settings
    if not isinstance(settings, BenchSettings):
        raise ConfigError(f"expected settings to be a BenchSettings, got {type(settings).__name__}")
    if ModelInfo.from_model(load_model(model).proto).input_kind != "image":
        from edgeguard.bench.vector_run import run_vector_bench

        return run_vector_bench(
            model,
            data,
            filters,
            settings,
            decoder=decoder,
            label_column=label_column,
            progress=progress,
            command=command,
        )
    if decoder is None:
        raise DecoderRequiredError(
            "expected the server's decoder for an image model, got none; pass decoder='decoder.onnx' (CLI --decoder)"
        )
    attacker_kind = settings.attack.resolved_attacker()
    machine_facts = machine(settings.threads)
    context = BenchContext.prepare(model, decoder, data, filters, settings, progress)
    latency = latency_of_all(context)

    # --- rungs 1 and 2, accuracy and utility per configuration ----------------------------------
    rows: list[BenchRow] = []
    rungs_of: dict[str, dict[str, Any]] = {}
    spec_seeds = dict(zip((spec.text for spec in context.specs), seeds(settings.seed, len(context.specs))))
    progress_bar = bar(len(context.specs), "filters", progress)
    for spec in context.specs:
        progress_bar.set_postfix_str(spec.text)
        released = release_of(context, spec, spec_seeds[spec.text])
        row, rungs = _measure_spec(context, released, latency[spec.text])
        rows.append(row)
        rungs_of[spec.text] = rungs
        progress_bar.update(1)
    progress_bar.close()

    # --- repeated queries: averaging R releases of one input, fresh against consistent noise ------
    repeat_rows = run_repeats(context)

    # --- rung 3: attackers trained through each filter (cached jobs; run last, they take longest) ------
    through_results, trainer_message, through_budget = rung_through.measure_all(context, spec_seeds)
    for row in rows:
        result = through_results[row.filter]
        row.through_status, row.through_accuracy, row.through_seconds = result.status, result.accuracy, result.seconds
        row.through_psnr, row.through_ssim, row.through_risk = result.psnr, result.ssim, result.risk
        if result.ran:
            row.through_examples = result.reconstructions[: context.grid]
            rungs_of[row.filter][rung_through.NAME] = (
                result.psnr,
                result.ssim,
                result.risk,
                result.reconstructions[: context.grid],
            )
            row.set_worst(rungs_of[row.filter], context.base)

    # --- rung 4: hand-built codes (no training) ------------------------------------------------------------
    code_results, code_message = rung_codes.measure_all(context, spec_seeds)
    for row in rows:
        code = code_results[row.filter]
        row.codes_status, row.codes_code = code.status, code.code
        row.codes_payload_bits, row.codes_bits_carried = code.payload_bits, code.bits_carried
        row.codes_accuracy, row.codes_psnr, row.codes_ssim, row.codes_risk = (
            code.accuracy,
            code.psnr,
            code.ssim,
            code.risk,
        )
        if code.ran:
            row.codes_examples = code.reconstructions[: context.grid]
            rungs_of[row.filter][rung_codes.NAME] = (code.psnr, code.ssim, code.risk, row.codes_examples)
            row.set_worst(rungs_of[row.filter], context.base)

    description, note = rung_adaptive.describe(settings.attack, attacker_kind, settings.attacker)
    if note:
        context.notes.append(note)
    report_settings = _report_settings(context, started, command, attacker_kind, description, trainer_message, rows)
    report_settings["through"].update(
        budget=through_budget, data=rung_through.resolve(context)[0].data or "the bench's attacker split"
    )
    report_settings["codes"] = {
        "enabled": settings.codes.enabled,
        "builder": code_message,
        "validation_size": min(settings.codes.validation_size, context.n_validation),
        "max_accuracy_drop_points": rung_codes.MAX_ACCURACY_DROP,
        "run": sum(row.codes_status == "run" for row in rows),
        "description": rung_codes.DESCRIPTION,
    }
    base_psnr, base_ssim, base_risk = context.base
    return BenchReport(
        rows=rows,
        raw_accuracy=context.raw_accuracy,
        label_only={"psnr": base_psnr, "ssim": base_ssim, "risk": base_risk},
        settings=report_settings,
        machine=machine_facts,
        notes=context.notes,
        originals=context.evaluation.x[: context.grid],
        label_only_examples=context.label_only[: context.grid],
        repeats=repeat_rows,
    )


def _measure_spec(context: BenchContext, released: SpecRelease, stats: Any) -> tuple[BenchRow, dict[str, Any]]:
    """The row of one configuration with rungs 1 and 2 (rung 3 is added later) and its rungs' measurements."""
    grid, y_eval = context.grid, context.evaluation.y
    safe, release, domain = released.safe, released.release, released.domain
    accuracy = float(np.mean(labels_of(release) == y_eval))
    server = rung_server.measure(context, released)
    adaptive, attack = rung_adaptive.measure(context, released, server[3])
    base_psnr, _, base_risk = context.base
    rungs = {
        rung_server.NAME: (*server[:3], server[3][:grid]),
        rung_adaptive.NAME: (*adaptive[:3], adaptive[3][:grid]),
    }
    top3, auroc = _utility(release, y_eval, domain)
    row = BenchRow(
        filter=released.spec.text,
        stages=repr(list(safe.pipeline.filters)) if safe is not None else "[]",
        release=released.kind,
        decoder_input=context.mapping.rule(domain),
        capacity_bits=float(safe.capacity_bits) if safe is not None else float("inf"),
        random=released.random,
        accuracy=accuracy,
        accuracy_drop_points=100.0 * (context.raw_accuracy - accuracy),
        latency_us=stats.safe_us,
        raw_latency_us=stats.raw_us,
        latency_ratio=stats.ratio,
        server_psnr=server[0],
        server_ssim=server[1],
        server_risk=server[2],
        adaptive_psnr=adaptive[0],
        adaptive_ssim=adaptive[1],
        adaptive_risk=adaptive[2],
        adaptive_psnr_gain_db=adaptive[0] - base_psnr,
        adaptive_risk_vs_label_only=adaptive[2] / base_risk if base_risk else float("nan"),
        attack_decoder=attack.decoder,
        attack_best_epoch=attack.best_epoch,
        projection_rank=attack.projection_rank,
        top3_accuracy=top3,
        confidence_auroc=auroc,
        server_examples=server[3][:grid],
        adaptive_examples=attack.reconstructions[:grid],
    )
    row.set_worst(rungs, context.base)
    return row, rungs


def _utility(release: np.ndarray, labels: np.ndarray, domain: OutputDomain) -> tuple[float, float]:
    """(top-3 accuracy, AUROC of the released top-1 score for telling right from wrong top-1 labels).

    A label release names one class: its top-3 accuracy is its top-1 accuracy and its
    confidence carries nothing (AUROC 0.5).
    """
    release = np.asarray(release)
    if release.ndim == 1 or domain.kind == "labels":
        top1 = labels_of(release)
        return float(np.mean(top1 == labels)), 0.5
    order = np.argsort(-release, axis=1, kind="stable")[:, :3]
    top3 = float(np.mean((order == labels[:, None]).any(axis=1)))
    correct = release.argmax(axis=1) == labels
    if correct.all() or not correct.any():
        return top3, float("nan")
    from sklearn.metrics import roc_auc_score

    return top3, float(roc_auc_score(correct, release.max(axis=1)))


def _report_settings(
    context: BenchContext,
    started: datetime.datetime,
    command: str | None,
    attacker_kind: str,
    description: str,
    trainer_message: str,
    rows: list[BenchRow],
) -> dict[str, Any]:
    s, through = context.settings, context.settings.through
    return {
        "generated": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "edgeguard.bench.run_bench",
        "model": context.model,
        "decoder": context.decoder,
        "data": context.data_description,
        "output_kind": context.info.output_kind,
        "num_classes": context.num_classes,
        "seed": s.seed,
        "eval_size": s.eval_size,
        "attack_size": s.attack_size,
        "attack_train": s.attack_size - context.n_validation,
        "attack_validation": context.n_validation,
        "attack_epochs": s.attack_epochs,
        "attack_batch_size": s.attack_batch_size,
        "attack_learning_rate": s.attack_learning_rate,
        "attacker": attacker_kind,
        "attacker_description": description,
        "repeats": s.repeats,
        "warmup": WARMUP,
        "rounds": rounds(s.repeats),
        "threads": s.threads,
        "filters": [spec.text for spec in context.specs],
        "through": {
            "enabled": through.enabled,
            "budget": through.describe(),
            "epochs": through.epochs,
            "train_limit": through.train_limit,
            "data": through.data or "the bench's attacker split",
            "extra": dict(through.extra),
            "trainer": trainer_message,
            "run": sum(row.through_status in ("run", "cached") for row in rows),
            "cached": sum(row.through_status == "cached" for row in rows),
            "description": rung_through.DESCRIPTION,
        },
        "repeats_experiment": {"counts": list(s.repeat_counts), **sizes(context)},
        "wall_time_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
    }
