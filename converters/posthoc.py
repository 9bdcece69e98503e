"""The refit attacker: a decoder fitted after the fact on what a frozen classifier releases through a filter.

:func:`fit_post_hoc_decoder` takes any classifier ONNX file (honest or not), runs it with
onnxruntime, applies the REAL edgeguard filters of ``release`` (fresh numpy noise for
every epoch), fits the converters' decoder on those rows with L_R, and scores it on the
test set against the label-only baseline. For an honest model this is the yardstick of
"leaks more than an honest model of the same architecture"; for a model trained without
the filter it is the weak, refitting attacker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from converters.export import run_onnx_batched
from converters.losses import reconstruction_loss, ssim
from converters.models import build_decoder
from converters.report import leakage_scores, mahalanobis_reference
from converters.tasks import accuracy, label_only_baseline, predict
from converters.through_filter import apply_release_filter, released_kind
from edgeguard.data import Dataset, validation_split

__all__ = ["fit_post_hoc_decoder"]


def fit_post_hoc_decoder(
    classifier: str | os.PathLike,
    release: str,
    train_data: Dataset,
    test_data: Dataset,
    *,
    output_kind: str = "logits",
    decoder_input: str = "released",
    decoder_arch: str = "small",
    decoder_channels: int = 16,
    epochs: int = 4,
    batch_size: int = 250,
    lr: float = 1e-3,
    alpha_mse: float = 5.0,
    alpha_ssim: float = 1.0,
    seed: int = 0,
    validation_fraction: float = 0.1,
) -> dict[str, Any]:
    """Fit a decoder on ``classifier``'s outputs released through ``release``; return its test-set leakage.

    Keeps the epoch with the best validation score. The returned dict has accuracy,
    psnr, ssim, risk, baseline (label-only), psnr_gain_db, release, decoder_input,
    train_time_s.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    multiclass = not train_data.multilabel
    task_type = "multiclass" if multiclass else "multilabel"
    kind = released_kind(release, output_kind, task_type)
    raw_train = run_onnx_batched(classifier, train_data.x)
    raw_test = run_onnx_batched(classifier, test_data.x)
    fit_index, val_index = validation_split(len(train_data), validation_fraction, seed)
    x_fit, x_val = torch.from_numpy(train_data.x[fit_index]), torch.from_numpy(train_data.x[val_index])
    val_rows = torch.from_numpy(apply_release_filter(raw_train[val_index], release, output_kind, task_type, seed + 1))
    decoder = build_decoder(
        raw_train.shape[1],
        tuple(train_data.x.shape[1:]),
        decoder_channels,
        arch=decoder_arch,
        reads=decoder_input,
        released_kind=kind,
    )
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, dict] | None = None
    history = []
    for epoch in range(1, epochs + 1):
        rows = torch.from_numpy(
            apply_release_filter(raw_train[fit_index], release, output_kind, task_type, seed + 10 + epoch)
        )
        decoder.train()
        order = torch.randperm(len(rows), generator=generator)
        for batch in order.split(batch_size):
            if len(batch) < 2:
                continue
            loss = reconstruction_loss(decoder(rows[batch]), x_fit[batch], alpha_mse, alpha_ssim)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        decoder.eval()
        with torch.no_grad():
            xhat = torch.cat([decoder(val_rows[i : i + 1000]) for i in range(0, len(val_rows), 1000)])
        score = alpha_ssim * (1.0 - float(ssim(x_val, xhat))) + alpha_mse * float(((xhat - x_val) ** 2).mean())
        history.append({"epoch": epoch, "selection": score})
        if best is None or score < best[0]:
            best = (score, {key: value.detach().clone() for key, value in decoder.state_dict().items()})
    assert best is not None
    decoder.load_state_dict(best[1])
    decoder.eval()
    test_rows = torch.from_numpy(apply_release_filter(raw_test, release, output_kind, task_type, seed))
    with torch.no_grad():
        reconstructions = torch.cat([decoder(test_rows[i : i + 1000]) for i in range(0, len(test_rows), 1000)]).numpy()
    predictions = predict(raw_test, test_data.multilabel) if output_kind == "logits" or multiclass else (raw_test > 0.5)
    reference = mahalanobis_reference(train_data.x)
    leak = leakage_scores(test_data.x, reconstructions, reference)
    baseline = leakage_scores(test_data.x, label_only_baseline(train_data, predictions), reference)
    return {
        "classifier": str(Path(classifier)),
        "release": release,
        "decoder_input": decoder_input,
        "accuracy": accuracy(predictions, test_data.y),
        "psnr": leak.psnr,
        "ssim": leak.ssim,
        "risk": leak.risk,
        "baseline": baseline.to_dict(),
        "psnr_gain_db": leak.psnr - baseline.psnr,
        "epochs": epochs,
        "history": history,
        "train_time_s": time.perf_counter() - started,
    }
