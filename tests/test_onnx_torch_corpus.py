"""A corpus of torch.nn layer types through both torch exporters: edgeguard.onnx_torch runs them all.

Two composite models (a classifier-like and a decoder-like stack) keep the corpus CI-cheap:
four exports in all. Each export must match onnxruntime, keep gradients, and raise no
``shape-value-flow`` finding in the static audit (exported shape arithmetic only feeds
Reshape-like ops).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _onnx_models import INPUT_SHAPE, export
from torch import nn

from edgeguard.onnx_torch import to_torch
from edgeguard.vetting.static import shape_flow_findings

torch.set_num_threads(1)
C, H, W = INPUT_SHAPE


def classifier_layers() -> nn.Module:
    return nn.Sequential(
        nn.ZeroPad2d(1),
        nn.Conv2d(C, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(0.2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.LeakyReLU(0.1),
        nn.GELU(),
        nn.SiLU(),
        nn.ELU(),
        nn.ReLU6(),
        nn.Hardtanh(),
        nn.Hardswish(),
        nn.Hardsigmoid(),
        nn.Mish(),
        nn.Softplus(),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.LayerNorm(16),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.Linear(16, 10),
        nn.LogSoftmax(1),
    )


def decoder_layers() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(C * H * W, 8 * 4 * 4),
        nn.Unflatten(1, (8, 4, 4)),  # the TorchScript exporter writes Mod at opset 17
        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Upsample(scale_factor=0.5, mode="bilinear"),
        nn.PixelShuffle(2),
        nn.Conv2d(2, 1, 3, padding=1),
        nn.Sigmoid(),
    )


CORPUS = {"classifier": classifier_layers, "decoder": decoder_layers}


@pytest.mark.parametrize("exporter, opset", [("torchscript", 17), ("dynamo", 18)], ids=["torchscript-op17", "dynamo-op18"])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_layer_corpus_runs_like_onnxruntime(tmp_path, name, exporter, opset):
    torch.manual_seed(0)
    model = CORPUS[name]().eval()
    path = tmp_path / f"{name}.onnx"
    export(model, path, exporter, opset)
    proto = onnx.load(str(path))
    module = to_torch(proto)
    x = torch.rand(3, *INPUT_SHAPE)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    got = module(x)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-4, rtol=1e-4)
    got.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters() if p.requires_grad)
    assert shape_flow_findings(proto) == []
    with torch.no_grad():
        np.testing.assert_allclose(module(x[:1]).numpy(), want[:1], atol=1e-4, rtol=1e-4)  # batch 1 too
