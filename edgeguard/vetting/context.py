"""The run context of one vet: everything the checks share while one model is vetted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.vetting.running import scaler

__all__ = ["VetContext"]


@dataclass
class VetContext:
    """Everything the checks share while one model is vetted."""

    path: Path
    settings: Any  # VetSettings, resolved (nested settings filled in)
    table: dict[str, Any]
    loaded: Any  # edgeguard.model.LoadedModel (the prepared graph: one (N, K) output)
    info: Any  # ModelInfo with the caller's overrides
    probe: Any  # Probe
    session: Any
    run_inputs: Callable[[np.ndarray], np.ndarray]
    outputs: np.ndarray  # the model's outputs on the probe inputs
    report: Any  # VetReport being filled
    say: Callable[[str], None]
    augment_seed: int
    twin_module: Any = None  # the trained twin's torch module, once the leakage check has built it

    @property
    def is_image(self) -> bool:
        return self.probe.images.ndim == 4

    def run_images(self, images: np.ndarray) -> np.ndarray:
        """Probe items (images in [0, 1], or features) -> outputs (N, K) float64."""
        return self.run_inputs(scaler(self.info)(images))
