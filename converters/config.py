"""Every knob of a training run, validated once, in one dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from converters.adaptive import AUDIT_DECODERS, MIMIC_LOSSES
from converters.models import ARCHITECTURES, DECODER_ARCHITECTURES, DECODER_INPUTS, check_decoder_input
from edgeguard.errors import InvalidInputError

__all__ = ["TrainConfig", "OBJECTIVES", "OUTPUTS", "TASKS", "DEVICES", "RUNTIME_FIELDS"]

OBJECTIVES = ("honest", "vicious")
OUTPUTS = ("logits", "softmax")
TASKS = ("classes", "attributes")
#: Fields that change how fast a run goes or what it prints, never what it produces.
RUNTIME_FIELDS = ("threads", "progress", "device")
DEVICES = ("auto", "cpu", "cuda")
#: Backward pass of the filter in joint training: identity on the released rows (straight through),
#: or identity in centred log-probability space (decoders reading log-probabilities).
STE_GRADIENTS = ("identity", "log-softmax")


@dataclass(frozen=True)
class TrainConfig:
    """A training run of Algorithm 1 (defaults from the authors' code, see docs/method.md).

    ``objective="honest"`` trains F for the task only (``beta2`` is forced to 0); a
    decoder is then fitted post hoc on the frozen classifier's outputs for
    ``decoder_epochs`` so the honest model's leakage is measured the same way.
    ``objective="vicious"`` trains F with ``L = beta1 L_C + beta2 L_R`` and G with L_R.
    ``output="softmax"`` releases probabilities (Softmax for classes, Sigmoid for
    attributes); the decoder then reads probabilities. ``finish_ce_epochs`` > 0 simulates
    an attacker who knows the fine-tune test: after joint training, that many epochs
    of task-loss-only training on F, then the decoder is refitted on the frozen F.

    Attackers who know the defense (issue "Attackers that know the defense"):
    ``train_through`` (a filter spec of edgeguard's grammar) trains F with that release
    filter in the loop (straight-through estimators, fresh noise) and G on the filtered
    rows; ``decoder_input`` is how G reads the rows ("released" as they are, "logits",
    "probabilities", "log-probabilities"); ``ste_gradient`` "log-softmax" passes the
    gradient straight through in log-probability space instead of the released space; ``output_temperature`` divides the released
    scores by T in the exported graph; ``mimic`` (an honest teacher ONNX) adds
    ``mimic_weight * mimic_loss`` towards the teacher's outputs; ``audit_penalty`` adds
    that weight times the PSNR gain of a closed-form audit decoder (converters.adaptive).
    Data: ``data`` is anything edgeguard.data.load_dataset reads (IDX folder, .npz, image
    folder); ``test_data`` a separate test set (else an IDX folder's test split, or a
    seeded sixth of ``data``); ``image_size`` resizes (the paper: 32); ``channels`` for
    image folders. ``device``: "auto" (CUDA when available), "cpu" or "cuda".
    """

    objective: str = "vicious"
    output: str = "logits"
    task: str = "classes"
    arch: str = "cnn"
    epochs: int = 10
    beta1: float = 1.0
    beta2: float = 3.0
    alpha_mse: float = 5.0
    alpha_ssim: float = 1.0
    huber_delta: float = 1.0
    lr: float = 1e-3
    batch_size: int = 250
    seed: int = 0
    data: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    validation_fraction: float = 0.1
    finish_ce_epochs: int = 0
    decoder_epochs: int | None = None
    cnn_width: int = 16
    wrn_depth: int = 10
    wrn_width: int = 2
    decoder_channels: int = 16
    class_names: tuple[str, ...] | None = None
    model_name: str = "fashion-classifier"
    model_version: str = "1.0.0"
    threads: int | None = None
    progress: bool = False
    train_through: str | None = None
    decoder_input: str = "released"
    ste_gradient: str = "identity"
    decoder_arch: str = "small"
    output_temperature: float = 1.0
    mimic: str | None = None
    mimic_weight: float = 1.0
    mimic_loss: str = "kl"
    audit_penalty: float = 0.0
    audit_decoder: str = "rbf"
    test_data: str | None = None
    image_size: int | None = None
    channels: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("objective", self.objective, OBJECTIVES)
        _check_choice("output", self.output, OUTPUTS)
        _check_choice("task", self.task, TASKS)
        _check_choice("arch", self.arch, ARCHITECTURES)
        if self.objective == "honest":
            object.__setattr__(self, "beta2", 0.0)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        for name in ("epochs", "batch_size", "cnn_width", "wrn_width", "decoder_channels"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("finish_ce_epochs", self.finish_ce_epochs, minimum=0)
        for name in ("decoder_epochs", "train_limit", "test_limit", "threads"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("beta1", "beta2", "alpha_mse", "alpha_ssim"):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ("huber_delta", "lr"):
            _check_number(name, getattr(self, name), minimum=0.0, strict=True)
        if self.beta1 == 0 and self.beta2 == 0:
            hint = "honest training needs beta1 > 0" if self.objective == "honest" else "set beta1 > 0 or beta2 > 0"
            raise InvalidInputError(
                f"expected beta1 > 0 or beta2 > 0, got beta1 = beta2 = 0 (nothing to train); {hint}"
            )
        if self.objective == "vicious" and self.beta2 > 0 and self.alpha_mse == 0 and self.alpha_ssim == 0:
            raise InvalidInputError("expected alpha_mse > 0 or alpha_ssim > 0 for a vicious run, got both 0")
        if not 0.0 < self.validation_fraction < 1.0:
            raise InvalidInputError(f"expected validation_fraction in (0, 1), got {self.validation_fraction}")
        self._check_attacker()
        if self.wrn_depth < 10 or (self.wrn_depth - 4) % 6 != 0:
            raise InvalidInputError(
                f"expected wrn_depth of the form 6n+4 with n >= 1 (10, 16, 22, 28...), got {self.wrn_depth}"
            )

    def _check_attacker(self) -> None:
        """Validate the adaptive-attacker and data knobs (and canonicalise the filter spec)."""
        from converters.through_filter import GRAMMAR_HELP, released_kind

        _check_choice("decoder_input", self.decoder_input, DECODER_INPUTS)
        _check_choice("decoder_arch", self.decoder_arch, DECODER_ARCHITECTURES)
        _check_choice("mimic_loss", self.mimic_loss, MIMIC_LOSSES)
        _check_choice("audit_decoder", self.audit_decoder, AUDIT_DECODERS)
        _check_choice("device", self.device, DEVICES)
        _check_number("output_temperature", self.output_temperature, minimum=0.0, strict=True)
        _check_number("mimic_weight", self.mimic_weight, minimum=0.0)
        _check_number("audit_penalty", self.audit_penalty, minimum=0.0)
        if self.image_size is not None:
            _check_int("image_size", self.image_size, minimum=4)
        if self.channels is not None and self.channels not in (1, 3):
            raise InvalidInputError(f"expected channels 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        task_type = "multilabel" if self.task == "attributes" else "multiclass"
        kind = "logits" if self.output == "logits" else "probabilities"
        if self.train_through is not None:
            if not isinstance(self.train_through, str):
                raise InvalidInputError(
                    f"expected train_through to be a filter spec string, got {self.train_through!r}"
                )
            from edgeguard.errors import FilterError
            from edgeguard.filters import parse_filter_spec

            try:
                spec = parse_filter_spec(self.train_through)
            except FilterError as error:
                raise FilterError(f"{error}; --train-through uses {GRAMMAR_HELP}") from None
            object.__setattr__(self, "train_through", None if spec.is_raw else spec.text)
        reads_kind = released_kind(self.train_through, kind, task_type)
        check_decoder_input(self.decoder_input, reads_kind)
        _check_choice("ste_gradient", self.ste_gradient, STE_GRADIENTS)
        if self.ste_gradient == "log-softmax" and (
            self.decoder_input != "log-probabilities" or task_type != "multiclass" or not self.vicious
        ):
            raise InvalidInputError(
                "expected --decoder-input log-probabilities, --task classes and a vicious run for "
                f"--ste-gradient log-softmax, got --decoder-input {self.decoder_input}, --task {self.task}, "
                f"--objective {self.objective}; use --ste-gradient identity"
            )
        if self.mimic is None and self.mimic_weight != 1.0:
            raise InvalidInputError(
                f"expected --mimic TEACHER.onnx with --mimic-weight, got weight {self.mimic_weight} and no teacher"
            )
        if (self.mimic is not None or self.audit_penalty > 0) and task_type != "multiclass":
            raise InvalidInputError(
                "expected --task classes for --mimic and --audit-penalty (they compare class distributions), "
                f"got --task {self.task}"
            )

    @property
    def release_kind(self) -> str:
        """What classifier.onnx outputs: "logits" or "probabilities"."""
        return "logits" if self.output == "logits" else "probabilities"

    @property
    def task_type(self) -> str:
        """ "multiclass" (task classes) or "multilabel" (task attributes)."""
        return "multilabel" if self.task == "attributes" else "multiclass"

    @property
    def vicious(self) -> bool:
        """True when the decoder is trained jointly with the classifier (beta2 > 0)."""
        return self.objective == "vicious" and self.beta2 > 0

    @property
    def post_training_decoder_epochs(self) -> int:
        """Epochs of the post-hoc (honest) or refitted (finish-ce) decoder: ``decoder_epochs`` or ``epochs``."""
        return self.decoder_epochs if self.decoder_epochs is not None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if values["class_names"] is not None:
            values["class_names"] = list(values["class_names"])
        return values

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict such as :meth:`to_dict` returns; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"expected TrainConfig fields {sorted(known)}, got unknown keys {unknown}")
        return cls(**values)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"expected {name} in {list(choices)}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"expected {name} to be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise InvalidInputError(f"expected {name} to be a finite number {relation} {minimum}, got {value!r}")
