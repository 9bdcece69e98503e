"""Rung 3 of the attacker ladder: a classifier and decoder trained through the filter, scored on the bench's split.

Training is :mod:`edgeguard.bench.ladder` (an attack trainer found by entry point, run as cached
jobs); this module releases each trained classifier's outputs on the evaluation images through
the real filter and scores its decoder's reconstructions.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np

from edgeguard.bench.attack import _pick_rank
from edgeguard.bench.common import decoder_rows, labels_of, leakage, risk, run_batched, session
from edgeguard.bench.context import BenchContext
from edgeguard.bench.ladder import RungResult, ThroughSettings, run_through_filter, training_images, training_split
from edgeguard.filters import FilterPipeline
from edgeguard.model import ModelInfo, load_model

__all__ = ["NAME", "measure_all", "resolve", "DESCRIPTION"]

NAME = "through"
DESCRIPTION = (
    "a classifier and decoder trained with the filter in the loop by the attack trainer (straight-through "
    "estimators for rounding/top-k/argmax, noise drawn fresh every step), its outputs released through "
    "the real edgeguard filter on the evaluation images and decoded by its own decoder"
)


def resolve(context: BenchContext) -> tuple[ThroughSettings, str, list[str]]:
    """Rung 3's settings with its data resolved, the budget really used (a sentence) and warnings.

    Without ``through.data`` rung 3 trains on the bench data's training split when it has one
    (an IDX folder), else on the attacker split.
    """
    through = context.settings.through
    data = through.data or training_split(context.data_path)
    through = dataclasses.replace(through, data=data)
    if data is None:
        available, source = len(context.attack.x), f"the bench's attacker split ({len(context.attack.x)} images)"
    else:
        available, source = training_images(data), f"the training data {data}"
    limit = through.train_limit
    warnings = []
    if available is None:
        used = "all" if limit is None else f"at most {limit}"
    elif limit is not None and limit > available and through.enabled:
        used = str(available)
        warnings.append(
            f"rung 3: --through-train-limit {limit} exceeds the {available} training images of {source}: it "
            f"trained on {available}; pass --through-data with more images or a lower limit"
        )
    else:
        used = str(available if limit is None else min(limit, available))
    extra = f", {json.dumps(through.extra, sort_keys=True)}" if through.extra else ""
    return through, f"{through.epochs} epoch(s) on {used} images of {source}{extra}", warnings


def measure_all(context: BenchContext, seeds: dict[str, int]) -> tuple[dict[str, RungResult], str, str]:
    """Train (or reuse) one attacker per spec and score it: ({spec text: result}, trainer message, budget used)."""
    through, budget, warnings = resolve(context)
    for warning in warnings:
        print(f"[bench] warning: {warning}", file=sys.stderr, flush=True)
        context.notes.append(warning[0].upper() + warning[1:] + ".")
    if through.enabled:
        context.log(f"rung 3 (trained through the filter): {budget}")
    trained, message = run_through_filter(
        context.specs,
        through,
        attacker_images=context.attack.x,
        attacker_labels=context.attack.y,
        class_names=getattr(context.dataset, "class_names", None) or context.info.class_names,
        seed=context.settings.seed,
        threads=context.settings.threads,
        progress=context.progress,
    )
    results = {spec.text: _score(context, trained[spec.text], spec, seeds[spec.text]) for spec in context.specs}
    return results, message, budget


def _score(context: BenchContext, trained: Any, spec: Any, seed: int) -> RungResult:
    """Score the attacker trained through ``spec``: its model's release through the real filter, decoded."""
    if isinstance(trained, str):
        return RungResult(trained)
    status, classifier_path, decoder_path, seconds = trained
    evaluation, validation = context.evaluation, context.validation
    threads = context.settings.threads
    try:
        classifier_proto = load_model(classifier_path).proto
        decoder_proto = load_model(decoder_path, allow_dynamic_ops=True, require_info=False).proto
        info = ModelInfo.from_model(classifier_proto)
        classifier = session(classifier_proto, threads, "classifier trained through the filter")
        decoder = session(decoder_proto, threads, "decoder trained through the filter")
        pipeline = None
        if not spec.is_raw:  # bound to the trained classifier's own output kind
            pipeline = FilterPipeline(spec.build(), input_kind=info.output_kind, task_type=info.task_type)

        def reconstruct(model_images: np.ndarray, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
            raw = run_batched(classifier, model_images)
            release = raw if pipeline is None else pipeline(raw, np.random.default_rng(rng_seed), inputs=model_images)
            return release, run_batched(decoder, decoder_rows(release, info.num_classes))

        release, recon = reconstruct(evaluation.model_x, seed + 3)
        if tuple(recon.shape[1:]) != tuple(evaluation.x.shape[1:]):
            return RungResult(f"not run: the trained decoder makes images of shape {tuple(recon.shape[1:])}")
        _, validation_recon = reconstruct(validation.model_x, seed + 4)
    except Exception as error:  # a trainer's files that do not fit: say so, keep the other rungs
        return RungResult(f"not run: its files could not be evaluated ({type(error).__name__}: {str(error)[:200]})")
    recon = np.clip(recon, 0.0, 1.0).astype(np.float32)
    psnr_value, ssim_value, _ = leakage(evaluation.x, recon, None)
    value = float("nan")
    projector, reference = context.projector, context.reference
    if projector is not None and reference is not None:
        rank = _pick_rank(
            np.clip(validation_recon, 0, 1),
            validation.x,
            projector,
            reference,
            context.settings.attack.projection_ranks,
        )
        value = risk(evaluation.x, projector.project(recon, rank), reference)
    accuracy = float(np.mean(labels_of(release) == evaluation.y))
    return RungResult(status, psnr_value, ssim_value, value, accuracy, seconds, recon)
