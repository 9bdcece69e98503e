"""Tiny torch models and ONNX helpers for tests/test_onnx_torch.py.

The torch models mirror the project's classifier families at toy size (a few thousand
weights, 8x8 inputs) so that exporting and running them stays fast on one CPU thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

INPUT_SHAPE = (3, 8, 8)


class Standardize(nn.Module):
    """(x - mean) / std with buffers, like converters.models.Standardize."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Standardize, conv-BN-ReLU, max-pool, dropout, conv-BN-ReLU, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Standardize()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.pool(F.relu(self.bn1(self.conv1(self.norm(x))))))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv plus a 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + self.shortcut(act)


class TinyWRN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.block = WideBlock(4, 8, 2)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.block(self.conv(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.head(x.view(x.size(0), -1))


class MLP(nn.Module):
    """Reshape(N, -1), Linear-BN1d-LeakyReLU, Linear-Tanh, Linear, Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = F.leaky_relu(self.bn(self.fc1(x)), 0.1)
        return torch.softmax(self.fc3(torch.tanh(self.fc2(x))), dim=1)


class DynamicBatchNet(nn.Module):
    """Uses the batch size in shape arithmetic, and returns two outputs.

    Reflect padding, a transposed conv, ReLU6, a ceil-mode average pool without the
    pads, a mean over H and W, a learned token expanded to the batch, an L2
    normalisation, and (logits, log-probabilities).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)
        self.token = nn.Parameter(torch.randn(1, 4))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        h = self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        h = self.pool(F.relu6(self.up(h)))
        h = torch.cat([h.mean(dim=(2, 3)), self.token.expand(n, -1)], 1)
        h = h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
        logits = self.fc(h).reshape(n, -1)
        return logits, torch.log_softmax(logits, -1)


MODELS = {"cnn": SmallCNN, "wrn": TinyWRN, "mlp": MLP, "dynbatch": DynamicBatchNet}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named model in eval mode, with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def export(model: nn.Module, path: os.PathLike, exporter: str, opset: int, **kwargs) -> None:
    """torch.onnx.export with a dynamic batch dimension, quietly."""
    x = torch.rand(2, *INPUT_SHAPE)
    names = ["logits", "log_probs"] if isinstance(model, DynamicBatchNet) else ["y"]
    if exporter == "dynamo":
        kwargs.setdefault("dynamic_shapes", ({0: torch.export.Dim("batch")},))
    else:
        kwargs.setdefault("dynamic_axes", {"x": {0: "batch"}})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            os.fspath(path),
            dynamo=exporter == "dynamo",
            opset_version=opset,
            input_names=["x"],
            output_names=names,
            **kwargs,
        )


# ------------------------------------------------------------ hand-built graphs

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    extra_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """A model with the given nodes; input/output types and shapes are left to inference."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, _NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=opsets, ir_version=8))
    for output in model.graph.output:  # custom ops, Loop: nothing inferred, declare a float vector
        tensor_type = output.type.tensor_type
        if tensor_type.elem_type == TensorProto.UNDEFINED:
            tensor_type.elem_type = TensorProto.FLOAT
        if not tensor_type.HasField("shape"):
            tensor_type.shape.dim.add()
    return model


def single_op(
    op: str,
    inputs: dict[str, np.ndarray],
    attrs: dict | None = None,
    consts: dict[str, np.ndarray] | None = None,
    order: list[str] | None = None,
    opset: int = 17,
    n_outputs: int = 1,
) -> onnx.ModelProto:
    """One node fed by graph ``inputs`` and initializer ``consts``, in ``order`` ('' = omitted)."""
    order = order if order is not None else [*inputs, *(consts or {})]
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op, order, outputs, name=f"{op.lower()}_node", **(attrs or {}))
    return graph_model([node], inputs, outputs, consts, opset)
