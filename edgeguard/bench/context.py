"""``BenchContext``: what every stage of a bench run shares, built once by :meth:`BenchContext.prepare`.

The model and decoder (checked, with their onnxruntime sessions), the filter specs and a
:class:`~edgeguard.SafeModel` per spec, the seeded disjoint split of the data into
evaluation and attacker images (the attacker's part split again into training and
held-out validation images), the raw outputs of every split, the mapping of releases to
the decoder's input, the Mahalanobis reference and the label-only baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.bench.attack import Projector
from edgeguard.bench.common import leakage, log, run_batched, session, session_options
from edgeguard.bench.mapping import DecoderInputMap
from edgeguard.bench.settings import BenchSettings
from edgeguard.data import Dataset, load_dataset
from edgeguard.errors import DataError, FilterError, ModelLoadError
from edgeguard.filters import FilterPipeline, OutputDomain
from edgeguard.filters.spec import FilterSpec, default_filter_specs, parse_filter_specs
from edgeguard.metrics import MahalanobisReference
from edgeguard.model import ModelInfo, load_model

__all__ = ["BenchContext", "MAX_RISK_PIXELS"]

#: Above this many pixels per image R (a D x D pseudo-inverse) is not computed.
MAX_RISK_PIXELS = 4096


@dataclass
class Split:
    """Images, labels, the images as the model takes them and the model's raw outputs on them."""

    x: np.ndarray
    y: np.ndarray
    model_x: np.ndarray
    raw: np.ndarray

    def head(self, count: int) -> "Split":
        return Split(self.x[:count], self.y[:count], self.model_x[:count], self.raw[:count])


@dataclass
class BenchContext:
    """The prepared state of one bench run (see the module docstring)."""

    settings: BenchSettings
    progress: bool
    model: str
    decoder: str
    data_description: str
    data_path: str | None  # the data's path when it was given as one (rung 3 may train on its training split)
    dataset: Dataset
    info: ModelInfo
    model_proto: Any
    decoder_proto: Any
    specs: list[FilterSpec]
    safe_models: dict[str, Any]  # spec text -> SafeModel (None for the raw output)
    raw_session: Any
    decoder_session: Any
    to_model: Callable[[np.ndarray], np.ndarray]
    evaluation: Split
    attack: Split  # all attacker images
    train: Split  # the attacker's training part
    validation: Split  # the attacker's held-out part
    native_train: np.ndarray  # the decoder's input on the raw outputs of the training part
    mapping: DecoderInputMap
    raw_domain: OutputDomain
    reference: Any  # MahalanobisReference or None (images too large)
    projector: Any  # Projector or None
    label_only: np.ndarray  # the label-only guess of every evaluation image
    base: tuple[float, float, float]  # (PSNR, SSIM, R) of the label-only baseline
    raw_accuracy: float
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def grid(self) -> int:
        """How many example images each row keeps for the grids."""
        return min(self.settings.grid_samples, self.settings.eval_size)

    @property
    def n_validation(self) -> int:
        return len(self.validation.x)

    def pipeline(self, spec: FilterSpec) -> FilterPipeline:
        """A freshly built pipeline of ``spec`` (new noise secrets and budgets), bound to the model's output kind."""
        return FilterPipeline(spec.build(), input_kind=self.info.output_kind, task_type=self.info.task_type)

    def decode(self, inputs: np.ndarray) -> np.ndarray:
        """The server's decoder as trained on decoder inputs (N, K)."""
        return run_batched(self.decoder_session, inputs)

    def log(self, message: str) -> None:
        log(message, self.progress)

    @classmethod
    def prepare(
        cls,
        model: str | os.PathLike,
        decoder: str | os.PathLike,
        data: Dataset | str | os.PathLike,
        filters: str | Sequence[str | FilterSpec] | None,
        settings: BenchSettings,
        progress: bool,
    ) -> "BenchContext":
        s = settings
        model_proto, info, specs, safe_models = filtered_models(model, filters, s.threads)
        decoder_proto = load_model(decoder, allow_dynamic_ops=True, require_info=False).proto  # the server's tool

        dataset = _load_data(data, info)
        if len(dataset) < s.eval_size + s.attack_size:
            raise DataError(
                f"expected at least {s.eval_size + s.attack_size} images ({s.eval_size} to evaluate + "
                f"{s.attack_size} for the attacker), got {len(dataset)}; lower --eval-size / --attack-size or pass "
                "more data"
            )
        order = np.random.default_rng(s.seed).permutation(len(dataset))
        eval_index, attack_index = np.sort(order[: s.eval_size]), order[s.eval_size : s.eval_size + s.attack_size]
        low, high = info.pixel_range
        if (low, high) == (0.0, 1.0):

            def to_model(x: np.ndarray) -> np.ndarray:
                return x

        else:

            def to_model(x: np.ndarray) -> np.ndarray:
                return (x * (high - low) + low).astype(np.float32)

        log(f"{len(specs)} filter configurations; {s.eval_size} eval / {s.attack_size} attacker images", progress)
        raw_session = session(model_proto, s.threads, "classifier")
        decoder_session = session(decoder_proto, s.threads, "decoder")

        def split(index: np.ndarray) -> Split:
            x = dataset.x[index]
            model_x = to_model(x)
            return Split(x, dataset.y[index], model_x, run_batched(raw_session, model_x))

        evaluation, attack = split(eval_index), split(attack_index)
        num_classes = info.num_classes
        if evaluation.raw.ndim != 2 or evaluation.raw.shape[1] != num_classes:
            raise ModelLoadError(f"expected classifier outputs of shape (N, {num_classes}), got {evaluation.raw.shape}")
        decoder_shape = decoder_session.get_inputs()[0].shape
        if len(decoder_shape) != 2 or (isinstance(decoder_shape[1], int) and decoder_shape[1] != num_classes):
            raise ModelLoadError(
                f"expected a decoder that takes the classifier's output (N, {num_classes}), got input shape "
                f"{decoder_shape}"
            )
        mapping = DecoderInputMap.fit(attack.raw, info.output_kind)
        raw_domain = OutputDomain.of_model(info.output_kind, info.task_type)
        probe = decoder_session.run(
            None, {decoder_session.get_inputs()[0].name: mapping(evaluation.raw[:2], raw_domain)}
        )[0]
        if tuple(probe.shape[1:]) != tuple(evaluation.x.shape[1:]):
            raise ModelLoadError(
                f"expected the decoder to produce images of shape {tuple(evaluation.x.shape[1:])}, got "
                f"{tuple(probe.shape[1:])}"
            )
        n_validation = max(1, int(round(s.attack_size * s.attack.validation_fraction)))
        train, validation = _part(attack, slice(n_validation, None)), _part(attack, slice(0, n_validation))

        notes: list[str] = []
        pixels = int(np.prod(evaluation.x.shape[1:]))
        if pixels <= MAX_RISK_PIXELS:
            log("fitting the Mahalanobis reference on the attacker's images", progress)
            reference = MahalanobisReference.fit(attack.x)
            projector = Projector(attack.x)
        else:
            reference = projector = None
            notes.append(f"R was not computed: images have {pixels} pixels (> {MAX_RISK_PIXELS}).")
        from edgeguard.metrics.baselines import label_only_reconstruct

        raw_labels = evaluation.raw.argmax(axis=1)
        label_only = label_only_reconstruct(attack.y, attack.x, raw_labels)
        base = leakage(evaluation.x, label_only, reference)
        return cls(
            settings=settings,
            progress=progress,
            model=str(model),
            decoder=str(decoder),
            data_description=str(data) if not isinstance(data, Dataset) else f"Dataset of {len(data)} images",
            data_path=None if isinstance(data, Dataset) else str(data),
            dataset=dataset,
            info=info,
            model_proto=model_proto,
            decoder_proto=decoder_proto,
            specs=specs,
            safe_models=safe_models,
            raw_session=raw_session,
            decoder_session=decoder_session,
            to_model=to_model,
            evaluation=evaluation,
            attack=attack,
            train=train,
            validation=validation,
            native_train=mapping(train.raw, raw_domain),
            mapping=mapping,
            raw_domain=raw_domain,
            reference=reference,
            projector=projector,
            label_only=label_only,
            base=base,
            raw_accuracy=float(np.mean(raw_labels == evaluation.y)),
            notes=notes,
        )


def _part(split: Split, part: slice) -> Split:
    return Split(split.x[part], split.y[part], split.model_x[part], split.raw[part])


def filtered_models(
    model: str | os.PathLike, filters: str | Sequence[str | FilterSpec] | None, threads: int | None
) -> tuple[Any, ModelInfo, list[FilterSpec], dict[str, Any]]:
    """The model (checked as SafeModel loads it), its info, the filter specs, and one SafeModel per spec.

    The one place both bench paths (images and vectors) build their releases; the raw spec maps to None.
    """
    from edgeguard.safe_model import SafeModel

    model_proto = load_model(model).proto  # checked like SafeModel loads it (refuses unbounded ops)
    info = ModelInfo.from_model(model_proto)
    if info.task_type != "multiclass":
        raise ModelLoadError(f"expected a multiclass classifier, got task_type {info.task_type!r}")
    specs = _specs(filters, info)
    safe_models: dict[str, Any] = {}
    for spec in specs:
        if spec.is_raw:
            safe_models[spec.text] = None
            continue
        try:
            safe_models[spec.text] = SafeModel(
                model,
                filters=spec.build(),
                providers=["CPUExecutionProvider"],
                session_options=session_options(threads),
                threads=threads,
            )
        except FilterError as error:
            raise FilterError(f"filter spec {spec.text!r} does not fit this model: {error}") from None
    return model_proto, info, specs, safe_models


def _specs(filters: str | Sequence[str | FilterSpec] | None, info: ModelInfo) -> list[FilterSpec]:
    if filters is None:
        specs = default_filter_specs(info.output_kind)
    elif isinstance(filters, str):
        specs = parse_filter_specs(filters, info.output_kind)
    else:
        unique: dict[str, FilterSpec] = {}
        for item in filters:
            for spec in [item] if isinstance(item, FilterSpec) else parse_filter_specs(item, info.output_kind):
                unique.setdefault(spec.text, spec)
        specs = list(unique.values())
    if not specs:
        raise FilterError("expected at least one filter spec, got none; pass e.g. 'none;softmax;argmax'")
    return specs


def _load_data(data: Dataset | str | os.PathLike, info: ModelInfo) -> Dataset:
    if not isinstance(data, Dataset):
        channels, height, width = info.input_shape
        data = load_dataset(data, class_names=info.class_names, image_size=(height, width), channels=channels)
    if data.multilabel:
        raise DataError(
            "expected one class label per image, got multi-label data; the bench supports multiclass models"
        )
    if tuple(data.x.shape[1:]) != tuple(info.input_shape):
        raise DataError(
            f"expected images of shape {tuple(info.input_shape)} (the model's input), got {tuple(data.x.shape[1:])}; "
            "resize the data or pass a folder of images (they are resized)"
        )
    if len(data) and (data.x.min() < 0.0 or data.x.max() > 1.0 or not np.isfinite(data.x).all()):
        raise DataError("expected pixels in [0, 1], got values outside; scale 8-bit images by 1/255")
    if len(data) and (data.y.min() < 0 or data.y.max() >= info.num_classes):
        raise DataError(
            f"expected labels in [0, {info.num_classes - 1}] (the model's {info.num_classes} classes), got "
            f"[{data.y.min()}, {data.y.max()}]"
        )
    return data
