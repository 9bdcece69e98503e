"""Classifier and decoder architectures the server trains.

Classifiers (``F``) map pixels in [0, 1] (N, C, H, W) to K raw scores (logits). Each one
starts with a :class:`Standardize` layer, so the normalisation is baked into the exported
graph and the user feeds plain [0, 1] pixels. The decoder (``G``) maps the classifier's
released output (logits or probabilities, K values) back to an image in [0, 1].

- ``cnn``: a small CNN with BatchNorm (about 0.85 M parameters, 3 M multiply-adds per image);
- ``wrn``: a pre-activation WideResNet (Zagoruyko & Komodakis, 2016), depth 6n+4 and
  width k; the paper used WRN-28-5 (about 9 M parameters), the CPU-friendly default is WRN-10-2;
- ``mlp``: two hidden layers with BatchNorm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeguard.errors import InvalidInputError

__all__ = [
    "ARCHITECTURES",
    "Standardize",
    "SmallCNN",
    "WideResNet",
    "MLP",
    "Decoder",
    "ReleasedOutput",
    "build_classifier",
    "build_decoder",
]

ARCHITECTURES = ("cnn", "wrn", "mlp")


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with fixed statistics stored as buffers."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_block(in_channels: int, out_channels: int, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class SmallCNN(nn.Module):
    """conv5x5-pool, conv3x3-pool, conv3x3 (each with BatchNorm), a hidden dense layer, K outputs.

    Sized for CPUs: about 3 M multiply-adds per 28x28 image at ``width`` 16.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int, width: int = 16, hidden: int = 256) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.features = nn.Sequential(
            *_conv_block(channels, width, kernel=5),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 4 * width),
        )
        flat = 4 * width * (height // 4) * (width_px // 4)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _WideBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ 1x1 projection when shapes change)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + residual


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: three groups of (depth - 4) / 6 blocks with 16k, 32k, 64k channels."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int, depth: int = 10, width: int = 2) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise InvalidInputError(
                f"expected a WideResNet depth of the form 6n+4 with n >= 1 (10, 16, 22, 28...), got {depth}"
            )
        if width < 1:
            raise InvalidInputError(f"expected a WideResNet width >= 1, got {width}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)]
        in_channels = widths[0]
        for group, out_channels in enumerate(widths[1:]):
            for block in range(blocks):
                stride = 2 if group > 0 and block == 0 else 1
                layers.append(_WideBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        layers += [nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Flatten, two hidden layers (Linear-BN-ReLU), K outputs."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_outputs: int, hidden: tuple[int, int] = (512, 256)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = math.prod(input_shape)
        for units in hidden:
            layers += [nn.Linear(size, units, bias=False), nn.BatchNorm1d(units), nn.ReLU()]
            size = units
        layers.append(nn.Linear(size, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """``G``: K released values -> image in [0, 1] of ``input_shape``.

    A two-layer dense net to a (2c, H/4, W/4) map, then two stride-2 transpose
    convolutions (the first with BatchNorm-ReLU, the second to the image channels) and a
    sigmoid; the result is cropped to (H, W) when H or W is not a multiple of 4. The
    first BatchNorm also rescales the input, so raw logits and probabilities both work.
    """

    def __init__(
        self, num_inputs: int, input_shape: tuple[int, int, int], channels: int = 16, hidden: int = 256
    ) -> None:
        super().__init__()
        image_channels, height, width = input_shape
        self.output_size = (height, width)
        self.base = (2 * channels, math.ceil(height / 4), math.ceil(width / 4))
        self.dense = nn.Sequential(
            nn.BatchNorm1d(num_inputs),
            nn.Linear(num_inputs, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.base), bias=False),
            nn.BatchNorm1d(math.prod(self.base)),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, image_channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, released: torch.Tensor) -> torch.Tensor:
        grid = self.dense(released).view(-1, *self.base)
        image = self.upsample(grid)
        height, width = self.output_size
        if image.shape[-2:] != (height, width):
            image = image[..., :height, :width]
        return image


class ReleasedOutput(nn.Module):
    """The graph a user receives: ``F`` followed by nothing (logits), Softmax or Sigmoid (probabilities)."""

    def __init__(self, classifier: nn.Module, activation: str = "none") -> None:
        super().__init__()
        if activation not in ("none", "softmax", "sigmoid"):
            raise InvalidInputError(f"expected activation 'none', 'softmax' or 'sigmoid', got {activation!r}")
        self.classifier = classifier
        self.activation = activation

    def activation_of(self, scores: torch.Tensor) -> torch.Tensor:
        """The released output for raw scores ``scores`` (N, K)."""
        if self.activation == "softmax":
            return torch.softmax(scores, dim=1)
        if self.activation == "sigmoid":
            return torch.sigmoid(scores)
        return scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation_of(self.classifier(x))


def build_classifier(
    arch: str,
    input_shape: tuple[int, int, int],
    num_outputs: int,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    *,
    cnn_width: int = 16,
    wrn_depth: int = 10,
    wrn_width: int = 2,
) -> nn.Sequential:
    """``Standardize`` followed by the named architecture (``cnn``, ``wrn`` or ``mlp``)."""
    if arch not in ARCHITECTURES:
        raise InvalidInputError(f"expected an architecture in {ARCHITECTURES}, got {arch!r}")
    channels = input_shape[0]
    if arch == "cnn":
        if min(input_shape[1:]) < 4:
            raise InvalidInputError(f"expected images of at least 4x4 pixels for the cnn, got {input_shape}")
        body: nn.Module = SmallCNN(input_shape, num_outputs, width=cnn_width)
    elif arch == "wrn":
        body = WideResNet(input_shape, num_outputs, depth=wrn_depth, width=wrn_width)
    else:
        body = MLP(input_shape, num_outputs)
    normalise = Standardize(mean or [0.5] * channels, std or [0.5] * channels)
    return nn.Sequential(normalise, body)


def build_decoder(num_inputs: int, input_shape: tuple[int, int, int], channels: int = 16) -> Decoder:
    """The decoder ``G`` for a classifier with ``num_inputs`` outputs and images of ``input_shape``."""
    return Decoder(num_inputs, input_shape, channels)
