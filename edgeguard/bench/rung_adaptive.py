"""Rung 2 of the attacker ladder: the server's decoder refitted on filtered outputs (:mod:`edgeguard.bench.attack`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeguard.bench.attack import AttackData, AttackResult, AttackSettings, adaptive_attack
from edgeguard.bench.common import labels_of, leakage, risk
from edgeguard.bench.context import BenchContext
from edgeguard.bench.releases import SpecRelease

__all__ = ["NAME", "measure", "describe"]

NAME = "adaptive"


def measure(
    context: BenchContext, released: SpecRelease, server_eval: np.ndarray
) -> tuple[tuple[float, float, float, Any], AttackResult]:
    """((PSNR, SSIM, R, reconstructions), the attack) of the adaptive attacker on ``released``.

    ``server_eval``: rung 1's reconstructions of the evaluation images (a candidate of the attacker).
    """
    mapping, domain, seed = context.mapping, released.domain, released.seed
    train, validation = context.train, context.validation
    random = released.random

    def train_inputs(epoch: int) -> np.ndarray:
        return mapping(released.filtered(train.raw, train.model_x, seed + 1 + (epoch if random else 0)), domain)

    validation_release = released.filtered(validation.raw, validation.model_x, seed + 10_007)
    validation_inputs = mapping(validation_release, domain)
    attack = adaptive_attack(
        context.decoder_proto,
        AttackData(
            train_inputs=train_inputs,
            train_images=train.x,
            train_labels=train.y,
            native_inputs=context.native_train,
            validation_inputs=validation_inputs,
            validation_images=validation.x,
            validation_groups=labels_of(validation_release),
            eval_inputs=mapping(released.release, domain),
            eval_groups=labels_of(released.release),
            server_validation=context.decode(validation_inputs),
            server_eval=server_eval,
        ),
        settings=context.settings.attack,
        projector=context.projector,
        reference=context.reference,
        seed=seed % (2**31),
        threads=context.settings.threads,
    )
    psnr, ssim, _ = leakage(context.evaluation.x, attack.reconstructions, None)
    value = risk(context.evaluation.x, attack.projected, context.reference)
    return (psnr, ssim, value, attack.reconstructions), attack


def describe(settings: AttackSettings, attacker_kind: str, asked: str) -> tuple[str, str | None]:
    """(How the adaptive attacker works, a note when it could not fine-tune or None)."""
    candidates = (
        f"the server's decoder as trained, a k-NN decoder (k = {settings.neighbours}) on standardised mapped "
        "outputs and the label-only guess (mean attacker image of the released top-1 class)"
    )
    note = None
    if attacker_kind == "knn":
        reason = "torch is not installed" if asked == "auto" else "attacker='knn' was asked for"
        note = (
            f"The adaptive attacker did not fine-tune the server's decoder because {reason}: it chose among {candidates} "
            "only; with torch a fine-tuned decoder is a candidate too (stronger)."
        )
        description = f"the best, by held-out MSE, of {candidates} (no fine-tuning: {reason})"
    else:
        description = (
            "the best, by held-out MSE, of: the server's decoder (decoder.onnx through "
            "edgeguard.onnx_torch.to_torch) behind a trainable per-feature affine input layer, fine-tuned with "
            "Adam on MSE over (mapped filtered output, image) pairs with noise re-drawn every epoch (the epoch with the "
            f"lowest held-out MSE kept); {candidates}"
        )
    description += (
        "; PSNR and SSIM of the winner's reconstructions, R of the same projected onto the top-k principal "
        "components of the attacker's images, k chosen on the held-out images to maximise R (choices "
        f"{list(settings.projection_ranks)} or no projection)"
    )
    return description, note
