"""``run_bench``: latency, accuracy and leakage of every output-filter configuration on one model.

For each filter spec the bench builds a :class:`~edgeguard.SafeModel` with those filters and
measures, on a seeded split of the data into an *evaluation* part and a disjoint
*attacker* part:

- latency of ``SafeModel.predict`` against a raw onnxruntime session (batch 1,
  interleaved, :mod:`edgeguard.bench.timing`);
- accuracy of the release (top-1 of the released rows, or the released label);
- leakage (PSNR, SSIM and the reconstruction risk R of :mod:`edgeguard.metrics`, with the
  Mahalanobis reference fitted on the attacker's images) of (a) the server's decoder as
  trained, run by onnxruntime on the mapped release (:mod:`edgeguard.bench.mapping`), and
  (b) an adaptive attacker who knows the filter (:mod:`edgeguard.bench.attack`);

next to the label-only baseline (per-class mean attacker image of the predicted class).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.bench.attack import AttackData, AttackSettings, Projector, adaptive_attack
from edgeguard.bench.mapping import DecoderInputMap
from edgeguard.bench.report import BenchReport, BenchRow
from edgeguard.filters.spec import FilterSpec, default_filter_specs, parse_filter_specs
from edgeguard.bench.timing import measure_latency
from edgeguard.data import Dataset, load_dataset
from edgeguard.errors import DataError, FilterError, InvalidInputError, ModelLoadError
from edgeguard.filters import OutputDomain
from edgeguard.metrics import MahalanobisReference, psnr, reconstruction_risk, ssim
from edgeguard.model_info import ModelInfo, load_onnx

__all__ = ["run_bench", "MAX_RISK_PIXELS"]

#: Above this many pixels per image R (a D x D pseudo-inverse) is not computed.
MAX_RISK_PIXELS = 4096
_BATCH = 500
_WARMUP = 10


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


def _bar(total: int, description: str, progress: bool) -> Any:
    """A tqdm bar on stderr (a no-op object without tqdm or with progress off)."""
    if progress:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=description, file=sys.stderr, leave=True, dynamic_ncols=True)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n: int = 1) -> None:
            pass

        def set_postfix_str(self, text: str) -> None:
            pass

        def close(self) -> None:
            pass

    return _Quiet()


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def _session(model: Any, threads: int, what: str) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            model.SerializeToString(), _session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise ModelLoadError(f"expected onnxruntime to load the {what}, got {type(error).__name__}: {error}") from None


def _run(session: Any, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + _BATCH]})[0] for i in range(0, len(x), _BATCH)])


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


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for benchmark pages."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    cpu = cpu_name()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "torch": torch_version,
        "threads": threads,
        "load_average_before": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def _risk(images: np.ndarray, reconstructions: np.ndarray, reference: Any) -> float:
    return reconstruction_risk(images, reconstructions, reference) if reference is not None else float("nan")


def _leakage(images: np.ndarray, reconstructions: np.ndarray, reference: Any) -> tuple[float, float, float]:
    risk = _risk(images, reconstructions, reference)
    small = min(images.shape[-2:]) < 11
    return psnr(images, reconstructions), (float("nan") if small else ssim(images, reconstructions)), risk


def _labels(release: np.ndarray) -> np.ndarray:
    """The released top-1 class of every row (the release itself when it is one label per row)."""
    return release.astype(np.int64) if release.ndim == 1 else release.argmax(axis=1)


def _seeds(seed: int, count: int) -> list[int]:
    """One independent 63-bit seed per filter configuration."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(2, np.uint64)[0] >> np.uint64(1)) for child in children]


def run_bench(
    model: str | os.PathLike,
    decoder: str | os.PathLike,
    data: Dataset | str | os.PathLike,
    filters: str | Sequence[str | FilterSpec] | None = None,
    *,
    seed: int = 0,
    eval_size: int = 1000,
    attack_size: int = 4000,
    attack_epochs: int = 3,
    repeats: int = 200,
    threads: int = 1,
    attacker: str = "auto",
    attack_batch_size: int = 64,
    attack_learning_rate: float = 1e-3,
    grid_samples: int = 8,
    progress: bool = True,
    command: str | None = None,
) -> BenchReport:
    """Benchmark every filter configuration in ``filters`` on ``model`` with the server's ``decoder``.

    ``model``: the classifier ONNX (a multiclass model; its metadata says logits or
    probabilities). ``decoder``: the server's decoder ONNX (raw classifier output (N, K) ->
    images (N, C, H, W) in [0, 1]). ``data``: a labelled :class:`~edgeguard.data.Dataset`
    or a path :func:`~edgeguard.data.load_dataset` reads (an IDX folder: its test files).
    ``filters``: specs (:mod:`edgeguard.filters.spec`; strings, ';'-separated strings or
    :class:`FilterSpec`), None = :func:`default_filter_specs` for the model's output kind.
    ``eval_size`` + ``attack_size`` images are drawn (seeded, disjoint) from ``data``.
    ``attacker``: "auto" (the adaptive attacker fine-tunes the decoder when torch is
    installed), "finetune" (torch required) or "knn" (no fine-tuning: the attacker picks
    among the decoder as trained, a k-NN decoder and the label-only guess).
    ``threads``: onnxruntime intra-op threads and torch threads.
    Progress goes to stderr (tqdm) when ``progress``.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    for name, value, low in (("eval_size", eval_size, 2), ("attack_size", attack_size, 10), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"expected {name} to be an integer >= {low}, got {value!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"expected threads to be a positive integer, got {threads!r}")
    settings = AttackSettings(
        epochs=attack_epochs, batch_size=attack_batch_size, learning_rate=attack_learning_rate, attacker=attacker
    )
    attacker_kind = settings.resolved_attacker()
    machine = _machine(threads)

    # --- model, decoder, data ----------------------------------------------------------------
    from edgeguard.safe_model import SafeModel

    model_proto = load_onnx(model)
    info = ModelInfo.from_model(model_proto)
    if info.task_type != "multiclass":
        raise ModelLoadError(f"expected a multiclass classifier, got task_type {info.task_type!r}")
    decoder_proto = load_onnx(decoder)
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
                session_options=_session_options(threads),
                threads=threads,
            )
        except FilterError as error:
            raise FilterError(f"filter spec {spec.text!r} does not fit this model: {error}") from None

    dataset = _load_data(data, info)
    if len(dataset) < eval_size + attack_size:
        raise DataError(
            f"expected at least {eval_size + attack_size} images ({eval_size} to evaluate + {attack_size} for the "
            f"attacker), got {len(dataset)}; lower --eval-size / --attack-size or pass more data"
        )
    order = np.random.default_rng(seed).permutation(len(dataset))
    eval_index, attack_index = np.sort(order[:eval_size]), order[eval_size : eval_size + attack_size]
    x_eval, y_eval = dataset.x[eval_index], dataset.y[eval_index]
    x_attack, y_attack = dataset.x[attack_index], dataset.y[attack_index]
    n_validation = max(1, int(round(attack_size * settings.validation_fraction)))
    train_part, validation_part = slice(n_validation, None), slice(0, n_validation)
    low, high = info.pixel_range
    to_model = (lambda x: x) if (low, high) == (0.0, 1.0) else (lambda x: (x * (high - low) + low).astype(np.float32))

    _log(f"{len(specs)} filter configurations; {eval_size} eval / {attack_size} attacker images", progress)
    raw_session = _session(model_proto, threads, "classifier")
    decoder_session = _session(decoder_proto, threads, "decoder")
    raw_eval, raw_attack = _run(raw_session, to_model(x_eval)), _run(raw_session, to_model(x_attack))
    num_classes = info.num_classes
    if raw_eval.ndim != 2 or raw_eval.shape[1] != num_classes:
        raise ModelLoadError(f"expected classifier outputs of shape (N, {num_classes}), got {raw_eval.shape}")
    decoder_shape = decoder_session.get_inputs()[0].shape
    if len(decoder_shape) != 2 or (isinstance(decoder_shape[1], int) and decoder_shape[1] != num_classes):
        raise ModelLoadError(
            f"expected a decoder that takes the classifier's output (N, {num_classes}), got input shape {decoder_shape}"
        )
    mapping = DecoderInputMap.fit(raw_attack, info.output_kind)
    raw_domain = OutputDomain.of_model(info.output_kind, info.task_type)
    probe = decoder_session.run(None, {decoder_session.get_inputs()[0].name: mapping(raw_eval[:2], raw_domain)})[0]
    if tuple(probe.shape[1:]) != tuple(x_eval.shape[1:]):
        raise ModelLoadError(
            f"expected the decoder to produce images of shape {tuple(x_eval.shape[1:])}, got {tuple(probe.shape[1:])}"
        )

    # --- references and the label-only baseline ------------------------------------------------
    notes: list[str] = []
    pixels = int(np.prod(x_eval.shape[1:]))
    if pixels <= MAX_RISK_PIXELS:
        _log("fitting the Mahalanobis reference on the attacker's images", progress)
        reference = MahalanobisReference.fit(x_attack)
        projector = Projector(x_attack)
    else:
        reference = projector = None
        notes.append(f"R was not computed: images have {pixels} pixels (> {MAX_RISK_PIXELS}).")
    from edgeguard.vetting.leakage import label_only_reconstruct

    raw_labels = raw_eval.argmax(axis=1)
    label_only = label_only_reconstruct(y_attack, x_attack, raw_labels)
    base_psnr, base_ssim, base_risk = _leakage(x_eval, label_only, reference)
    raw_accuracy = float(np.mean(raw_labels == y_eval))

    # --- latency (all configurations interleaved) ---------------------------------------------
    def raw_call(session: Any) -> Any:
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})

    calls = {}
    for name, safe in safe_models.items():
        if safe is None:
            calls[name] = (raw_call(raw_session), raw_call(raw_session))
        else:  # the raw run uses the session the SafeModel wraps: same weights, same caches
            calls[name] = (raw_call(getattr(safe, "_session", raw_session)), safe.predict)
    rounds = min(5, repeats)
    bar = _bar(rounds * len(calls), "latency", progress)
    latency = measure_latency(
        calls,
        to_model(x_eval[: min(len(x_eval), 64)]),
        repeats=repeats,
        warmup=_WARMUP,
        rounds=rounds,
        seed=seed,
        progress=bar.update,
    )
    bar.close()

    # --- accuracy and leakage per configuration ----------------------------------------------
    grid = min(grid_samples, eval_size)
    rows: list[BenchRow] = []
    x_train, x_validation = x_attack[train_part], x_attack[validation_part]
    y_train = y_attack[train_part]
    raw_train, raw_validation = raw_attack[train_part], raw_attack[validation_part]
    native_train = mapping(raw_train, raw_domain)
    bar = _bar(len(specs), "filters", progress)
    for spec, spec_seed in zip(specs, _seeds(seed, len(specs))):
        bar.set_postfix_str(spec.text)
        safe = safe_models[spec.text]
        if safe is None:
            domain, release = raw_domain, raw_eval

            def filtered(raw: np.ndarray, epoch_seed: int) -> np.ndarray:
                return raw

        else:
            domain = safe.pipeline.domains(num_classes)[-1]
            release = safe.predict(to_model(x_eval), seed=spec_seed)
            pipeline = safe.pipeline

            def filtered(raw: np.ndarray, epoch_seed: int, pipeline: Any = pipeline) -> np.ndarray:
                return pipeline(raw, np.random.default_rng(epoch_seed))

        accuracy = float(np.mean(_labels(release) == y_eval))
        eval_inputs = mapping(release, domain)
        server = _run(decoder_session, eval_inputs)
        is_random = bool(safe is not None and safe.pipeline.is_random)

        def train_inputs(
            epoch: int, filtered: Any = filtered, seed: int = spec_seed, random: bool = is_random, domain: Any = domain
        ) -> np.ndarray:
            return mapping(filtered(raw_train, seed + 1 + (epoch if random else 0)), domain)

        validation_release = filtered(raw_validation, spec_seed + 10_007)
        validation_inputs = mapping(validation_release, domain)
        attack = adaptive_attack(
            decoder_proto,
            AttackData(
                train_inputs=train_inputs,
                train_images=x_train,
                train_labels=y_train,
                native_inputs=native_train,
                validation_inputs=validation_inputs,
                validation_images=x_validation,
                validation_groups=_labels(validation_release),
                eval_inputs=eval_inputs,
                eval_groups=_labels(release),
                server_validation=_run(decoder_session, validation_inputs),
                server_eval=server,
            ),
            settings=settings,
            projector=projector,
            reference=reference,
            seed=spec_seed % (2**31),
            threads=threads,
        )
        server_psnr, server_ssim, server_risk = _leakage(x_eval, server, reference)
        adaptive_psnr, adaptive_ssim, _ = _leakage(x_eval, attack.reconstructions, None)
        adaptive_risk = _risk(x_eval, attack.projected, reference)
        stats = latency[spec.text]
        release_kind = (
            "labels (index)" if domain.terminal else ("labels (one-hot)" if domain.kind == "labels" else domain.kind)
        )
        rows.append(
            BenchRow(
                filter=spec.text,
                stages=repr(list(safe.pipeline.filters)) if safe is not None else "[]",
                release=release_kind,
                decoder_input=mapping.rule(domain),
                capacity_bits=float(safe.capacity_bits) if safe is not None else float("inf"),
                random=is_random,
                accuracy=accuracy,
                accuracy_drop_points=100.0 * (raw_accuracy - accuracy),
                latency_us=stats.safe_us,
                raw_latency_us=stats.raw_us,
                latency_ratio=stats.ratio,
                server_psnr=server_psnr,
                server_ssim=server_ssim,
                server_risk=server_risk,
                adaptive_psnr=adaptive_psnr,
                adaptive_ssim=adaptive_ssim,
                adaptive_risk=adaptive_risk,
                adaptive_psnr_gain_db=adaptive_psnr - base_psnr,
                adaptive_risk_vs_label_only=adaptive_risk / base_risk if base_risk else float("nan"),
                attack_decoder=attack.decoder,
                attack_best_epoch=attack.best_epoch,
                projection_rank=attack.projection_rank,
                server_examples=server[:grid],
                adaptive_examples=attack.reconstructions[:grid],
            )
        )
        bar.update(1)
    bar.close()

    candidates = (
        f"the server's decoder as trained, a k-NN decoder (k = {settings.neighbours}) on standardised mapped "
        "outputs and the label-only guess (mean attacker image of the released top-1 class)"
    )
    if attacker_kind == "knn":
        reason = "torch is not installed" if attacker == "auto" else "attacker='knn' was asked for"
        notes.append(
            f"The adaptive attacker did not fine-tune the server's decoder because {reason}: it chose among {candidates} "
            "only; with torch a fine-tuned decoder is a candidate too (stronger)."
        )
        description = f"the best, by held-out MSE, of {candidates} (no fine-tuning: {reason})"
    else:
        description = (
            "the best, by held-out MSE, of: the server's decoder (decoder.onnx through "
            "edgeguard.onnx_torch.to_torch) behind a trainable per-feature affine input layer, fine-tuned with "
            "Adam on MSE over (mapped filtered output, image) pairs with noise re-drawn every epoch (the epoch with the "
            f"lowest held-out MSE kept); {candidates}"
        )
    description += (
        "; PSNR and SSIM of the winner's reconstructions, R of the same projected onto the top-k principal "
        "components of the attacker's images, k chosen on the held-out images to maximise R (choices "
        f"{list(settings.projection_ranks)} or no projection)"
    )
    report_settings = {
        "generated": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "edgeguard.bench.run_bench",
        "model": str(model),
        "decoder": str(decoder),
        "data": str(data) if not isinstance(data, Dataset) else f"Dataset of {len(data)} images",
        "output_kind": info.output_kind,
        "num_classes": num_classes,
        "seed": seed,
        "eval_size": eval_size,
        "attack_size": attack_size,
        "attack_train": attack_size - n_validation,
        "attack_validation": n_validation,
        "attack_epochs": attack_epochs,
        "attack_batch_size": attack_batch_size,
        "attack_learning_rate": attack_learning_rate,
        "attacker": attacker_kind,
        "attacker_description": description,
        "repeats": repeats,
        "warmup": _WARMUP,
        "rounds": rounds,
        "threads": threads,
        "filters": [spec.text for spec in specs],
        "wall_time_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
    }
    return BenchReport(
        rows=rows,
        raw_accuracy=raw_accuracy,
        label_only={"psnr": base_psnr, "ssim": base_ssim, "risk": base_risk},
        settings=report_settings,
        machine=machine,
        notes=notes,
        originals=x_eval[:grid],
        label_only_examples=label_only[:grid],
    )
