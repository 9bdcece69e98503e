"""The architecture-matched honest twin the leakage is compared with.

Honest models leak too, and how much depends on the architecture. The vet compares the
model's leakage with that of an honest model of the same architecture, audited on the
very same queries: models the user supplies (``reference_models``), or by default a twin
trained here: the vetted graph re-initialised and trained honestly (the claimed loss only)
through :mod:`edgeguard.onnx_torch`, on ``reference_data`` when given, else on augmented
copies of the labelled probe images. Its accuracy is reported next to the model's. When no
twin can be built the reason is recorded, and the verdict cannot be honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import EdgeguardError, ModelLoadError
from edgeguard.vetting.accuracy import probed_layers, recoverable_accuracy
from edgeguard.vetting.context import VetContext
from edgeguard.vetting.probe import load_probe, model_info_with_overrides
from edgeguard.vetting.reference import train_reference
from edgeguard.vetting.running import load_for_vet, run_values, runner, scaler, session
from edgeguard.vetting.targets import audit_target

__all__ = ["Twin", "build_twins", "TWIN_COPIES", "MAX_ACCURACY_SHORTFALL"]

#: Augmented copies of each probe image the default twin is trained on (plus the image itself).
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


def _accuracies(ctx: VetContext, outputs: np.ndarray, layers: dict[str, np.ndarray]) -> dict[str, Any]:
    """The twin's top-1 accuracy on the probe and its recoverable accuracy (as the model's is measured)."""
    recoverable = recoverable_accuracy(
        outputs, ctx.probe.labels, task_type=ctx.info.task_type, seed=ctx.settings.seed, layers=layers
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
    layers = run_values(ref_loaded.proto, inputs, probed_layers(ref_loaded.proto))
    record = {"kind": "supplied", "path": str(reference), "sha256": ref_loaded.sha256,
              **_accuracies(ctx, run(inputs), layers)}
    return Twin("supplied", lambda x, r=run, c=scale: r(c(x)), record)


def _trained(ctx: VetContext) -> Twin:
    s = ctx.settings
    if s.reference_data is not None:
        labelled = load_probe(s.reference_data, ctx.info, seed=s.seed)
        inputs, labels = labelled.inputs, labelled.labels
        if isinstance(s.reference_data, (str, Path)):
            source = str(s.reference_data)
        else:  # never the data itself in the report
            source = f"an in-memory data set ({len(labels)} labelled samples)"
    else:
        rng = np.random.default_rng([ctx.augment_seed, 23])
        images = ctx.probe.images
        moved = audit_target(images).augment(images, TWIN_COPIES, rng)
        copies = np.concatenate([images[None], moved]).reshape((-1,) + images.shape[1:])
        inputs = scaler(ctx.info)(copies)
        labels = np.concatenate([ctx.probe.labels] * (TWIN_COPIES + 1))
        source = f"the probe images and {TWIN_COPIES} augmented copies of each"
    run, record = train_reference(
        ctx.loaded.proto, inputs, labels, output_kind=ctx.info.output_kind, task_type=ctx.info.task_type,
        settings=s.reference, seed=s.seed,
    )
    scale = scaler(ctx.info)
    record["source"] = source
    record.update(_accuracies(ctx, run(ctx.probe.inputs), _module_layers(run, ctx)))
    record["accuracy_note"] = "on the probe images" + (" (trained on them)" if s.reference_data is None else "")
    twin = Twin("trained", lambda x: run(scale(x)), record)
    twin.module = getattr(run, "module", None)
    return twin


def _module_layers(run: Any, ctx: VetContext) -> dict[str, np.ndarray]:
    """The trained twin's values at the probed layers of the vetted graph, on the probe (name -> (N, d))."""
    module, names = getattr(run, "module", None), probed_layers(ctx.loaded.proto)
    if module is None or not names or not hasattr(module, "values"):
        return {}
    import torch

    inputs = np.asarray(ctx.probe.inputs, dtype=np.float32)
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(inputs), 256):
            rows = torch.as_tensor(inputs[start : start + 256])
            for name, value in module.values(rows, names=names).items():
                if value.dim() and value.shape[0] == len(rows):
                    parts.setdefault(name, []).append(value.reshape(len(rows), -1).float().numpy())
    joined = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return {name: values for name, values in joined.items() if len(values) == len(inputs)}


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
    if ctx.settings.twin and not twins:  # supplied references take the place of the trained twin
        ctx.say("training the honest twin (this architecture, re-initialised, the claimed loss only)")
        started = time.perf_counter()
        try:
            twin = _trained(ctx)
        except Exception as error:  # noqa: BLE001 - the provider's graph through the interpreter: any failure = no twin
            text = str(error).split(";", 1)[0][:300]
            records.append({"kind": "trained", "error": text, "seconds": time.perf_counter() - started})
            reasons.append(f"the vetted graph could not be re-trained as an honest twin: {text}")
        else:
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
