"""The mini-batch fine-tune cosine-similarity test (paper, Appendix I.2).

An honest model was trained for the claimed task only and sits close to that task's
optimum; a vicious one was pulled away by its second objective. The test fine-tunes a
copy of the model *as shipped* (the user's ONNX file, turned into a torch module by
:func:`edgeguard.onnx_torch.to_torch`) for a few mini-batch steps on the probe set
with the claimed loss, and compares the outputs of the original and the fine-tuned copy
on held-out probe samples by cosine similarity. Claimed losses: cross-entropy on logits;
negative log-likelihood of the clamped log-probabilities when the model outputs
probabilities; binary cross-entropy (with logits, or on clamped probabilities) for
multi-label models. Normalisation layers stay in inference mode.

Besides the paper's cosine on the raw outputs the test records normalised variants (see
:data:`STATISTICS`); ``benchmarks/detection.py`` compares them. On its Fashion-MNIST zoo
none separates vicious models finished with CE-only epochs from honest models trained for
one epoch reliably, so the packaged thresholds give this test weight 0 in the verdict:
it is reported, the leakage audit decides.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError, DataError

__all__ = ["FinetuneSettings", "finetune_test", "STATISTICS"]

#: Statistics the test can score with, and whether a higher value points to a vicious model
#: (fixed before looking at any data). "cosine" is the paper's: mean cosine similarity of the
#: raw outputs before and after fine-tuning. The others are normalisations studied in
#: ``benchmarks/detection.py``: "cosine_centred" (cosine of centred log-probabilities),
#: "shift_per_gradient_norm" (mean change of the centred log-probabilities per unit gradient
#: norm), "loss_decrease_per_shift" (held-out loss decrease per unit output change),
#: "class_coherence" (share of the output change explained by the predicted class) and
#: "non_target_fraction" (share of the change orthogonal to the true-class direction).
STATISTICS = {
    "cosine": False,
    "cosine_centred": False,
    "shift_per_gradient_norm": True,
    "loss_decrease_per_shift": False,
    "class_coherence": False,
    "non_target_fraction": True,
}
_PROBABILITY_FLOOR = 1e-12


@dataclass(frozen=True)
class FinetuneSettings:
    """Knobs of the fine-tune test.

    These dataclass defaults are the paper prototype's (SGD lr 0.01, 4 steps of 64, raw
    cosine); :func:`edgeguard.vetting.vet` starts from the settings the thresholds were
    calibrated with (``thresholds.json``, chosen by ``benchmarks/detection.py``).
    """

    steps: int = 4
    learning_rate: float = 0.01
    optimiser: str = "sgd"  # "sgd" | "adam"
    batch_size: int = 64
    train_samples: int = 256  # probe samples the copy is fine-tuned on
    eval_samples: int = 1000  # held-out probe samples the outputs are compared on
    statistic: str = "cosine"

    def __post_init__(self) -> None:
        if self.optimiser not in ("sgd", "adam"):
            raise ConfigError(f"expected optimiser 'sgd' or 'adam', got {self.optimiser!r}")
        if self.statistic not in STATISTICS:
            raise ConfigError(f"expected statistic in {tuple(STATISTICS)}, got {self.statistic!r}")
        if self.steps < 1 or self.batch_size < 1 or self.train_samples < 1 or self.eval_samples < 1:
            raise ConfigError(
                "expected steps, batch_size, train_samples and eval_samples >= 1, got "
                f"{self.steps}, {self.batch_size}, {self.train_samples}, {self.eval_samples}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"expected a positive learning rate, got {self.learning_rate}")


def _claimed_loss(outputs: Any, labels: Any, output_kind: str, task_type: str) -> Any:
    import torch
    import torch.nn.functional as F

    if task_type == "multilabel":
        if output_kind == "probabilities":
            p = outputs.clamp(_PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
            return F.binary_cross_entropy(p, labels)
        return F.binary_cross_entropy_with_logits(outputs, labels)
    if output_kind == "probabilities":
        return F.nll_loss(torch.log(outputs.clamp_min(_PROBABILITY_FLOOR)), labels)
    return F.cross_entropy(outputs, labels)


def _centred_logs(outputs: Any, output_kind: str, task_type: str) -> Any:
    import torch

    if task_type == "multilabel":
        if output_kind == "probabilities":
            p = outputs.clamp(_PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
            return torch.log(p) - torch.log1p(-p)
        return outputs
    logs = (
        torch.log(outputs.clamp_min(_PROBABILITY_FLOOR))
        if output_kind == "probabilities"
        else torch.log_softmax(outputs, dim=1)
    )
    return logs - logs.mean(dim=1, keepdim=True)


def _forward(module: Any, images: Any, batch: int = 500) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([module(images[i : i + batch]) for i in range(0, len(images), batch)])


def finetune_test(
    module: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    output_kind: str = "logits",
    task_type: str = "multiclass",
    settings: FinetuneSettings | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``module`` on part of the probe set; compare outputs on the rest.

    ``images`` are model inputs (already scaled to the model's pixel range), ``labels``
    int64 (N,) or 0/1 float (N, K). Returns a dict with ``score`` (the chosen statistic),
    every statistic, the loss before/after and the gradient norm. ``module`` itself is
    left unchanged.
    """
    import torch

    settings = settings or FinetuneSettings()
    n_train, n_eval = settings.train_samples, settings.eval_samples
    if len(images) < n_train + n_eval:
        raise DataError(
            f"expected at least {n_train + n_eval} probe samples for the fine-tune test "
            f"({n_train} to fine-tune on, {n_eval} held out), got {len(images)}"
        )
    generator = np.random.default_rng(seed)
    order = generator.permutation(len(images))
    train_index, eval_index = order[:n_train], order[n_train : n_train + n_eval]
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.as_tensor(labels)
    y = y.float() if task_type == "multilabel" else y.long()
    x_train, y_train, x_eval, y_eval = x[train_index], y[train_index], x[eval_index], y[eval_index]

    tuned = copy.deepcopy(module)
    tuned.eval()  # normalisation layers in inference mode: batch statistics alone would move the outputs
    parameters = [p for p in tuned.parameters() if p.is_floating_point()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    if not parameters:
        raise DataError("expected a model with trainable float weights for the fine-tune test, got none")
    before = _forward(tuned, x_eval)
    loss_before = float(_claimed_loss(before, y_eval, output_kind, task_type))
    if settings.optimiser == "sgd":
        optimiser = torch.optim.SGD(parameters, lr=settings.learning_rate)
    else:
        optimiser = torch.optim.Adam(parameters, lr=settings.learning_rate)
    torch_generator = torch.Generator().manual_seed(int(generator.integers(2**31)))
    gradient_norms = []
    for _ in range(settings.steps):
        batch = torch.randint(0, n_train, (min(settings.batch_size, n_train),), generator=torch_generator)
        loss = _claimed_loss(tuned(x_train[batch]), y_train[batch], output_kind, task_type)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        gradient_norms.append(
            float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in parameters if p.grad is not None)))
        )
        optimiser.step()
    after = _forward(tuned, x_eval)
    loss_after = float(_claimed_loss(after, y_eval, output_kind, task_type))
    finite = bool(torch.isfinite(after).all()) and bool(np.isfinite(loss_after))
    mean_gradient = float(np.mean(gradient_norms))
    if finite:
        statistics = _statistics(before.double(), after.double(), y_eval, output_kind, task_type)
        statistics["shift_per_gradient_norm"] = statistics["output_shift"] / max(mean_gradient, 1e-12)
        statistics["loss_decrease_per_shift"] = (loss_before - loss_after) / max(statistics["output_shift"], 1e-12)
    else:  # the fine-tune blew up: as far from "the outputs barely move" as it gets
        statistics = {name: (math.inf if vicious_high else -math.inf) for name, vicious_high in STATISTICS.items()}
        statistics.update(cosine=-1.0, cosine_centred=-1.0, cosine_min=-1.0, output_shift=math.inf)
    return {
        "score": statistics[settings.statistic],
        "statistic": settings.statistic,
        **statistics,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "gradient_norm": mean_gradient,
        "finite": finite,
        "train_samples": n_train,
        "eval_samples": n_eval,
    }


def _statistics(before: Any, after: Any, labels: Any, output_kind: str, task_type: str) -> dict[str, float]:
    """Every statistic except the two that need the gradient norm / losses (added by the caller)."""
    import torch
    import torch.nn.functional as F

    cosine = F.cosine_similarity(before, after, dim=1)
    centred_before = _centred_logs(before, output_kind, task_type)
    centred_after = _centred_logs(after, output_kind, task_type)
    change = centred_after - centred_before
    shift = change.norm(dim=1)
    # the direction that helps the claimed task: towards the true class (or the true attribute signs)
    if task_type == "multilabel":
        direction = 2.0 * labels.double() - 1.0
        groups = torch.unique((centred_before > 0).long(), dim=0, return_inverse=True)[1]
    else:
        classes = centred_before.shape[1]
        direction = F.one_hot(labels.long(), classes).double() - 1.0 / classes
        groups = centred_before.argmax(dim=1)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    along = (change * direction).sum(dim=1, keepdim=True)
    across = (change - along * direction).norm(dim=1)
    total = ((change - change.mean(dim=0)) ** 2).sum()
    within = sum(((change[groups == g] - change[groups == g].mean(dim=0)) ** 2).sum() for g in groups.unique())
    return {
        "cosine": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_centred": float(F.cosine_similarity(centred_before, centred_after, dim=1).mean()),
        "output_shift": float(shift.mean()),
        "class_coherence": float(1.0 - within / total) if float(total) > 0 else 1.0,
        "non_target_fraction": float(across.mean() / shift.mean().clamp_min(1e-12)),
    }
