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
    "PaperDecoder",
    "DecoderInput",
    "ReadingDecoder",
    "DECODER_ARCHITECTURES",
    "DECODER_INPUTS",
    "check_decoder_input",
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
    """The graph a user receives: ``F``, an optional output temperature, then nothing (logits), Softmax or Sigmoid.

    ``temperature`` T != 1 divides the scores by T in the exported graph (one Div node): an
    information-preserving reparametrisation that keeps every prediction.
    """

    def __init__(self, classifier: nn.Module, activation: str = "none", temperature: float = 1.0) -> None:
        super().__init__()
        if activation not in ("none", "softmax", "sigmoid"):
            raise InvalidInputError(f"expected activation 'none', 'softmax' or 'sigmoid', got {activation!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInputError(f"expected a positive finite output temperature, got {temperature!r}")
        self.classifier = classifier
        self.activation = activation
        self.temperature = float(temperature)

    def activation_of(self, scores: torch.Tensor) -> torch.Tensor:
        """The released output for raw scores ``scores`` (N, K)."""
        if self.temperature != 1.0:
            scores = scores / self.temperature
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


class PaperDecoder(nn.Module):
    """The authors' transposed-convolution decoder: a dense layer to a (4c, H/8, W/8) map, three stride-2
    transpose convolutions (4c -> 2c -> c -> image channels, BatchNorm-ReLU between) and a sigmoid.

    At 32x32 (the paper resizes every dataset to 32x32) the map grows 4 -> 8 -> 16 -> 32; other
    sizes are cropped. A BatchNorm on the input rescales logits and probabilities alike.
    """

    def __init__(self, num_inputs: int, input_shape: tuple[int, int, int], channels: int = 32) -> None:
        super().__init__()
        image_channels, height, width = input_shape
        self.output_size = (height, width)
        self.base = (4 * channels, math.ceil(height / 8), math.ceil(width / 8))
        self.dense = nn.Sequential(
            nn.BatchNorm1d(num_inputs),
            nn.Linear(num_inputs, math.prod(self.base), bias=False),
            nn.BatchNorm1d(math.prod(self.base)),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for in_channels, out_channels in ((4 * channels, 2 * channels), (2 * channels, channels)):
            layers += [
                nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(channels, image_channels, 4, stride=2, padding=1), nn.Sigmoid()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, released: torch.Tensor) -> torch.Tensor:
        image = self.upsample(self.dense(released).view(-1, *self.base))
        height, width = self.output_size
        if image.shape[-2:] != (height, width):
            image = image[..., :height, :width]
        return image


DECODER_ARCHITECTURES = ("small", "paper")
DECODER_INPUTS = ("released", "logits", "probabilities", "log-probabilities")
#: Probabilities are clamped to this before the log (the smallest normal float32, as edgeguard's audit does).
PROBABILITY_FLOOR = 1.1754943508222875e-38


class DecoderInput(nn.Module):
    """How the server's decoder reads a released row (the first op of decoder.onnx).

    ``mode``: "released" (as it is), "logits" (logits or scores as they are),
    "probabilities" (softmax of logits; probabilities as they are) or
    "log-probabilities" (row-centred log-softmax of logits, or row-centred
    ``log(max(p, floor))`` of probabilities: softmax is one-to-one with the logits up
    to a shift per row, so this recovers them). ``released_kind`` is what the rows are
    ("logits", "probabilities", "scores" or "labels").
    """

    def __init__(self, mode: str = "released", released_kind: str = "logits") -> None:
        super().__init__()
        check_decoder_input(mode, released_kind)
        self.mode, self.released_kind = mode, released_kind

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.mode in ("released", "logits") or (
            self.mode == "probabilities" and self.released_kind == "probabilities"
        ):
            return rows
        if self.mode == "probabilities":
            return torch.softmax(rows, dim=1)
        if self.released_kind == "probabilities":
            logs = torch.log(rows.clamp(min=PROBABILITY_FLOOR))
        else:
            logs = torch.log_softmax(rows, dim=1)
        return logs - logs.mean(dim=1, keepdim=True)


def check_decoder_input(mode: str, released_kind: str) -> None:
    """Raise InvalidInputError when a decoder cannot read ``released_kind`` rows as ``mode``."""
    if mode not in DECODER_INPUTS:
        raise InvalidInputError(f"expected a decoder input in {list(DECODER_INPUTS)}, got {mode!r}")
    allowed = {
        "released": ("logits", "probabilities", "scores", "labels"),
        "logits": ("logits", "scores"),
        "probabilities": ("logits", "probabilities"),
        "log-probabilities": ("logits", "probabilities"),
    }[mode]
    if released_kind not in allowed:
        raise InvalidInputError(
            f"expected released {' or '.join(allowed)} for --decoder-input {mode}, got released {released_kind}; "
            "use --decoder-input released (the rows as they are) or another --decoder-input"
        )


class ReadingDecoder(nn.Module):
    """:class:`DecoderInput` followed by a decoder: released rows -> images (what decoder.onnx holds)."""

    def __init__(self, reader: DecoderInput, decoder: nn.Module) -> None:
        super().__init__()
        self.reader, self.decoder = reader, decoder

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.reader(rows))


def build_decoder(
    num_inputs: int,
    input_shape: tuple[int, int, int],
    channels: int = 16,
    *,
    arch: str = "small",
    reads: str = "released",
    released_kind: str = "logits",
) -> nn.Module:
    """The decoder ``G`` for a classifier with ``num_inputs`` outputs and images of ``input_shape``.

    ``arch`` "small" (:class:`Decoder`) or "paper" (:class:`PaperDecoder`); with ``reads`` other than
    "released" the decoder first maps the rows (:class:`DecoderInput`).
    """
    if arch not in DECODER_ARCHITECTURES:
        raise InvalidInputError(f"expected a decoder architecture in {DECODER_ARCHITECTURES}, got {arch!r}")
    body: nn.Module = (
        Decoder(num_inputs, input_shape, channels)
        if arch == "small"
        else PaperDecoder(num_inputs, input_shape, channels)
    )
    if reads == "released":
        check_decoder_input(reads, released_kind)
        return body
    return ReadingDecoder(DecoderInput(reads, released_kind), body)
