"""The architecture-matched honest twin the leakage is compared with.

Honest models leak too, and how much depends on the architecture. The vet compares the
model's leakage with that of an honest model of the same architecture, audited on the
very same queries: models the user supplies (``reference_models``), or by default a twin
trained here: the vetted graph re-initialised and trained honestly (the claimed loss only)
through :mod:`edgeguard.onnx_torch`, on ``reference_data`` when given, else on augmented
copies of the labelled probe images. Its accuracy is reported next to the model's. When no
twin can be built the reason is recorded, and the verdict cannot be honest.

The default twin's training pool is the probe images and ``TWIN_COPIES`` augmented copies
of each (pool index ``i``: copy ``i // N`` of image ``i % N``, copy 0 the image itself), but
the copies are never materialised: each mini-batch draws its pool indices, and only that
batch's images are augmented (on the fly, fresh random draws per batch; the mixup partner is
another image of the same batch) and scaled. Memory stays at one batch, whatever the probe
and input size.

Before training, the twin's cost is estimated statically from the graph
(:mod:`edgeguard.vetting.cost`); above ``ReferenceSettings.max_gmac`` no twin is trained and
the record says the estimate, the budget and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import EdgeguardError, ModelLoadError
from edgeguard.vetting.accuracy import MAX_HEAD_VALUES, output_head, recoverable_accuracy
from edgeguard.vetting.context import VetContext
from edgeguard.vetting.cost import TwinCost, twin_cost
from edgeguard.vetting.probe import load_probe, model_info_with_overrides
from edgeguard.vetting.reference import BatchSource, train_reference
from edgeguard.vetting.running import head_inputs, load_for_vet, runner, scaler, session
from edgeguard.vetting.targets import audit_target

__all__ = ["Twin", "build_twins", "estimate", "TWIN_COPIES", "MAX_ACCURACY_SHORTFALL"]

#: Augmented copies of each probe image in the default twin's training pool (plus the image
#: itself); each batch's copies are augmented on the fly, never the whole pool at once.
TWIN_COPIES = 3
#: A twin whose accuracy falls short of the model's by more than this is not comparable.
MAX_ACCURACY_SHORTFALL = 0.15


@dataclass
class Twin:
    """One honest comparison model: how to run it on images in [0, 1], and its record."""

    kind: str  # "supplied" | "trained"
    run_images: Callable[[np.ndarray], np.ndarray]
    record: dict[str, Any] = field(default_factory=dict)
    module: Any = None  # the trained twin's torch module (None for a supplied one)


def _accuracies(ctx: VetContext, outputs: np.ndarray, head: np.ndarray | None) -> dict[str, Any]:
    """The twin's top-1 accuracy on the probe and its recoverable accuracy (as the model's is measured)."""
    recoverable = recoverable_accuracy(
        outputs, ctx.probe.labels, task_type=ctx.info.task_type, seed=ctx.settings.seed, head=head
    )
    return {"accuracy": recoverable["top1"], "recoverable_accuracy": recoverable["accuracy"], "accuracy_probes": recoverable}


def _supplied(ctx: VetContext, reference: str) -> Twin:
    s = ctx.settings
    try:
        ref_loaded = load_for_vet(Path(reference), s.max_tensor_bytes, s.max_total_bytes)
        ref_info = model_info_with_overrides(
            ref_loaded.proto, {"input_shape": ctx.info.input_shape, "class_names": ctx.info.class_names}
        )
        run = runner(session(ref_loaded.serialized), ref_info)
    except EdgeguardError as error:
        raise ModelLoadError(f"expected a usable reference model at {reference}, got an error: {error}") from None
    scale = scaler(ref_info)
    inputs = scale(ctx.probe.images)
    head = head_inputs(ref_loaded.proto, output_head(ref_loaded.proto), inputs)
    record = {"kind": "supplied", "path": str(reference), "sha256": ref_loaded.sha256,
              **_accuracies(ctx, run(inputs), head)}
    return Twin("supplied", lambda x, r=run, c=scale: r(c(x)), record)


def _augmented_batches(ctx: VetContext) -> BatchSource:
    """The probe and TWIN_COPIES augmented copies of each, as a pool whose batches are augmented when drawn."""
    images, labels = ctx.probe.images, ctx.probe.labels
    n = len(images)
    target = audit_target(images)
    scale = scaler(ctx.info)
    rng = np.random.default_rng([ctx.augment_seed, 23])

    def take(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.asarray(index)
        copy, item = index // n, index % n
        batch = np.array(images[item], dtype=np.float32)
        moved = copy > 0
        if moved.any():
            batch[moved] = target.augment(batch[moved], 1, rng)[0]
        return scale(batch), labels[item]

    return BatchSource((TWIN_COPIES + 1) * n, take)


def estimate(ctx: VetContext) -> TwinCost:
    """The static training cost estimate of this vet's twin (:mod:`edgeguard.vetting.cost`)."""
    r = ctx.settings.reference
    return twin_cost(ctx.loaded.proto, tuple(ctx.info.input_shape), r.steps, r.batch_size)


def _trained(ctx: VetContext) -> Twin:
    s = ctx.settings
    if s.reference_data is not None:
        labelled = load_probe(s.reference_data, ctx.info, seed=s.seed)
        data, labels = labelled.inputs, labelled.labels
        if isinstance(s.reference_data, (str, Path)):
            source = str(s.reference_data)
        else:  # never the data itself in the report
            source = f"an in-memory data set ({len(labels)} labelled samples)"
    else:
        data, labels = _augmented_batches(ctx), None
        source = f"the probe images and {TWIN_COPIES} augmented copies of each (augmented per mini-batch)"
    run, record = train_reference(
        ctx.loaded.proto, data, labels, output_kind=ctx.info.output_kind, task_type=ctx.info.task_type,
        settings=s.reference, seed=s.seed,
    )
    scale = scaler(ctx.info)
    record["source"] = source
    record.update(_accuracies(ctx, run(ctx.probe.inputs), _module_head(run, ctx)))
    record["accuracy_note"] = "on the probe images" + (" (trained on them)" if s.reference_data is None else "")
    twin = Twin("trained", lambda x: run(scale(x)), record)
    twin.module = getattr(run, "module", None)
    return twin


def _module_head(run: Any, ctx: VetContext) -> np.ndarray | None:
    """The trained twin's values at the vetted graph's head input (accuracy.output_head), on the probe."""
    module, head = getattr(run, "module", None), output_head(ctx.loaded.proto)
    if module is None or head.value is None or not hasattr(module, "values"):
        return None
    import torch

    inputs = np.asarray(ctx.probe.inputs, dtype=np.float32)
    parts = []
    with torch.no_grad():
        for start in range(0, len(inputs), 256):
            rows = torch.as_tensor(inputs[start : start + 256])
            value = module.values(rows, names=[head.value]).get(head.value)
            if value is None or not value.dim() or value.shape[0] != len(rows) or value[0].numel() > MAX_HEAD_VALUES:
                return None
            parts.append(value.reshape(len(rows), -1).float().numpy())
    return np.concatenate(parts)


def build_twins(ctx: VetContext, model_accuracy: float) -> tuple[list[Twin], list[dict[str, Any]], str]:
    """The usable twins, the records of every attempt, and why there is none ("" when there is one).

    ``model_accuracy`` is the model's recoverable accuracy (:mod:`edgeguard.vetting.accuracy`),
    compared with the twin's recoverable accuracy.
    """
    twins: list[Twin] = []
    records: list[dict[str, Any]] = []
    for reference in ctx.settings.reference_models:
        ctx.say(f"auditing the supplied reference model {reference}")
        twin = _supplied(ctx, reference)
        twins.append(twin)
        records.append(twin.record)
    reasons = []
    cost = estimate(ctx) if ctx.settings.twin and not twins else None
    budget = ctx.settings.reference.max_gmac
    if cost is not None and (cost.gmac is None or cost.gmac > budget):
        said = (
            f"estimated at {cost.gmac:.0f} GMAC" if cost.gmac is not None
            else f"of unknown cost (no shapes for {', '.join(cost.unresolved[:3])})"
        )
        text = (
            f"the honest twin was not trained: its training is {said}, over the budget of {budget:g} GMAC; "
            "pass --reference-model <an honest model of this architecture>, or raise --reference-max-gmac"
        )
        records.append({"kind": "trained", "refused": "cost", "cost": cost.to_dict(), "max_gmac": budget,
                        "error": text})
        reasons.append(text)
    elif cost is not None:  # supplied references take the place of the trained twin
        ctx.say(f"training the honest twin (this architecture, re-initialised, the claimed loss only; "
                f"estimated {cost.gmac:.1f} GMAC)")
        started = time.perf_counter()
        try:
            twin = _trained(ctx)
        except Exception as error:  # noqa: BLE001 - the provider's graph through the interpreter: any failure = no twin
            text = str(error).split(";", 1)[0][:300]
            records.append({"kind": "trained", "error": text, "seconds": time.perf_counter() - started})
            reasons.append(f"the vetted graph could not be re-trained as an honest twin: {text}")
        else:
            twin.record["cost"] = cost.to_dict()
            twin.record["max_gmac"] = budget
            shortfall = model_accuracy - twin.record["recoverable_accuracy"]
            twin.record["model_recoverable_accuracy"] = model_accuracy
            records.append(twin.record)
            if shortfall > MAX_ACCURACY_SHORTFALL:
                twin.record["used"] = False
                reasons.append(
                    f"the trained twin reached {twin.record['recoverable_accuracy']:.3f} recoverable accuracy against the model's "
                    f"{model_accuracy:.3f}: not comparable (more than {MAX_ACCURACY_SHORTFALL} short); pass "
                    "--reference-data with more labelled data or --reference-model"
                )
            else:
                twin.record["used"] = True
                twins.append(twin)
    elif not twins:
        reasons.append("no twin was asked for (twin=False) and no reference model was supplied")
    return twins, records, "; ".join(reasons) if not twins else ""
