"""The adaptive attacker: a server that knows the filter and retrains its decoder on filtered outputs.

With torch, the server's own decoder (``decoder.onnx`` through
:func:`edgeguard.onnx_torch.to_torch`) is fine-tuned with Adam on MSE over
(mapped filtered output, image) pairs of the attacker's split, behind a per-feature
affine input layer (trainable, initialised to move the filtered outputs' mean and
spread to those of the raw outputs the decoder was trained on). Random filters are
re-drawn every epoch (the attacker can sample as many releases as it likes); the epoch
with the lowest MSE on a held-out part of the split is kept.

The attacker then keeps, by MSE on the held-out part, the best of: the fine-tuned
decoder; the server's decoder as trained; a numpy k-NN decoder on standardised mapped
outputs (:func:`edgeguard.metrics.baselines.knn_reconstruct`); and the label-only guess (the
mean attacker image of the released top-1 class). Without torch the fine-tuned
candidate is missing and the others remain. So the adaptive attacker never does worse,
on held-out data, than the decoder as trained or than the label alone.

PSNR and SSIM are measured on the winner's reconstructions. For R they may first be
projected onto the top principal components of the attacker's images
(``mean + P_k P_k^T (xhat - mean)``), with k picked on the held-out part to maximise R
(no projection is one of the choices): R weighs each pixel direction by the inverse of
its variance, so errors in low-variance directions cost the most, and an attacker who is
scored by R removes them with its own data. Each measure thus gets the attacker's best
post-processing for it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError

__all__ = ["AttackSettings", "AttackData", "AttackResult", "Projector", "torch_available", "adaptive_attack"]

ATTACKERS = ("auto", "finetune", "knn")
_PREDICT_BATCH = 500


def torch_available() -> bool:
    """True when torch can be imported (the fine-tuning attacker needs it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class AttackSettings:
    """Knobs of the adaptive attacker."""

    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    projection_ranks: tuple[int, ...] = (10, 20, 50, 100, 200, 400)
    neighbours: int = 10  # k of the k-NN candidate
    attacker: str = "auto"  # "auto" (fine-tune when torch is installed) | "finetune" | "knn" (no fine-tuning)

    def __post_init__(self) -> None:
        if self.attacker not in ATTACKERS:
            raise ConfigError(f"expected attacker in {ATTACKERS}, got {self.attacker!r}; pass one of them")
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0 or self.neighbours < 1:
            raise ConfigError(
                f"expected epochs >= 0, batch_size >= 1, learning_rate > 0 and neighbours >= 1, got {self.epochs}, "
                f"{self.batch_size}, {self.learning_rate}, {self.neighbours}"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"expected validation_fraction in (0, 1), got {self.validation_fraction}")

    def resolved_attacker(self) -> str:
        """ "finetune" or "knn" ("auto" picks by whether torch is installed)."""
        if self.attacker == "auto":
            return "finetune" if torch_available() else "knn"
        if self.attacker == "finetune" and not torch_available():
            raise ConfigError(
                "expected torch for attacker='finetune', got none installed; pip install torch==2.13.0 (CPU), "
                "or use attacker='knn' / 'auto'"
            )
        return self.attacker


class Projector:
    """Principal components of reference images, to project reconstructions onto their span."""

    def __init__(self, images: np.ndarray) -> None:
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        self.mean = flat.mean(axis=0)
        _, vectors = np.linalg.eigh(np.cov(flat, rowvar=False))
        self.components = vectors[:, ::-1]  # columns, largest variance first

    @property
    def dimension(self) -> int:
        return len(self.mean)

    def project(self, images: np.ndarray, rank: int | None) -> np.ndarray:
        """``mean + P P^T (x - mean)`` with the top ``rank`` components (None or >= D: unchanged)."""
        if rank is None or rank >= self.dimension:
            return np.asarray(images, dtype=np.float32)
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1) - self.mean
        basis = self.components[:, :rank]
        projected = (flat @ basis) @ basis.T + self.mean
        return projected.reshape(np.shape(images)).astype(np.float32)


@dataclass
class AttackData:
    """What the attacker has (mapped filtered outputs, images, labels) and what it must reconstruct.

    ``train_inputs(epoch)`` returns the mapped filtered outputs of the training part for
    that epoch (fresh noise for random filters). ``native_inputs`` are the mapped *raw*
    outputs of the training part (what the decoder was trained on). ``*_groups`` are the
    released top-1 classes; ``train_labels`` the true classes of the training images.
    ``server_*`` are the decoder-as-trained reconstructions (None: not a candidate).
    """

    train_inputs: Callable[[int], np.ndarray]
    train_images: np.ndarray
    train_labels: np.ndarray
    native_inputs: np.ndarray
    validation_inputs: np.ndarray
    validation_images: np.ndarray
    validation_groups: np.ndarray
    eval_inputs: np.ndarray
    eval_groups: np.ndarray
    server_validation: np.ndarray | None = None
    server_eval: np.ndarray | None = None


@dataclass
class AttackResult:
    """Reconstructions of the evaluation images and how they were made."""

    reconstructions: np.ndarray  # the winning candidate's (PSNR, SSIM and the pictures use these)
    projected: np.ndarray  # the same, projected onto the chosen principal components (R uses these)
    decoder: str  # the winning candidate: "finetuned" | "server" | "knn" | "label_only"
    best_epoch: int | None  # fine-tuning epoch kept (0 = the adapted decoder before any step); None without torch
    projection_rank: int | None  # None = no projection
    validation_mse: dict[str, float]  # held-out MSE of every candidate


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _predict(module: Any, inputs: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    with torch.no_grad():
        parts = [
            module(torch.from_numpy(np.ascontiguousarray(inputs[i : i + _PREDICT_BATCH], dtype=np.float32))).numpy()
            for i in range(0, len(inputs), _PREDICT_BATCH)
        ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _affine_init(inputs: np.ndarray, native: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature scale and shift taking ``inputs``' mean and std to ``native``'s (constant features: to its mean)."""
    inputs, native = np.asarray(inputs, dtype=np.float64), np.asarray(native, dtype=np.float64)
    spread = inputs.std(axis=0)
    scale = np.where(spread > 1e-6, native.std(axis=0) / np.maximum(spread, 1e-6), 0.0)
    shift = native.mean(axis=0) - scale * inputs.mean(axis=0)
    return scale.astype(np.float32), shift.astype(np.float32)


def _finetune(
    decoder_model: Any, data: AttackData, settings: AttackSettings, seed: int, threads: int | None
) -> tuple[Any, int, list[float]]:
    """Fine-tune an adapted copy of the decoder; returns (module with the best state, best epoch, held-out MSEs)."""
    import torch

    from edgeguard.onnx_torch import to_torch

    class Adapted(torch.nn.Module):
        def __init__(self, decoder: torch.nn.Module, scale: np.ndarray, shift: np.ndarray) -> None:
            super().__init__()
            self.decoder = decoder
            self.scale = torch.nn.Parameter(torch.from_numpy(scale))
            self.shift = torch.nn.Parameter(torch.from_numpy(shift))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(x * self.scale + self.shift)

    with _torch_threads(threads):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        first = data.train_inputs(1)
        module = Adapted(to_torch(decoder_model), *_affine_init(first, data.native_inputs))
        images = torch.from_numpy(np.ascontiguousarray(data.train_images, dtype=np.float32))
        optimiser = torch.optim.Adam(module.parameters(), lr=settings.learning_rate)

        def validation_mse() -> float:
            recon = _predict(module, data.validation_inputs)
            return float(np.mean((recon - data.validation_images) ** 2))

        history = [validation_mse()]
        best_epoch, best_state = 0, copy.deepcopy(module.state_dict())
        for epoch in range(1, settings.epochs + 1):
            epoch_inputs = first if epoch == 1 else data.train_inputs(epoch)
            inputs = torch.from_numpy(np.ascontiguousarray(epoch_inputs, dtype=np.float32))
            module.train()
            order = torch.randperm(len(inputs), generator=generator)
            diverged = False
            for start in range(0, len(order), settings.batch_size):
                batch = order[start : start + settings.batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(module(inputs[batch]), images[batch])
                if not torch.isfinite(loss):
                    diverged = True
                    break
                loss.backward()
                optimiser.step()
            mse = validation_mse() if not diverged else float("inf")
            history.append(mse)
            if mse < history[best_epoch]:
                best_epoch, best_state = epoch, copy.deepcopy(module.state_dict())
            if diverged:
                break
        module.load_state_dict(best_state)
    return module, best_epoch, history


def _standardised(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    train = np.asarray(train, dtype=np.float64)
    centre, scale = train.mean(axis=0), train.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return [(np.asarray(a, dtype=np.float64) - centre) / scale for a in (train, *others)]


def _pick_rank(
    reconstructions: np.ndarray,
    images: np.ndarray,
    projector: Projector | None,
    reference: Any,
    ranks: tuple[int, ...],
) -> int | None:
    """The projection rank (None = none) with the highest R on the held-out part."""
    from edgeguard.metrics import reconstruction_risk

    if projector is None or reference is None or len(images) < 2:
        return None
    best_rank, best_risk = None, reconstruction_risk(images, reconstructions, reference)
    for rank in ranks:
        if rank >= projector.dimension:
            continue
        risk = reconstruction_risk(images, projector.project(reconstructions, rank), reference)
        if risk > best_risk:
            best_rank, best_risk = rank, risk
    return best_rank


def adaptive_attack(
    decoder_model: Any,
    data: AttackData,
    *,
    settings: AttackSettings,
    projector: Projector | None,
    reference: Any,
    seed: int = 0,
    threads: int | None = None,
) -> AttackResult:
    """Reconstruct the evaluation images the way an attacker who knows the filter would (module docstring).

    ``decoder_model`` is the decoder's ONNX (path or ModelProto); ``reference`` the
    :class:`~edgeguard.metrics.MahalanobisReference` the projection rank is chosen with.
    """
    from edgeguard.metrics.baselines import knn_reconstruct, label_only_reconstruct

    candidates: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (validation, eval) reconstructions
    best_epoch: int | None = None
    if settings.resolved_attacker() == "finetune":
        module, best_epoch, _ = _finetune(decoder_model, data, settings, seed, threads)
        with _torch_threads(threads):
            candidates["finetuned"] = (_predict(module, data.validation_inputs), _predict(module, data.eval_inputs))
    if data.server_validation is not None and data.server_eval is not None:
        candidates["server"] = (data.server_validation, data.server_eval)
    fit, validation, evaluation = _standardised(data.train_inputs(0), data.validation_inputs, data.eval_inputs)
    train_images = np.asarray(data.train_images, dtype=np.float32)
    candidates["knn"] = (
        knn_reconstruct(fit, train_images, validation, settings.neighbours),
        knn_reconstruct(fit, train_images, evaluation, settings.neighbours),
    )
    candidates["label_only"] = (
        label_only_reconstruct(data.train_labels, train_images, data.validation_groups),
        label_only_reconstruct(data.train_labels, train_images, data.eval_groups),
    )
    mse = {name: float(np.mean((v - data.validation_images) ** 2)) for name, (v, _) in candidates.items()}
    winner = min(mse, key=lambda name: (mse[name], list(candidates).index(name)))
    validation_recon, eval_recon = candidates[winner]
    rank = _pick_rank(validation_recon, data.validation_images, projector, reference, settings.projection_ranks)
    eval_recon = np.asarray(eval_recon, dtype=np.float32)
    projected = projector.project(eval_recon, rank) if projector is not None else eval_recon
    return AttackResult(eval_recon, projected, winner, best_epoch, rank, mse)
