"""``BenchSettings``: every knob of :func:`edgeguard.bench.run_bench` in one frozen dataclass.

The ``edgeguard bench`` options carry these names (``--eval-size`` is ``eval_size``,
``--through-epochs`` is ``through.epochs``), and their choice lists come from the
constants here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeguard.bench.attack import ATTACKERS, AttackSettings
from edgeguard.bench.ladder import ThroughSettings
from edgeguard.bench.repeats import REPEAT_COUNTS
from edgeguard.errors import ConfigError

__all__ = ["BenchSettings", "CodeSettings", "ATTACKERS"]


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"expected {name} to be an integer >= {low}, got {value!r}; pass e.g. {name}={max(low, 1)}")


@dataclass(frozen=True)
class CodeSettings:
    """Rung 4's settings: whether it runs, the entry point's name, held-out images for picking a code."""

    enabled: bool = True
    builder: str = "hand_codes"
    validation_size: int = 500

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"expected codes.enabled to be True or False, got {self.enabled!r}")
        size = self.validation_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 10:
            raise ConfigError(f"expected codes.validation_size to be an integer >= 10, got {size!r}")


@dataclass(frozen=True)
class BenchSettings:
    """Budget and seeds of one bench run (the defaults are ``edgeguard bench``'s).

    ``eval_size`` + ``attack_size`` images are drawn (seeded, disjoint) from the data.
    ``attack_*``: rung 2, the adaptive attacker (:mod:`edgeguard.bench.attack`); ``attacker``
    is one of :data:`ATTACKERS` ("auto": fine-tune when torch is installed; "knn": no
    fine-tuning). ``repeats``: timed calls per configuration. ``threads``: onnxruntime
    intra-op threads and torch threads. ``grid_samples``: images in the reconstruction grids.
    ``through``: rung 3 (:class:`~edgeguard.bench.ladder.ThroughSettings`; disabled by default
    in the API, enabled by the CLI). ``repeat_counts``: the repeats experiment
    (:mod:`edgeguard.bench.repeats`) averages that many releases of each input for every noise
    filter on ``repeat_eval_size`` evaluation images, against rungs 1 and 2 fine-tuned for
    ``repeat_epochs`` on ``repeat_train_size`` attacker images; empty skips it. ``codes``: rung 4,
    hand-built codes (:mod:`edgeguard.bench.rung_codes`).
    """

    seed: int = 0
    eval_size: int = 1000
    attack_size: int = 4000
    attack_epochs: int = 3
    attack_batch_size: int = 64
    attack_learning_rate: float = 1e-3
    attacker: str = "auto"
    repeats: int = 200
    threads: int = 1
    grid_samples: int = 8
    through: ThroughSettings = field(default_factory=lambda: ThroughSettings(enabled=False))
    repeat_counts: tuple[int, ...] = REPEAT_COUNTS
    repeat_eval_size: int = 500
    repeat_train_size: int = 2000
    repeat_epochs: int = 1
    codes: CodeSettings = field(default_factory=CodeSettings)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"expected seed to be an integer, got {self.seed!r}")
        for name, low in (
            ("eval_size", 2),
            ("attack_size", 10),
            ("attack_epochs", 0),
            ("attack_batch_size", 1),
            ("repeats", 1),
            ("threads", 1),
            ("grid_samples", 0),
            ("repeat_eval_size", 2),
            ("repeat_train_size", 10),
            ("repeat_epochs", 0),
        ):
            _integer(name, getattr(self, name), low)
        rate = self.attack_learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"expected attack_learning_rate to be a positive number, got {rate!r}; e.g. 1e-3")
        if self.attacker not in ATTACKERS:
            raise ConfigError(f"expected attacker to be one of {', '.join(ATTACKERS)}, got {self.attacker!r}")
        if not isinstance(self.through, ThroughSettings):
            raise ConfigError(f"expected through to be a ThroughSettings, got {type(self.through).__name__}")
        if not isinstance(self.codes, CodeSettings):
            raise ConfigError(f"expected codes to be a CodeSettings, got {type(self.codes).__name__}")
        counts = self.repeat_counts
        if isinstance(counts, str) or not isinstance(counts, Sequence):
            raise ConfigError(f"expected repeat_counts to be a sequence of integers >= 1, got {counts!r}")
        for count in counts:
            _integer("each of repeat_counts", count, 1)
        object.__setattr__(self, "repeat_counts", tuple(int(c) for c in counts))

    @property
    def attack(self) -> AttackSettings:
        """Rung 2's settings."""
        return AttackSettings(
            epochs=self.attack_epochs,
            batch_size=self.attack_batch_size,
            learning_rate=self.attack_learning_rate,
            attacker=self.attacker,
        )

    @property
    def repeats_attack(self) -> AttackSettings:
        """The repeats experiment's rung 2 (at most ``attack_epochs`` epochs)."""
        return AttackSettings(
            epochs=min(self.repeat_epochs, self.attack_epochs),
            batch_size=self.attack_batch_size,
            learning_rate=self.attack_learning_rate,
            attacker=self.attacker,
        )
