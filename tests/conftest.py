"""Shared, session-scoped fixtures for every test file.

Data (skipped with a clear reason when Debian's ``dataset-fashion-mnist`` is missing;
CI installs it):

- ``fmnist_train_small``: the first 4000 Fashion-MNIST training images, ``edgeguard.data.Dataset``
  (x float32 (N, 1, 28, 28) in [0, 1], y int64, FMNIST class names).
- ``fmnist_test_small``: the first 500 Fashion-MNIST test images (held out from all training).

Models (trained once per session into a temporary folder, about 25 s on one core):

- ``tiny_threats``: ``{"honest": entry, "vicious": entry}``, two logits-setting CNNs trained
  by ``converters.train_and_export`` on ``fmnist_train_small`` (3600 train / 400 validation)
  for 2 epochs (batch 16, Adam lr 2e-3, seed 0), evaluated on ``fmnist_test_small``. The
  vicious one uses the default beta2 = 3 (joint decoder); the honest one has a post-hoc
  decoder fitted on its frozen outputs. Each entry is a dict::

      {"dir": Path, "classifier": Path (classifier.onnx), "decoder": Path (decoder.onnx),
       "report_path": Path (report.json), "report": dict (the parsed report.json),
       "config": converters.TrainConfig}

  Expect about 86% accuracy for both, a vicious decoder about 2.9 dB PSNR above the
  label-only baseline (16.4 vs 13.5 dB) and the honest post-hoc decoder about 1 dB above
  it. Treat the files as read-only.

Torch, when installed, runs with one thread in tests (``EDGEGUARD_TEST_THREADS`` overrides,
also for the training fixture): on a shared 2-core machine two OpenMP threads can be many
times slower than one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

TEST_THREADS = int(os.environ.get("EDGEGUARD_TEST_THREADS", "1"))
TRAIN_SMALL = 4000
TEST_SMALL = 500


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """Pin torch to ``TEST_THREADS`` threads for the whole session (no-op without torch)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(TEST_THREADS)


def _load_fmnist(split: str, limit: int) -> Any:
    from edgeguard.data import load_fashion_mnist
    from edgeguard.errors import DataNotFoundError

    try:
        return load_fashion_mnist(split, limit=limit)
    except DataNotFoundError as error:
        pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {error}")


@pytest.fixture(scope="session")
def fmnist_train_small() -> Any:
    """The first 4000 Fashion-MNIST training images (edgeguard.data.Dataset)."""
    return _load_fmnist("train", TRAIN_SMALL)


@pytest.fixture(scope="session")
def fmnist_test_small() -> Any:
    """The first 500 Fashion-MNIST test images (edgeguard.data.Dataset), never trained on."""
    return _load_fmnist("test", TEST_SMALL)


@pytest.fixture(scope="session")
def tiny_threats(tmp_path_factory: pytest.TempPathFactory, fmnist_train_small: Any, fmnist_test_small: Any) -> dict:
    """An honest and a vicious logits-setting CNN with their decoders and reports (see module docstring)."""
    pytest.importorskip("torch", reason="the converters need torch (pip install -e '.[torch]')")
    from converters import TrainConfig, train_and_export

    root = tmp_path_factory.mktemp("tiny_threats")
    threats: dict[str, dict[str, Any]] = {}
    for objective in ("honest", "vicious"):
        config = TrainConfig(
            objective=objective,
            output="logits",
            arch="cnn",
            epochs=2,
            batch_size=16,
            lr=2e-3,
            seed=0,
            threads=TEST_THREADS,
        )
        folder = root / objective
        train_and_export(config, folder, fmnist_train_small, fmnist_test_small)
        threats[objective] = {
            "dir": folder,
            "classifier": folder / "classifier.onnx",
            "decoder": folder / "decoder.onnx",
            "report_path": folder / "report.json",
            "report": json.loads((folder / "report.json").read_text()),
            "config": config,
        }
    return threats


def pytest_report_header(config: pytest.Config) -> str:
    return f"edgeguard tests: torch threads = {TEST_THREADS}"
