"""Architecture-matched honest references for the leakage audit.

Honest models leak too, and how much depends on the architecture (an honest MLP's
logits let a client decoder gain ~3 dB over the label). The vet therefore compares the
model's leakage with that of honest models of the same architecture, audited on the very
same queried images (a paired comparison): either models the user supplies
(``reference_models``), or the vetted graph itself, re-initialised and trained honestly
for a few hundred steps on labelled ``reference_data`` through :mod:`edgeguard.onnx_torch`.

Training reads its mini-batches either from arrays (``reference_data``) or from a
:class:`BatchSource` that builds each mini-batch on demand (the default twin augments just
that batch's probe images), so memory does not grow with copies x probe x input size.
Whether a twin is trained at all is decided beforehand from a static cost estimate
(:mod:`edgeguard.vetting.cost`) against ``max_gmac``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError, DataError

__all__ = ["ReferenceSettings", "BatchSource", "train_reference", "reinitialise", "DEFAULT_MAX_GMAC"]

_WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
#: Largest estimated twin training cost (GMAC: MACs per sample x steps x batch x 3, see
#: edgeguard.vetting.cost) trained by default. The detection zoo at 28x28 with the default
#: 300 steps of 64: CNN 58, MLP 31, ResNet-10 (WRN-10-1) 538, WideResNet-10-2 1949 GMAC
#: (2.6x margin); the 224x224 RGB CNN of benchmarks/vet_scaling.py (~300 MMAC, ~10 ms per
#: image) 17272 GMAC is refused (its twin took 1572 s on the shared 2-core machine).
DEFAULT_MAX_GMAC = 5000.0
_RUN_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class ReferenceSettings:
    """Honest re-training of the vetted graph: Adam, ``steps`` mini-batches of ``batch_size``.

    ``max_gmac``: the largest estimated training cost (in GMAC, see
    :mod:`edgeguard.vetting.cost`) of a twin trained here; a costlier graph gets no trained
    twin (the vet then ends inconclusive unless a ``reference_model`` is supplied). A static
    estimate, never a time limit: the verdict does not depend on the machine's load.
    """

    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_gmac: float = DEFAULT_MAX_GMAC

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0 or not self.max_gmac > 0:
            raise ConfigError(
                f"expected steps >= 1, batch_size >= 1, a positive learning rate and a positive max_gmac, got "
                f"{self.steps}, {self.batch_size}, {self.learning_rate}, {self.max_gmac}"
            )


@dataclass(frozen=True)
class BatchSource:
    """Mini-batches built on demand: indices are drawn from ``range(size)``, ``take`` turns them into a batch.

    ``take(indices)`` returns (model inputs, labels) for those pool indices; nothing of the
    pool needs to exist beforehand (the default twin augments each batch's images as it goes).
    """

    size: int
    take: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _fan_in(op: str, dims: list[int], attributes: dict[str, Any]) -> int:
    if op == "Conv":
        return int(np.prod(dims[1:]))
    if op == "ConvTranspose":
        return int(dims[1] * np.prod(dims[2:]))
    if op == "Gemm":
        return int(dims[1] if attributes.get("transB", 0) else dims[0])
    return int(dims[0])  # MatMul: (in, out)


def reinitialise(module: Any, model: Any, seed: int = 0) -> int:
    """Re-initialise the weights of ``module`` (from :func:`edgeguard.onnx_torch.to_torch` on ``model``).

    Conv/Gemm/MatMul weights get He-uniform values, their biases zeros; BatchNormalization
    becomes the identity (scale 1, bias 0, mean 0, variance 1). Everything else (input
    normalisation constants, shapes) is kept. Returns the number of tensors reset.
    """
    import torch
    from onnx import helper

    generator = torch.Generator().manual_seed(int(seed))
    by_onnx = {onnx_name: slot for slot, onnx_name in module.parameter_onnx_names.items()}
    by_onnx.update({onnx_name: slot for slot, onnx_name in module.buffer_onnx_names.items()})
    reset = 0

    def tensor(name: str) -> Any:
        slot = by_onnx.get(name)
        return getattr(module, slot) if slot is not None else None

    with torch.no_grad():
        for node in model.graph.node:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type in _WEIGHT_OPS and len(node.input) > 1:
                weight = tensor(node.input[1])
                if weight is None or not weight.is_floating_point() or weight.dim() < 2:
                    continue
                bound = math.sqrt(6.0 / max(1, _fan_in(node.op_type, list(weight.shape), attributes)))
                weight.copy_(torch.empty(weight.shape).uniform_(-bound, bound, generator=generator))
                reset += 1
                if len(node.input) > 2 and node.input[2]:
                    bias = tensor(node.input[2])
                    if bias is not None and bias.is_floating_point():
                        bias.zero_()
                        reset += 1
            elif node.op_type == "BatchNormalization":
                for position, value in ((1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)):
                    if len(node.input) > position:
                        target = tensor(node.input[position])
                        if target is not None and target.is_floating_point():
                            target.fill_(value)
                            reset += 1
    return reset


def train_reference(
    model: Any,
    inputs: np.ndarray | BatchSource,
    labels: np.ndarray | None = None,
    *,
    output_kind: str = "logits",
    task_type: str = "multiclass",
    settings: ReferenceSettings | None = None,
    seed: int = 0,
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """Train the graph of ``model`` (an onnx.ModelProto) honestly from a fresh initialisation.

    ``inputs`` are model inputs (in the model's pixel range), ``labels`` int64 (N,) or
    0/1 float (N, K); or ``inputs`` is a :class:`BatchSource` (``labels`` unused) that builds
    each mini-batch from its pool indices. Returns a function running the trained reference on model inputs
    (batched, no gradient) and a record of the training (steps, seconds, final loss).
    Raises UnsupportedOpError when the interpreter does not cover the graph.
    """
    import torch
    import torch.nn.functional as F

    from edgeguard.onnx_torch import to_torch

    settings = settings or ReferenceSettings()
    if isinstance(inputs, BatchSource):
        source = inputs
    else:
        x_all, y_all = np.asarray(inputs, dtype=np.float32), np.asarray(labels)
        source = BatchSource(len(x_all), lambda index: (x_all[index], y_all[index]))
    if source.size < settings.batch_size:
        raise DataError(
            f"expected at least {settings.batch_size} labelled reference samples, got {source.size}; "
            "pass more --reference-data"
        )
    started = time.perf_counter()
    module = to_torch(model)
    reset = reinitialise(module, model, seed)
    module.eval()  # normalisation layers in inference mode (the exported graph has them folded anyway)
    optimiser = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=settings.learning_rate)
    generator = np.random.default_rng(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(settings.steps):
        x_batch, y_batch = source.take(generator.choice(source.size, settings.batch_size, replace=False))
        out = module(torch.as_tensor(np.asarray(x_batch, dtype=np.float32)))
        target = torch.as_tensor(np.asarray(y_batch))
        if task_type == "multilabel":
            loss = (
                F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), target.float())
                if output_kind == "probabilities"
                else F.binary_cross_entropy_with_logits(out, target.float())
            )
        elif output_kind == "probabilities":
            loss = F.nll_loss(torch.log(out.clamp_min(1e-12)), target.long())
        else:
            loss = F.cross_entropy(out, target.long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            tensor = torch.as_tensor(np.asarray(batch, dtype=np.float32))
            # chunks of at most 512 rows and ~4M input values (512 rows up to 8192 values per sample)
            chunk = max(1, min(512, _RUN_CHUNK_VALUES // max(1, int(np.prod(tensor.shape[1:])))))
            return torch.cat([module(tensor[i : i + chunk]) for i in range(0, len(tensor), chunk)]).double().numpy()

    run.module = module  # the trained twin itself (the fine-tune test compares its statistics with the model's)
    record = {
        "kind": "trained",
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "tensors_reset": reset,
        "final_loss": float(loss.detach()),
        "samples": int(source.size),
        "seconds": time.perf_counter() - started,
    }
    return run, record
