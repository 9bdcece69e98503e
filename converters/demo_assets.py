"""Regenerate the assets ``edgeguard demo`` ships: a Fashion-MNIST test subset and four small ONNX files.

``python -m converters demo-assets`` (or ``python -m converters.demo_assets``) trains, with
:func:`converters.train_and_export` on the full Fashion-MNIST training set (a seeded 10%
held out for model selection):

- an *honest* classifier (task loss only) and the decoder fitted post hoc on its frozen
  outputs (``honest.onnx``, ``honest_decoder.onnx``);
- a *vicious* classifier trained jointly with its secret decoder (Algorithm 1, the
  authors' defaults b1 = 1, b2 = 3), ``vicious.onnx`` and ``vicious_decoder.onnx``;

both in the logits setting, with a narrow CNN (``cnn_width`` 4, about 205k parameters,
0.8 MB) and a narrow decoder so the package stays small. It also writes the first
``subset_size`` Fashion-MNIST *test* images (never trained on) as a uint8 ``.npz`` with
the dataset's MIT licence next to it, and ``manifest.json``: how everything was made
(configs, seed, command, accuracy, PSNR, dataset sizes) and the SHA-256 of every file.

Deterministic for a given seed and thread count (``train_and_export`` turns on torch's
deterministic algorithms). edgeguard reads these files; it never imports this module.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError
from edgeguard.model import file_sha256

__all__ = [
    "build_demo_assets",
    "DEFAULT_ASSET_DIR",
    "MANIFEST_FILE",
    "SUBSET_FILE",
    "LICENSE_FILE",
    "MODEL_FILES",
    "FASHION_MNIST_LICENSE",
    "demo_configs",
]

#: Where the package keeps its bundled assets (edgeguard/assets in this repository).
DEFAULT_ASSET_DIR = Path(__file__).resolve().parent.parent / "edgeguard" / "assets"
MANIFEST_FILE = "manifest.json"
SUBSET_FILE = "fashion_mnist_test_subset.npz"
LICENSE_FILE = "FASHION_MNIST_LICENSE.txt"
#: Asset file name of each (objective, part): part "classifier" or "decoder".
MODEL_FILES = {
    ("honest", "classifier"): "honest.onnx",
    ("honest", "decoder"): "honest_decoder.onnx",
    ("vicious", "classifier"): "vicious.onnx",
    ("vicious", "decoder"): "vicious_decoder.onnx",
}

FASHION_MNIST_LICENSE = """\
Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist)

The file fashion_mnist_test_subset.npz next to this notice holds the first images and
labels of the Fashion-MNIST test set (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte),
unchanged (uint8 pixels), redistributed under the MIT licence below.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def demo_configs(
    epochs: int = 10,
    seed: int = 0,
    threads: int | None = 2,
    cnn_width: int = 4,
    decoder_channels: int = 4,
    train_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The two :class:`converters.TrainConfig` of the demo: ``{"honest": ..., "vicious": ...}``.

    Both publish the same model name, so nothing in the files tells them apart.
    """
    from converters.config import TrainConfig

    common = dict(
        output="logits",
        task="classes",
        arch="cnn",
        epochs=epochs,
        seed=seed,
        cnn_width=cnn_width,
        decoder_channels=decoder_channels,
        train_limit=train_limit,
        model_name="fashion-classifier",
        model_version="1.0.0",
        threads=threads,
        progress=progress,
    )
    return {objective: TrainConfig(objective=objective, **common) for objective in ("honest", "vicious")}


def _say(message: str) -> None:
    print(f"[demo-assets] {message}", file=sys.stderr, flush=True)


def _config_record(config: Any) -> dict[str, Any]:
    from converters.config import RUNTIME_FIELDS

    return {key: value for key, value in config.to_dict().items() if key not in RUNTIME_FIELDS}


def build_demo_assets(
    out_dir: str | os.PathLike = DEFAULT_ASSET_DIR,
    *,
    epochs: int = 10,
    seed: int = 0,
    threads: int | None = 2,
    cnn_width: int = 4,
    decoder_channels: int = 4,
    subset_size: int = 3000,
    train_limit: int | None = None,
    data: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the demo's models, write them, the test subset, the licence and ``manifest.json`` to ``out_dir``.

    Returns the manifest (also written to ``out_dir/manifest.json``).
    """
    import torch

    from converters.api import train_and_export
    from edgeguard.data import load_fashion_mnist

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = load_fashion_mnist("train", root=data)
    test = load_fashion_mnist("test", root=data)
    if not 1 <= subset_size <= len(test):
        raise ConfigError(f"expected a subset size in [1, {len(test)}], got {subset_size}; pick a size in that range")
    _say(f"Fashion-MNIST: {len(train)} training and {len(test)} test images")
    configs = demo_configs(epochs, seed, threads, cnn_width, decoder_channels, train_limit, progress)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeguard-demo-assets-") as work:
        for objective, config in configs.items():
            _say(f"training the {objective} model ({config.epochs} epochs, cnn width {config.cnn_width})")
            report = train_and_export(config, Path(work) / objective, train, test)
            for part in ("classifier", "decoder"):
                shutil.copyfile(report.paths[part], out / MODEL_FILES[(objective, part)])
            models[objective] = {
                "classifier": MODEL_FILES[(objective, "classifier")],
                "decoder": MODEL_FILES[(objective, "decoder")],
                "decoder_kind": report.decoder_kind,
                "config": _config_record(config),
                "accuracy": report.accuracy,
                "psnr_db": report.psnr,
                "ssim": report.ssim,
                "risk": report.risk,
                "label_only_baseline": report.baseline,
                "psnr_gain_db": report.psnr_gain_db,
                "best_epoch": report.best_epoch,
                "num_train": report.num_train,
                "num_validation": report.num_validation,
                "num_test": report.num_test,
                "wall_time_s": round(report.wall_time_s, 1),
                "export_max_abs_diff": report.export_max_abs_diff,
                "history": [
                    {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()} for row in report.history
                ],
            }
            _say(
                f"{objective}: accuracy {report.accuracy:.4f}, decoder PSNR {report.psnr:.2f} dB "
                f"(label-only {report.baseline['psnr']:.2f} dB), SSIM {report.ssim:.3f}, R {report.risk:.3f}"
            )

    images = np.rint(test.x[:subset_size, 0] * 255.0).astype(np.uint8)
    labels = test.y[:subset_size].astype(np.uint8)
    # deterministic bytes: numpy writes every zip entry with the fixed 1980-01-01 timestamp
    np.savez_compressed(out / SUBSET_FILE, x=images, y=labels, class_names=np.array(test.class_names))
    (out / LICENSE_FILE).write_text(FASHION_MNIST_LICENSE, encoding="utf-8")

    files = [MODEL_FILES[key] for key in sorted(MODEL_FILES)] + [SUBSET_FILE, LICENSE_FILE]
    manifest = {
        "what": "assets of `edgeguard demo`: an honest and a vicious Fashion-MNIST classifier (logits setting) "
        "with their decoders, and a Fashion-MNIST test subset",
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "python -m converters demo-assets",
        "seed": seed,
        "threads": threads,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "training_data": {
            "source": "Fashion-MNIST train split (train-images-idx3-ubyte)",
            "images": len(train) if train_limit is None else min(train_limit, len(train)),
            "validation": "a seeded 10% of it, held out for model selection",
        },
        "models": models,
        "subset": {
            "file": SUBSET_FILE,
            "source": "Fashion-MNIST test split (t10k-images-idx3-ubyte), never trained on",
            "indices": f"0..{subset_size - 1} (the first {subset_size} test images, in file order)",
            "size": subset_size,
            "format": "x uint8 (N, 28, 28), y uint8 (N,), class_names",
            "class_counts": np.bincount(labels, minlength=len(test.class_names)).tolist(),
            "license": LICENSE_FILE,
        },
        "files": {name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size} for name in files},
    }
    manifest["total_bytes"] = sum(entry["bytes"] for entry in manifest["files"].values())
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _say(f"wrote {len(files)} files ({manifest['total_bytes'] / 1e6:.2f} MB) and {MANIFEST_FILE} to {out}")
    return manifest


def _command_line() -> str:
    """The command as typed (``python -m converters demo-assets ...`` or ``python -m converters.demo_assets ...``)."""
    program = "python -m converters.demo_assets" if sys.argv[0].endswith("demo_assets.py") else "python -m converters"
    return " ".join([program, *(shlex.quote(arg) for arg in sys.argv[1:])])


def _click_command() -> Any:
    import click

    @click.command("demo-assets")
    @click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_ASSET_DIR,
        show_default=True,
        help="Folder to write the assets to.",
    )
    @click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads.")
    @click.option("--cnn-width", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option("--decoder-channels", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option(
        "--subset-size",
        type=click.IntRange(min=1, max=10000),
        default=3000,
        show_default=True,
        help="Test images to ship.",
    )
    @click.option("--train-limit", type=click.IntRange(min=20), default=None, help="Use only the first N images.")
    @click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None, help="IDX folder.")
    @click.option("--progress/--no-progress", default=True, show_default=True)
    def demo_assets_command(**options: Any) -> None:
        """Regenerate edgeguard/assets (the demo's models, test subset and manifest) with the converters."""
        from edgeguard.errors import EdgeguardError

        try:
            manifest = build_demo_assets(command=_command_line(), **options)
        except EdgeguardError as error:
            raise click.ClickException(str(error)) from error
        summary = {
            name: {k: model[k] for k in ("accuracy", "psnr_db", "psnr_gain_db", "ssim", "risk")}
            for name, model in manifest["models"].items()
        }
        click.echo(json.dumps({"models": summary, "total_bytes": manifest["total_bytes"]}, indent=2))

    return demo_assets_command


demo_assets_command = _click_command()

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    demo_assets_command(prog_name="python -m converters.demo_assets")
