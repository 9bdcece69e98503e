"""Rung 1 of the attacker ladder: the server's decoder as trained, run by onnxruntime on the mapped release."""

from __future__ import annotations

from edgeguard.bench.common import leakage
from edgeguard.bench.context import BenchContext
from edgeguard.bench.releases import SpecRelease

__all__ = ["NAME", "measure"]

NAME = "server"


def measure(context: BenchContext, released: SpecRelease) -> tuple[float, float, float, object]:
    """(PSNR, SSIM, R, reconstructions) of the decoder as trained on ``released`` (the evaluation images)."""
    reconstructions = context.decode(context.mapping(released.release, released.domain))
    psnr, ssim, risk = leakage(context.evaluation.x, reconstructions, context.reference)
    return psnr, ssim, risk, reconstructions
