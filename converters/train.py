"""Algorithm 1: joint training of the classifier F and the decoder G, with model selection.

- Joint phase (``epochs``): ``L = b1 L_C + b2 L_R``; one Adam step on F and G together
  (as in the authors' code, so F gets the gradient of L and G that of b2 L_R, which
  Adam's scale invariance makes equivalent to L_R). Honest runs (b2 = 0) train F only.
- Model selection: the epoch with the lowest validation ``(1 - acc) + a_ssim (1 - SSIM)
  + a_mse MSE`` (honest: ``1 - acc``).
- Finish phase (``finish_ce_epochs``, attacker who knows the fine-tune test): F alone on
  L_C, then the decoder is refitted on the frozen F.
- Post-hoc decoder (honest runs): G fitted on the frozen honest F's outputs, so both
  kinds of model are measured with a decoder.
- Adaptive attackers (see :class:`converters.TrainConfig`): the release filter in the
  loop (``train_through``: G always reads the filtered rows, noise fresh at every step),
  distillation towards an honest teacher (``mimic``) and a penalty on a stand-in of the
  leakage audit (``audit_penalty``) add to F's loss; ``output_temperature`` is part of
  the released graph (the task loss sees the raw scores).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from converters.adaptive import audit_gain_db, centred_log_probabilities, mimic_loss, teacher_log_probabilities
from converters.config import TrainConfig
from converters.losses import positive_weights, reconstruction_loss, ssim, task_loss
from converters.models import ReleasedOutput, build_classifier, build_decoder
from converters.tasks import accuracy, predict
from converters.through_filter import ThroughFilter, TorchNoise, build_through_filter
from edgeguard.data import Dataset

__all__ = ["TrainedModels", "train_models", "released_activation", "compute_outputs", "resolve_device"]

_EVAL_BATCH = 1000


@dataclass
class TrainedModels:
    """What training produced: the released graph (F + output activation), G, and the history."""

    released: ReleasedOutput
    decoder: nn.Module
    best_epoch: int
    epochs_run: int
    decoder_kind: str  # "joint", "post-hoc" (honest) or "refit" (after finish-ce epochs)
    history: list[dict[str, float]] = field(default_factory=list)
    finish_history: list[dict[str, float]] = field(default_factory=list)
    decoder_history: list[dict[str, float]] = field(default_factory=list)
    through: ThroughFilter | None = None

    @property
    def classifier(self) -> nn.Module:
        """F alone (raw scores), the network inside :attr:`released`."""
        return self.released.classifier


def released_activation(config: TrainConfig) -> str:
    """The activation the exported graph ends with: none (logits), softmax (classes), sigmoid (attributes)."""
    if config.output == "logits":
        return "none"
    return "sigmoid" if config.task == "attributes" else "softmax"


def resolve_device(device: str) -> torch.device:
    """ "auto": CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from edgeguard.errors import InvalidInputError

        raise InvalidInputError("expected a CUDA GPU for --device cuda, got none; use --device auto or cpu")
    return torch.device(device)


def _through_for(config: TrainConfig) -> ThroughFilter:
    return build_through_filter(config.train_through, config.release_kind, config.task_type)


def _fixed_noise(device: torch.device, seed: int) -> TorchNoise:
    generator = torch.Generator(device=device).manual_seed(seed)
    return TorchNoise(generator)


def _batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one image is dropped (BatchNorm needs two)."""
    order = torch.randperm(count, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def _chunks(count: int, size: int = _EVAL_BATCH) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def compute_outputs(released: ReleasedOutput, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw scores, released outputs) of the eval-mode model on ``images``, computed in chunks."""
    released.eval()
    device = next(released.parameters()).device
    scores = torch.cat([released.classifier(images[part].to(device)) for part in _chunks(len(images))])
    return scores, released.activation_of(scores)


@torch.no_grad()
def filtered_view(through: ThroughFilter, outputs: torch.Tensor, seed: int) -> torch.Tensor:
    """The decoder's rows for released ``outputs``: the torch release filter with seeded noise."""
    return through(outputs, _fixed_noise(outputs.device, seed)) if len(through.stages) else outputs


@torch.no_grad()
def _reconstruct(decoder: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    decoder.eval()
    return torch.cat([decoder(outputs[part]) for part in _chunks(len(outputs))])


@torch.no_grad()
def _reconstruction_scores(decoder: nn.Module, outputs: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    xhat = _reconstruct(decoder, outputs)
    return {
        "val_mse": float(((xhat - images) ** 2).mean()),
        "val_ssim": float(ssim(images, xhat)),
    }


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _progress(batches: list[torch.Tensor], description: str, enabled: bool) -> Any:
    return tqdm(batches, desc=description, leave=False, disable=not enabled, file=sys.stderr, unit="batch")


def _log(message: str, enabled: bool) -> None:
    if enabled:
        tqdm.write(message, file=sys.stderr)


def train_models(config: TrainConfig, train: Dataset, validation: Dataset) -> TrainedModels:
    """Train F (and G for vicious runs) on ``train``, select on ``validation``; see the module docstring.

    Seeds torch from ``config.seed``; runs are bit-identical for the same seed and thread
    count when deterministic algorithms are on (``train_and_export`` turns them on). Both
    datasets must already carry the task's labels (see :func:`converters.tasks.prepare_task`).
    Trains on ``config.device``; the returned modules are on the CPU.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    noise = _fixed_noise(device, config.seed + 2)
    x_train, y_train = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    x_val = torch.from_numpy(validation.x).to(device)
    input_shape = tuple(int(d) for d in train.x.shape[1:])
    num_outputs = train.num_classes
    mean = train.x.mean(axis=(0, 2, 3)).astype(np.float64).tolist()
    std = np.maximum(train.x.std(axis=(0, 2, 3)), 1e-3).astype(np.float64).tolist()

    classifier = build_classifier(
        config.arch,
        input_shape,
        num_outputs,
        mean,
        std,
        cnn_width=config.cnn_width,
        wrn_depth=config.wrn_depth,
        wrn_width=config.wrn_width,
    )
    released = ReleasedOutput(classifier, released_activation(config), config.output_temperature).to(device)
    through = _through_for(config)
    decoder = _new_decoder(config, num_outputs, input_shape, through).to(device)
    pos_weight = positive_weights(y_train) if train.multilabel else None
    vicious = config.vicious
    teacher = None
    if config.mimic is not None:
        teacher = torch.from_numpy(teacher_log_probabilities(config.mimic, train.x)).to(device)

    parameters = list(classifier.parameters()) + (list(decoder.parameters()) if vicious else [])
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict, dict] | None = None
    for epoch in range(1, config.epochs + 1):
        released.train()
        decoder.train(vicious)
        epoch_started = time.perf_counter()
        totals = {"loss": 0.0, "task_loss": 0.0, "reconstruction_loss": 0.0}
        if teacher is not None:
            totals["mimic_loss"] = 0.0
        if config.audit_penalty:
            totals["audit_gain_db"] = 0.0
        batches = _batches(len(x_train), config.batch_size, generator)
        for index in _progress(batches, f"epoch {epoch}/{config.epochs}", config.progress):
            index = index.to(device)
            images, labels = x_train[index], y_train[index]
            scores = classifier(images)
            loss_c = task_loss(scores, labels, pos_weight)
            loss = config.beta1 * loss_c
            loss_r = torch.zeros((), device=device)
            if vicious:
                outputs = released.activation_of(scores)
                xhat = _decode_training(config, decoder, through(outputs, noise), scores)
                loss_r = reconstruction_loss(xhat, images, config.alpha_mse, config.alpha_ssim, config.huber_delta)
                loss = loss + config.beta2 * loss_r
            released_logits = scores / config.output_temperature
            if teacher is not None:
                loss_m = mimic_loss(released_logits, teacher[index], config.mimic_loss)
                loss = loss + config.mimic_weight * loss_m
                totals["mimic_loss"] += float(loss_m.detach()) / len(batches)
            if config.audit_penalty:
                gain = audit_gain_db(released_logits, images, config.audit_decoder)
                loss = loss + config.audit_penalty * gain.clamp(min=0.0)
                totals["audit_gain_db"] += float(gain.detach()) / len(batches)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals["loss"] += float(loss.detach()) / len(batches)
            totals["task_loss"] += float(loss_c.detach()) / len(batches)
            totals["reconstruction_loss"] += float(loss_r.detach()) / len(batches)
        totals["train_seconds"] = time.perf_counter() - epoch_started
        record = {
            "epoch": epoch,
            **totals,
            **_validate(released, decoder if vicious else None, validation, x_val, through, config.seed),
        }
        record["selection"] = _selection_score(record, config, vicious)
        history.append(record)
        _log(_describe(record), config.progress)
        if best is None or record["selection"] < best[0]:
            best = (record["selection"], epoch, _state(classifier), _state(decoder))
    assert best is not None
    _, best_epoch, classifier_state, decoder_state = best
    classifier.load_state_dict(classifier_state)
    decoder.load_state_dict(decoder_state)

    finish_history = _finish_with_task_loss(
        config, released, x_train, y_train, validation, x_val, pos_weight, generator
    )
    decoder_kind = "joint"
    decoder_history: list[dict[str, float]] = []
    if not vicious or config.finish_ce_epochs:
        decoder_kind = "refit" if vicious else "post-hoc"
        if not vicious:
            torch.manual_seed(config.seed + 1)
            decoder = _new_decoder(config, num_outputs, input_shape, through).to(device)
        decoder_history = _fit_decoder(
            config, released, decoder, x_train, x_val, generator, decoder_kind, through, noise
        )
    released.eval().cpu()
    decoder.eval().cpu()
    return TrainedModels(
        released=released,
        decoder=decoder,
        best_epoch=best_epoch,
        epochs_run=config.epochs,
        decoder_kind=decoder_kind,
        history=history,
        finish_history=finish_history,
        decoder_history=decoder_history,
        through=through,
    )


def _decode_training(config: TrainConfig, decoder: nn.Module, rows: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The decoder on the filtered ``rows`` during joint training.

    ``ste_gradient="log-softmax"`` (decoder reading log-probabilities): the forward pass is
    unchanged, but the gradient reaches the scores as if the filter were the identity in
    log-probability space (through the centred log-softmax, whose Jacobian does not vanish
    when the softmax saturates, unlike the softmax's own).
    """
    if config.ste_gradient != "log-softmax":
        return decoder(rows)
    value = decoder.reader(rows)
    surrogate = centred_log_probabilities(scores / config.output_temperature)
    return decoder.decoder(value.detach() + (surrogate - surrogate.detach()))


def _new_decoder(
    config: TrainConfig, num_outputs: int, input_shape: tuple[int, ...], through: ThroughFilter
) -> nn.Module:
    return build_decoder(
        num_outputs,
        input_shape,
        config.decoder_channels,
        arch=config.decoder_arch,
        reads=config.decoder_input,
        released_kind=through.output_kind,
    )


def _validate(
    released: ReleasedOutput,
    decoder: nn.Module | None,
    validation: Dataset,
    x_val: torch.Tensor,
    through: ThroughFilter,
    seed: int,
) -> dict[str, float]:
    scores, outputs = compute_outputs(released, x_val)
    record = {"val_accuracy": accuracy(predict(scores.cpu().numpy(), validation.multilabel), validation.y)}
    if decoder is not None:
        record.update(_reconstruction_scores(decoder, filtered_view(through, outputs, seed + 3), x_val))
    return record


def _selection_score(record: dict[str, float], config: TrainConfig, vicious: bool) -> float:
    score = 1.0 - record["val_accuracy"]
    if vicious:
        score += config.alpha_ssim * (1.0 - record["val_ssim"]) + config.alpha_mse * record["val_mse"]
    return score


def _describe(record: dict[str, float]) -> str:
    parts = [f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}" for key, value in record.items()]
    return " ".join(parts)


def _finish_with_task_loss(
    config: TrainConfig,
    released: ReleasedOutput,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    validation: Dataset,
    x_val: torch.Tensor,
    pos_weight: torch.Tensor | None,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """``finish_ce_epochs`` epochs of F on L_C only (a fresh Adam); the last epoch is kept."""
    history: list[dict[str, float]] = []
    if not config.finish_ce_epochs:
        return history
    classifier = released.classifier
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    for epoch in range(1, config.finish_ce_epochs + 1):
        released.train()
        started, total = time.perf_counter(), 0.0
        batches = _batches(len(x_train), config.batch_size, generator)
        for index in _progress(batches, f"finish {epoch}/{config.finish_ce_epochs}", config.progress):
            index = index.to(x_train.device)
            loss = task_loss(classifier(x_train[index]), y_train[index], pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) / len(batches)
        record = {"finish_epoch": epoch, "task_loss": total, "train_seconds": time.perf_counter() - started}
        record.update(_validate(released, None, validation, x_val, _through_for(config), config.seed))
        history.append(record)
        _log(_describe(record), config.progress)
    return history


def _fit_decoder(
    config: TrainConfig,
    released: ReleasedOutput,
    decoder: nn.Module,
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    generator: torch.Generator,
    kind: str,
    through: ThroughFilter,
    noise: TorchNoise,
) -> list[dict[str, float]]:
    """Fit G on the frozen F's eval-mode (filtered) outputs with L_R; keep the epoch with the best validation score.

    Random filters draw fresh noise for every batch, as in joint training.
    """
    _, outputs_train = compute_outputs(released, x_train)
    _, outputs_val = compute_outputs(released, x_val)
    outputs_val = filtered_view(through, outputs_val, config.seed + 3)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    alpha_mse = config.alpha_mse if config.alpha_mse or config.alpha_ssim else 5.0
    history: list[dict[str, float]] = []
    best: tuple[float, dict] | None = None
    epochs = config.post_training_decoder_epochs
    for epoch in range(1, epochs + 1):
        decoder.train()
        started, total = time.perf_counter(), 0.0
        batches = _batches(len(x_train), config.batch_size, generator)
        for index in _progress(batches, f"{kind} decoder {epoch}/{epochs}", config.progress):
            index = index.to(x_train.device)
            with torch.no_grad():
                rows = through(outputs_train[index], noise)
            loss = reconstruction_loss(decoder(rows), x_train[index], alpha_mse, config.alpha_ssim, config.huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) / len(batches)
        record = {"decoder_epoch": epoch, "reconstruction_loss": total, "train_seconds": time.perf_counter() - started}
        record.update(_reconstruction_scores(decoder, outputs_val, x_val))
        record["selection"] = config.alpha_ssim * (1.0 - record["val_ssim"]) + alpha_mse * record["val_mse"]
        history.append(record)
        _log(_describe(record), config.progress)
        if best is None or record["selection"] < best[0]:
            best = (record["selection"], _state(decoder))
    assert best is not None
    decoder.load_state_dict(best[1])
    return history
