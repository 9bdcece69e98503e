"""Rung 4 of the attacker ladder: a hand-built code, the strongest that survives the release.

The codes are built outside edgeguard (the ``converters`` package registers
``hand_codes = "converters.attacks.codes:hand_code_kit"`` in the entry-point group
``edgeguard.attack_trainers``; edgeguard never imports it). Contract of the entry point::

    kit = hand_codes(num_classes)
    kit.candidates(release_kind) -> codes    # release_kind: logits | probabilities | scores | labels
    kit.quantiser(payload, radices, seed) -> q   # one codebook per top-1 class of the payload
    q.symbols(payload, labels), q.from_symbols(symbols, labels), q.payload_bits   # labels: the top-1 classes
    code.fit(raw); code.encode(raw, symbols) -> coded raw rows; code.decode(release, kind) -> symbols | None
    code.name, code.radices, code.bits

The payload is the model's own raw output (what the server's decoder turns into an image),
quantised to what the code carries. For every filter configuration the attacker tries every
candidate on its own images: the coded model's outputs (the code applied to the raw outputs)
go through a freshly built pipeline of the real filter, the server reads the symbols back
with exact arithmetic and decodes the de-quantised payload with its decoder (a code that
returns no symbols, like the label trade, is decoded as the mean attacker image of the
released label). It keeps the candidate with the best held-out PSNR among those that keep
accuracy within :data:`MAX_ACCURACY_DROP` points of the base model (the label-only guess if
none beats it), then measures that code on the evaluation images: PSNR / SSIM / R, the
accuracy of the release, and the *bits per row actually carried*: the payload bits times the
fraction of rows whose symbols came back exactly (for the label trade: one bit times the
fraction of traded rows).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.bench.common import bar, labels_of, leakage
from edgeguard.bench.context import BenchContext, Split
from edgeguard.bench.ladder import load_builder
from edgeguard.filters.spec import FilterSpec
from edgeguard.metrics import psnr

__all__ = ["NAME", "CodeResult", "measure_all", "DESCRIPTION", "MAX_ACCURACY_DROP"]

NAME = "codes"
#: A code may cost at most this many accuracy points (on the attacker's held-out images) against the base model.
MAX_ACCURACY_DROP = 0.5
DESCRIPTION = (
    "a hand-built code (no training): the model's own raw outputs, quantised to what the code carries, written "
    "into the outputs in a form the filter keeps (digits below a float's resolution, a lattice wider than the "
    "noise, the spacing of the non-top probabilities, the confidence level, the label on unsure rows), read back "
    "with exact arithmetic and decoded by the server's decoder; per filter the candidate with the best held-out "
    f"PSNR whose accuracy stays within {MAX_ACCURACY_DROP} points of the base model"
)


@dataclass
class CodeResult:
    """What rung 4 measured for one filter configuration (``status`` "run" or "not run: why")."""

    status: str
    code: str = ""
    payload_bits: float = float("nan")  # payload bits per row when the symbols come back exactly
    bits_carried: float = float("nan")  # bits per row actually carried on the evaluation images
    psnr: float = float("nan")
    ssim: float = float("nan")
    risk: float = float("nan")
    accuracy: float = float("nan")
    reconstructions: np.ndarray | None = None

    @property
    def ran(self) -> bool:
        return self.status == "run"


def measure_all(context: BenchContext, seeds: dict[str, int]) -> tuple[dict[str, CodeResult], str]:
    """Pick and measure a code per spec: ({spec text: result}, which builder ran or why none did)."""
    settings = context.settings.codes
    if not settings.enabled:
        return {spec.text: CodeResult("not run: rung 4 was switched off (--no-codes)") for spec in context.specs}, (
            "switched off"
        )
    builder, message = load_builder(settings.builder)
    if builder is None:
        return {spec.text: CodeResult(f"not run: {message}") for spec in context.specs}, message
    if context.info.output_kind != "logits":
        why = f"not run: the codes are built on logits, the model releases {context.info.output_kind}"
        return {spec.text: CodeResult(why) for spec in context.specs}, message
    rung = _Rung(context, builder(context.num_classes))
    results = {}
    progress_bar = bar(len(context.specs), "rung 4", context.progress)
    for spec in context.specs:
        progress_bar.set_postfix_str(spec.text)
        try:
            results[spec.text] = rung.measure(spec, seeds[spec.text])
        except Exception as error:  # a builder's code that does not fit: say so, keep the other rungs
            results[spec.text] = CodeResult(f"not run: the code failed ({type(error).__name__}: {str(error)[:200]})")
        progress_bar.update(1)
    progress_bar.close()
    return results, message


class _Rung:
    """Rung 4 on one bench context: quantisers cached by their bit budget, label-only fallbacks."""

    def __init__(self, context: BenchContext, kit: Any) -> None:
        self.context, self.kit = context, kit
        self.validation = context.validation.head(min(context.settings.codes.validation_size, context.n_validation))
        self.quantisers: dict[int, Any] = {}
        self.base_accuracy = float(np.mean(labels_of(self.validation.raw) == self.validation.y))

    def quantiser(self, radices: tuple[int, ...]) -> Any:
        bits = int(math.floor(sum(math.log2(r) for r in radices) + 1e-9))
        if bits not in self.quantisers:
            self.quantisers[bits] = self.kit.quantiser(
                self.context.train.raw, tuple(radices), self.context.settings.seed
            )
        return dataclasses.replace(self.quantisers[bits], radices=tuple(int(r) for r in radices))

    def run_code(self, code: Any, spec: FilterSpec, split: Split, seed: int) -> dict[str, Any]:
        """Encode, release through a fresh pipeline of ``spec``, decode; reconstructions and bookkeeping."""
        context = self.context
        quantiser = self.quantiser(code.radices)
        symbols = quantiser.symbols(split.raw, labels_of(split.raw))
        coded = code.encode(split.raw, symbols)
        pipeline = context.pipeline(spec) if not spec.is_raw else None
        release = coded if pipeline is None else pipeline(coded, np.random.default_rng(seed), inputs=split.model_x)
        kind = _kind(pipeline, context)
        decoded = code.decode(release, kind)
        if decoded is None:  # the label only: mean attacker image of the released label, fitted through the code
            means = self.label_means(code, spec, seed + 1)
            reconstructions = means[labels_of(release)]
            exact = np.asarray(code.unsure(split.raw)) if hasattr(code, "unsure") else np.zeros(len(split.raw), bool)
            carried = float(np.mean(exact)) * 1.0
        else:
            reconstructions = context.decode(quantiser.from_symbols(decoded, labels_of(release)))
            exact = (np.asarray(decoded) == symbols).all(axis=1)
            carried = quantiser.payload_bits * float(np.mean(exact))
        return {
            "release": release,
            "reconstructions": np.clip(reconstructions, 0.0, 1.0).astype(np.float32),
            "accuracy": float(np.mean(labels_of(release) == split.y)),
            "payload_bits": float(quantiser.payload_bits if decoded is not None else 1.0),
            "bits_carried": carried,
        }

    def label_means(self, code: Any, spec: FilterSpec, seed: int) -> np.ndarray:
        train = self.context.train
        quantiser = self.quantiser(code.radices)
        coded = code.encode(train.raw, quantiser.symbols(train.raw, labels_of(train.raw)))
        pipeline = self.context.pipeline(spec) if not spec.is_raw else None
        release = coded if pipeline is None else pipeline(coded, np.random.default_rng(seed), inputs=train.model_x)
        labels = labels_of(release)
        fallback = train.x.mean(axis=0)
        return np.stack(
            [
                train.x[labels == k].mean(axis=0) if np.any(labels == k) else fallback
                for k in range(self.context.num_classes)
            ]
        )

    def measure(self, spec: FilterSpec, seed: int) -> CodeResult:
        context, validation = self.context, self.validation
        kind = _kind(context.pipeline(spec) if not spec.is_raw else None, context)
        from edgeguard.metrics.baselines import label_only_reconstruct

        label_guess = label_only_reconstruct(context.train.y, context.train.x, labels_of(validation.raw))
        best, best_psnr = None, psnr(validation.x, label_guess)
        for code in self.kit.candidates(kind):
            code.fit(context.train.raw)
            outcome = self.run_code(code, spec, validation, seed + 11)
            if 100.0 * (self.base_accuracy - outcome["accuracy"]) > MAX_ACCURACY_DROP + 1e-9:
                continue
            value = psnr(validation.x, outcome["reconstructions"])
            if value > best_psnr:
                best, best_psnr = code, value
        evaluation = context.evaluation
        if best is None:  # no code beats the label: the attacker keeps the label-only guess
            x, recon = evaluation.x, context.label_only
            psnr_value, ssim_value, risk = leakage(x, recon, context.reference)
            accuracy = float(np.mean(labels_of(evaluation.raw) == evaluation.y))
            return CodeResult("run", "none (label only)", 0.0, 0.0, psnr_value, ssim_value, risk, accuracy, recon)
        outcome = self.run_code(best, spec, evaluation, seed + 13)
        recon = outcome["reconstructions"]
        psnr_value, ssim_value, risk = leakage(evaluation.x, recon, context.reference)
        return CodeResult(
            "run",
            best.name,
            outcome["payload_bits"],
            outcome["bits_carried"],
            psnr_value,
            ssim_value,
            risk,
            outcome["accuracy"],
            recon,
        )


def _kind(pipeline: Any, context: BenchContext) -> str:
    """What a release of ``pipeline`` is, for the codes: logits | probabilities | scores | labels."""
    if pipeline is None:
        return context.raw_domain.kind
    domain = pipeline.domains(context.num_classes)[-1]
    return "labels" if domain.terminal or domain.kind == "labels" else domain.kind
