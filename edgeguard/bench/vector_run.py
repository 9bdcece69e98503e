"""``run_bench`` on vector and sequence models ((N, F) or (N, T, F) inputs): leakage of every release.

:func:`edgeguard.bench.run_bench` hands a model whose input is not an image here. The data
are read as the vet reads a vector probe (:func:`edgeguard.vetting.probe.load_probe`:
``.npz`` with ``x`` and ``y``, ``.csv`` or ``.parquet`` with a label column) and split (seeded,
disjoint) into evaluation rows and attacker rows. For each filter spec the bench measures:

- latency of ``SafeModel.predict`` against raw onnxruntime (batch 1, interleaved;
  :mod:`edgeguard.bench.latency_stage`), accuracy of the release;
- leakage against every post-hoc attacker of :mod:`edgeguard.bench.vector_attacks` (fitted
  on the attacker's rows released through the same filter spec), as the vet measures it for
  vectors: the MSE gain over the per-class mean in dB on standardised features (z-scores of
  the attacker's rows, :func:`edgeguard.vetting.targets.audit_target`) and R^2 per feature;
  the filter's worst case is the largest gain over the attackers that ran, with its name.

Image-only parts of the bench are skipped with a stated reason in the report
(:data:`SKIPPED`): PSNR, SSIM and R, the pictures, rung 3 (trained through the filter: the
registered trainer trains image CNNs), rung 4 (hand-built codes carry a payload for the
server's image decoder) and the repeated-queries experiment.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.bench.common import bar, labels_of, log, machine, run_batched, seeds, session
from edgeguard.bench.context import Split
from edgeguard.bench.latency_stage import latency_of_all
from edgeguard.bench.mapping import DecoderInputMap
from edgeguard.bench.releases import release_of
from edgeguard.bench.settings import BenchSettings
from edgeguard.bench.vector_attacks import VECTOR_ATTACKERS, attack_features, fit_attackers, score
from edgeguard.bench.vector_report import VectorBenchReport, VectorBenchRow
from edgeguard.errors import DataError, ModelLoadError
from edgeguard.filters import FilterPipeline, OutputDomain
from edgeguard.filters.spec import FilterSpec
from edgeguard.model import ModelInfo, load_model
from edgeguard.vectors import DEFAULT_LABEL_COLUMN, VectorSet, load_vectors

__all__ = ["run_vector_bench", "SKIPPED"]

#: What the image bench measures and the vector bench does not, and why (written into every vector report).
SKIPPED = {
    "psnr": "PSNR is a picture's measure (pixels in [0, 1]); vectors are scored by the MSE gain over the per-class "
    "mean in dB on standardised features, as the vet scores them",
    "ssim": "SSIM compares local windows of a pixel grid; feature vectors have none",
    "risk": "the reconstruction risk R is the image bench's figure; the vector bench reports the vet's statistics "
    "for vectors (gain in dB, R^2 per feature)",
    "pictures": "the plots and reconstruction grids are pictures of images",
    "through": "rung 3 (classifier + decoder trained through the filter): the registered attack trainer trains "
    "image CNNs; no vector trainer exists yet",
    "codes": "rung 4 (hand-built codes): the codes carry the raw output to the server's image decoder; the capacity "
    "bound is their ceiling",
    "repeats": "the repeated-queries experiment fine-tunes the server's image decoder; not run on vectors yet",
}


@dataclass
class VectorContext:
    """What the stages share (the attribute names :func:`release_of` and :func:`latency_of_all` read)."""

    settings: BenchSettings
    progress: bool
    info: ModelInfo
    specs: list[FilterSpec]
    safe_models: dict[str, Any]
    raw_session: Any
    evaluation: Split
    attack: Split
    raw_domain: OutputDomain
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def pipeline(self, spec: FilterSpec) -> FilterPipeline:
        return FilterPipeline(spec.build(), input_kind=self.info.output_kind, task_type=self.info.task_type)


def _raw_outputs(raw_session: Any, info: ModelInfo, x: np.ndarray) -> np.ndarray:
    """The model's raw (N, K) outputs, in chunks of its fixed batch (the last one padded) when it has one."""
    batch = info.fixed_batch
    if batch is None:
        return run_batched(raw_session, x).astype(np.float32, copy=False)
    name, parts = raw_session.get_inputs()[0].name, []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        padded = (
            np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)]) if len(chunk) < batch else chunk
        )
        parts.append(raw_session.run(None, {name: padded})[0][: len(chunk)])
    return np.concatenate(parts).astype(np.float32, copy=False)


def _prepare(
    model: str | os.PathLike,
    decoder: str | os.PathLike | None,
    data: VectorSet | str | os.PathLike,
    filters: Any,
    settings: BenchSettings,
    progress: bool,
    label_column: str,
) -> tuple[VectorContext, Any, np.ndarray, np.ndarray, list[str]]:
    """The context, the server's decoder session (or None), the standardised features (attacker, evaluation) and
    the feature names."""
    from edgeguard.bench.context import filtered_models
    from edgeguard.vetting.probe import load_probe
    from edgeguard.vetting.targets import audit_target

    s = settings
    model_proto, info, specs, safe_models = filtered_models(model, filters, s.threads)
    if not isinstance(data, VectorSet):  # read once here (for the feature names), checked by the vet's loader
        data = load_vectors(data, label_column=label_column, class_names=info.class_names)
    probe = load_probe(data, info, label_column=label_column)
    if probe.labels.ndim != 1:
        raise DataError("expected one class label per row, got multi-label data; the bench supports multiclass models")
    if len(probe) < s.eval_size + s.attack_size:
        eval_size = max(2, len(probe) * 3 // 10)
        raise DataError(
            f"expected at least {s.eval_size + s.attack_size} rows ({s.eval_size} to evaluate + {s.attack_size} for "
            f"the attacker), got {len(probe)}; lower the sizes, e.g. --eval-size {eval_size} --attack-size "
            f"{len(probe) - eval_size}"
        )
    order = np.random.default_rng(s.seed).permutation(len(probe))
    eval_index, attack_index = np.sort(order[: s.eval_size]), order[s.eval_size : s.eval_size + s.attack_size]
    raw_session = session(model_proto, s.threads, "classifier")

    def split(index: np.ndarray) -> Split:
        x = probe.inputs[index]
        return Split(x, probe.labels[index], x, _raw_outputs(raw_session, info, x))

    evaluation, attack = split(eval_index), split(attack_index)
    log(f"{len(specs)} filter configurations; {s.eval_size} eval / {s.attack_size} attacker rows", progress)
    target = audit_target(attack.x)  # the vet's standardisation, fitted on the attacker's rows

    def standardised(x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) - target.mean) / target.std

    decoder_session = None
    if decoder is not None:
        decoder_proto = load_model(decoder, allow_dynamic_ops=True, require_info=False).proto
        decoder_session = session(decoder_proto, s.threads, "decoder")
    context = VectorContext(
        s,
        progress,
        info,
        specs,
        safe_models,
        raw_session,
        evaluation,
        attack,
        OutputDomain.of_model(info.output_kind, info.task_type),
    )
    count = int(np.prod(info.input_shape))
    names = list(data.feature_names) if len(data.feature_names) == count else [f"f{i}" for i in range(count)]
    return context, decoder_session, standardised(attack.x), standardised(evaluation.x), names


def run_vector_bench(
    model: str | os.PathLike,
    data: VectorSet | str | os.PathLike,
    filters: str | Sequence[str | FilterSpec] | None = None,
    settings: BenchSettings | None = None,
    *,
    decoder: str | os.PathLike | None = None,
    label_column: str = DEFAULT_LABEL_COLUMN,
    progress: bool = True,
    command: str | None = None,
) -> VectorBenchReport:
    """Leakage (and latency, accuracy) of every filter spec on a vector model (module docstring)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    settings = BenchSettings() if settings is None else settings
    machine_facts = machine(settings.threads)
    context, decoder_session, attack_truth, eval_truth, features = _prepare(
        model, decoder, data, filters, settings, progress, label_column
    )
    from edgeguard.metrics.baselines import label_only_reconstruct

    raw_labels = context.evaluation.raw.argmax(axis=1)
    label_only = label_only_reconstruct(context.attack.raw.argmax(axis=1), attack_truth, raw_labels)
    raw_accuracy = float(np.mean(raw_labels == context.evaluation.y))
    notes = context.notes
    skipped = dict(SKIPPED)
    if decoder_session is None:
        skipped["server"] = "no server decoder was given (--decoder); the post-hoc attackers stand in for it"
    if context.info.fixed_batch not in (None, 1):
        latency = None
        skipped["latency"] = f"the model's batch is fixed at {context.info.fixed_batch}; batch-1 latency needs 1"
    else:
        latency = latency_of_all(context)
    mapping = DecoderInputMap.fit(context.attack.raw, context.info.output_kind) if decoder_session else None

    rows: list[VectorBenchRow] = []
    spec_seeds = dict(zip((spec.text for spec in context.specs), seeds(settings.seed, len(context.specs))))
    progress_bar = bar(len(context.specs), "filters", progress)
    for spec in context.specs:
        progress_bar.set_postfix_str(spec.text)
        released = release_of(context, spec, spec_seeds[spec.text])  # type: ignore[arg-type]
        attacker_release = released.filtered(context.attack.raw, context.attack.model_x, spec_seeds[spec.text] + 1)
        domain = released.domain
        server = None
        if decoder_session is not None:

            def server(released=released, attacker_release=attacker_release, domain=domain):
                return (
                    run_batched(decoder_session, mapping(attacker_release, domain)),
                    run_batched(decoder_session, mapping(released.release, domain)),
                )

        decoded = fit_attackers(
            attack_features(attacker_release, domain, context.num_classes),
            attack_truth,
            attack_features(released.release, domain, context.num_classes),
            seed=spec_seeds[spec.text],
            server=server,
        )
        for name, values in decoded.items():
            if values.shape[1] != eval_truth.shape[1]:
                raise ModelLoadError(
                    f"expected the {name} attacker to give {eval_truth.shape[1]} features per row, got {values.shape[1]}"
                )
        scores = {name: score(values, eval_truth, label_only) for name, values in decoded.items()}
        safe = released.safe
        accuracy = float(np.mean(labels_of(released.release) == context.evaluation.y))
        stats = latency[spec.text] if latency is not None else None
        rows.append(
            VectorBenchRow(
                filter=spec.text,
                release=released.kind,
                capacity_bits=float(safe.capacity_bits) if safe is not None else float("inf"),
                random=released.random,
                accuracy=accuracy,
                accuracy_drop_points=100.0 * (raw_accuracy - accuracy),
                latency_us=stats.safe_us if stats is not None else float("nan"),
                raw_latency_us=stats.raw_us if stats is not None else float("nan"),
                attackers=scores,
            )
        )
        progress_bar.update(1)
    progress_bar.close()
    label_scores = score(label_only, eval_truth, label_only)
    names = list(context.info.class_names)
    return VectorBenchReport(
        rows=rows,
        raw_accuracy=raw_accuracy,
        label_only_mean_r2=label_scores.mean_r2,
        label_only_r2_per_feature=per_feature_label_only(label_only, eval_truth),
        feature_names=features,
        attackers={name: VECTOR_ATTACKERS[name] for name in decoded_names(rows)},
        skipped=skipped,
        settings={
            "generated": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": command or "edgeguard.bench.run_bench",
            "model": str(model),
            "decoder": None if decoder is None else str(decoder),
            "data": f"VectorSet of {len(data)} rows" if isinstance(data, VectorSet) else str(data),
            "input_kind": context.info.input_kind,
            "input_shape": list(context.info.input_shape),
            "output_kind": context.info.output_kind,
            "num_classes": context.num_classes,
            "class_names": names,
            "seed": settings.seed,
            "eval_size": settings.eval_size,
            "attack_size": settings.attack_size,
            "repeats": settings.repeats,
            "threads": settings.threads,
            "filters": [spec.text for spec in context.specs],
            "target": "standardised features (z-scores of the attacker's rows), as the vet's audit target",
            "label_only": "mean of the attacker's standardised rows with the same top-1 class of the raw output, as in the vet",
            "wall_time_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        },
        machine=machine_facts,
        notes=notes,
    )


def per_feature_label_only(label_only: np.ndarray, truth: np.ndarray) -> list[float | None]:
    from edgeguard.metrics import per_feature_r2

    return per_feature_r2(label_only, label_only, truth)["r2_per_feature_label_only"]


def decoded_names(rows: list[VectorBenchRow]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [name for name in row.attackers if name not in names]
    return names
