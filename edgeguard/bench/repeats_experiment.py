"""The repeats experiment of a bench run (what it measures: :mod:`edgeguard.bench.repeats`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeguard.bench.attack import AttackData, adaptive_attack
from edgeguard.bench.common import as_rows, bar
from edgeguard.bench.context import BenchContext
from edgeguard.bench.repeats import RepeatRow, averaged, consistent_variant, noise_specs
from edgeguard.filters.spec import FilterSpec
from edgeguard.metrics import psnr, ssim

__all__ = ["run_repeats", "sizes"]

_MAX_VALIDATION = 400


def sizes(context: BenchContext) -> dict[str, int]:
    """The experiment's evaluation size, attacker training size and epochs (capped by the bench's own)."""
    s = context.settings
    return {
        "eval_size": min(s.repeat_eval_size, s.eval_size),
        "train_size": min(s.repeat_train_size, len(context.train.x)),
        "epochs": min(s.repeat_epochs, s.attack_epochs),
    }


def run_repeats(context: BenchContext) -> list[RepeatRow]:
    """Leakage of averaged repeats for every noise spec, fresh and consistent."""
    s = context.settings
    counts = sorted({int(c) for c in s.repeat_counts if int(c) >= 1})
    noisy = noise_specs(context.specs)
    if not counts or not noisy:
        return []
    size = sizes(context)
    evaluation = context.evaluation.head(size["eval_size"])
    train = context.train.head(size["train_size"])
    native_train = context.native_train[: size["train_size"]]
    validation = context.validation.head(max(2, min(len(context.validation.x), _MAX_VALIDATION)))
    from edgeguard.metrics.baselines import label_only_reconstruct

    label_only = label_only_reconstruct(context.train.y, context.train.x, evaluation.raw.argmax(axis=1))
    base = psnr(evaluation.x, label_only)  # the label-only baseline on this subset
    variants: list[tuple[FilterSpec, str]] = []
    for spec in noisy:
        variants.append((spec, "consistent" if "consistent=true" in spec.text else "fresh"))
        twin = consistent_variant(spec)
        if twin is not None and twin.text != spec.text and twin.text not in {x.text for x in context.specs}:
            variants.append((twin, "consistent"))
    rows: list[RepeatRow] = []
    progress_bar = bar(len(variants) * len(counts), "repeats", context.progress)
    for index, (spec, kind) in enumerate(variants):
        victim = context.pipeline(spec)  # one device: one secret for all of the victim's releases
        for repeats in counts:
            progress_bar.set_postfix_str(f"{spec.text} x{repeats}")
            cell = _Cell(context, spec, kind, repeats, s.seed * 1_000_003 + index * 101 + repeats)
            row = cell.measure(victim, evaluation, train, native_train, validation, base, rows)
            rows.append(row)
            progress_bar.update(1)
    progress_bar.close()
    return rows


class _Cell:
    """One (filter, noise kind, R) cell of the experiment."""

    def __init__(self, context: BenchContext, spec: FilterSpec, kind: str, repeats: int, seed: int) -> None:
        self.context, self.spec, self.kind, self.repeats, self.seed = context, spec, kind, repeats, seed
        self.memo: dict[tuple[int, int], np.ndarray] = {}

    def attacker_average(self, raw: np.ndarray, images: np.ndarray, draw_seed: int) -> np.ndarray:
        """The attacker's R-averaged releases of its own images, drawn once per split.

        Reused across epochs: R x N draws per epoch would dominate the run for the OpenDP sampler.
        """
        cached = self.memo.get((id(raw), len(raw)))
        if cached is not None:
            return cached
        num_classes = self.context.num_classes
        device = self.context.pipeline(self.spec)  # the attacker's own device (another secret)
        if self.kind == "consistent":
            value = as_rows(device(raw, np.random.default_rng(draw_seed), inputs=images), num_classes)
        else:
            value = averaged(
                lambda r: as_rows(device(raw, np.random.default_rng(draw_seed + 7919 * r), inputs=images), num_classes),
                self.repeats,
            )[0]
        self.memo[(id(raw), len(raw))] = value = np.asarray(value, dtype=np.float32)
        return value

    def measure(
        self,
        victim: Any,
        evaluation: Any,
        train: Any,
        native_train: np.ndarray,
        validation: Any,
        base: float,
        rows: list[RepeatRow],
    ) -> RepeatRow:
        context, spec, kind, repeats, seed = self.context, self.spec, self.kind, self.repeats, self.seed
        num_classes = context.num_classes
        domain = victim.domains(num_classes)[-1]

        def victim_release(r: int) -> np.ndarray:
            return victim(evaluation.raw, np.random.default_rng(seed + 7919 * r), inputs=evaluation.model_x)

        mean_release, identical = averaged(lambda r: as_rows(victim_release(r), num_classes), repeats)
        release = mean_release.astype(np.float32)
        if kind == "consistent" and repeats > 1 and identical and rows and rows[-1].filter == spec.text:
            # Byte-identical releases: the average is the single release and the attacker learns nothing
            # new from repeats, so every number is the one measured for fewer repeats.
            return RepeatRow(**{**rows[-1].to_dict(), "repeats": repeats, "identical": True})
        mapping = context.mapping
        eval_inputs = mapping(release, domain)
        server = context.decode(eval_inputs)
        validation_release = self.attacker_average(validation.raw, validation.model_x, seed + 17)
        validation_inputs = mapping(validation_release, domain)
        attack = adaptive_attack(
            context.decoder_proto,
            AttackData(
                train_inputs=lambda epoch: mapping(
                    self.attacker_average(train.raw, train.model_x, seed + 31 * (epoch + 1)), domain
                ),
                train_images=train.x,
                train_labels=train.y,
                native_inputs=native_train,
                validation_inputs=validation_inputs,
                validation_images=validation.x,
                validation_groups=validation_release.argmax(axis=1),
                eval_inputs=eval_inputs,
                eval_groups=release.argmax(axis=1),
                server_validation=context.decode(validation_inputs),
                server_eval=server,
            ),
            settings=context.settings.repeats_attack,
            projector=None,
            reference=None,
            seed=seed % (2**31),
            threads=context.settings.threads,
        )
        winner = "server" if attack.decoder == "server" else f"adaptive: {attack.decoder}"
        value = psnr(evaluation.x, attack.reconstructions)
        x = evaluation.x
        return RepeatRow(
            filter=spec.text,
            noise=kind,
            repeats=repeats,
            identical=bool(identical) if repeats > 1 else True,
            accuracy=float(np.mean(release.argmax(axis=1) == evaluation.y)),
            psnr=value,
            ssim=ssim(x, attack.reconstructions) if min(x.shape[-2:]) >= 11 else float("nan"),
            psnr_gain_db=value - base,
            attacker=winner,
        )
