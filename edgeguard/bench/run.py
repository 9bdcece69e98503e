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
  (b) an adaptive attacker who knows the filter (:mod:`edgeguard.bench.attack`), and
  (c) a classifier + decoder trained through the filter (:mod:`edgeguard.bench.ladder`,
  an attack trainer found by entry point, run as cached jobs), with the accuracy of that
  model's release; the worst case over (a)-(c) is the row's measured leakage;
- task utility: top-1 and top-3 accuracy, and how well the released confidence tells
  right from wrong labels (AUROC);
- for every noise filter, fresh and consistent, leakage when R releases of the same
  input are averaged (:mod:`edgeguard.bench.repeats`);

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

from edgeguard.bench.attack import AttackData, AttackSettings, Projector, _pick_rank, adaptive_attack
from edgeguard.bench.ladder import RungResult, ThroughSettings, run_through_filter
from edgeguard.bench.mapping import DecoderInputMap, one_hot
from edgeguard.bench.repeats import REPEAT_COUNTS, RepeatRow, averaged, consistent_variant, noise_specs
from edgeguard.bench.report import BenchReport, BenchRow
from edgeguard.bench.timing import measure_latency
from edgeguard.data import Dataset, load_dataset
from edgeguard.errors import DataError, FilterError, InvalidInputError, ModelLoadError
from edgeguard.filters import FilterPipeline, OutputDomain
from edgeguard.filters.spec import FilterSpec, default_filter_specs, parse_filter_specs
from edgeguard.metrics import MahalanobisReference, psnr, reconstruction_risk, ssim
from edgeguard.model_file import load_model
from edgeguard.model_info import ModelInfo

__all__ = ["run_bench", "MAX_RISK_PIXELS"]

#: Above this many pixels per image R (a D x D pseudo-inverse) is not computed.
MAX_RISK_PIXELS = 4096
_BATCH = 500
_WARMUP = 10


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


def _bar(total: int, description: str, progress: bool) -> Any:
    """A tqdm bar on stderr (tqdm is a core dependency; ``tqdm(disable=True)`` when progress is off)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, file=sys.stderr, leave=True, dynamic_ncols=True, disable=not progress)


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
    through: ThroughSettings | None = None,
    repeat_counts: Sequence[int] = REPEAT_COUNTS,
    repeat_eval_size: int = 500,
    repeat_train_size: int = 2000,
    repeat_epochs: int = 1,
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
    ``through``: rung 3 of the attacker ladder (:mod:`edgeguard.bench.ladder`): budget and
    cache of the attackers trained through each filter (None = not run, and the report says so).
    ``repeat_counts``: the repeats experiment (:mod:`edgeguard.bench.repeats`) averages that many
    releases of each input for every noise filter, fresh and consistent, on ``repeat_eval_size``
    evaluation images, against rung 1 and rung 2 (fine-tuned for ``repeat_epochs`` on
    ``repeat_train_size`` attacker images); an empty sequence skips it.
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

    model_proto = load_model(model).proto  # checked like SafeModel loads it (refuses unbounded ops)
    info = ModelInfo.from_model(model_proto)
    if info.task_type != "multiclass":
        raise ModelLoadError(f"expected a multiclass classifier, got task_type {info.task_type!r}")
    decoder_proto = load_model(decoder, allow_dynamic_ops=True, require_info=False).proto  # the server's own tool
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
        elif safe.pipeline.needs_inputs and not _predict_takes_inputs(safe, to_model(x_eval[:1])):
            # SafeModel.predict does not hand the inputs to the pipeline yet: time inference + pipeline(inputs=).
            calls[name] = (raw_call(raw_session), _predict_with_inputs(raw_session, safe.pipeline))
        else:  # the raw run uses the session the SafeModel wraps when it is the plain model (same caches)
            calls[name] = (raw_call(_plain_session(safe, raw_session)), safe.predict)
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

    # --- accuracy and leakage per configuration (rungs 1 and 2) -------------------------------
    x_train, x_validation = x_attack[train_part], x_attack[validation_part]
    y_train = y_attack[train_part]
    grid = min(grid_samples, eval_size)
    rows: list[BenchRow] = []
    pending: list[tuple[BenchRow, dict[str, Any], FilterSpec, int]] = []
    raw_train, raw_validation = raw_attack[train_part], raw_attack[validation_part]
    native_train = mapping(raw_train, raw_domain)
    eval_model, train_model, validation_model = to_model(x_eval), to_model(x_train), to_model(x_validation)
    bar = _bar(len(specs), "filters", progress)
    for spec, spec_seed in zip(specs, _seeds(seed, len(specs))):
        bar.set_postfix_str(spec.text)
        safe = safe_models[spec.text]
        if safe is None:
            domain, release = raw_domain, raw_eval

            def filtered(raw: np.ndarray, images: np.ndarray, epoch_seed: int) -> np.ndarray:
                return raw

        else:
            domain = safe.pipeline.domains(num_classes)[-1]
            release = _release(safe, eval_model, raw_eval, spec_seed, notes)

            def filtered(raw: np.ndarray, images: np.ndarray, epoch_seed: int, spec: Any = spec) -> np.ndarray:
                # The attacker's own releases (another device: for consistent noise, another secret each time).
                return _pipeline(spec, info)(raw, np.random.default_rng(epoch_seed), inputs=images)

        accuracy = float(np.mean(_labels(release) == y_eval))
        eval_inputs = mapping(release, domain)
        server = _run(decoder_session, eval_inputs)
        is_random = bool(safe is not None and safe.pipeline.is_random)

        def train_inputs(
            epoch: int, filtered: Any = filtered, seed: int = spec_seed, random: bool = is_random, domain: Any = domain
        ) -> np.ndarray:
            return mapping(filtered(raw_train, train_model, seed + 1 + (epoch if random else 0)), domain)

        validation_release = filtered(raw_validation, validation_model, spec_seed + 10_007)
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
        rungs = {
            "server": (server_psnr, server_ssim, server_risk, server[:grid]),
            "adaptive": (adaptive_psnr, adaptive_ssim, adaptive_risk, attack.reconstructions[:grid]),
        }
        top3, auroc = _utility(release, y_eval, domain)
        row = BenchRow(
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
            top3_accuracy=top3,
            confidence_auroc=auroc,
            server_examples=server[:grid],
            adaptive_examples=attack.reconstructions[:grid],
        )
        _set_worst(row, rungs, (base_psnr, base_ssim, base_risk))
        rows.append(row)
        pending.append((row, rungs, spec, spec_seed))
        bar.update(1)
    bar.close()

    # --- repeated queries: averaging R releases of one input, fresh against consistent noise ------
    repeat_rows = _repeats_experiment(
        specs,
        info,
        repeat_counts,
        decoder_proto=decoder_proto,
        decoder_session=decoder_session,
        mapping=mapping,
        raw_domain=raw_domain,
        data=(x_eval, y_eval, eval_model, raw_eval),
        attacker=(x_train, y_train, train_model, raw_train, native_train),
        validation=(x_validation, validation_model, raw_validation),
        eval_size=min(repeat_eval_size, eval_size),
        train_size=min(repeat_train_size, len(x_train)),
        settings=AttackSettings(
            epochs=min(repeat_epochs, attack_epochs),
            batch_size=attack_batch_size,
            learning_rate=attack_learning_rate,
            attacker=attacker,
        ),
        base_psnr=base_psnr,
        seed=seed,
        threads=threads,
        progress=progress,
    )

    # --- rung 3: attackers trained through each filter (cached jobs; run last, they take longest) ------
    through_settings = through if through is not None else ThroughSettings(enabled=False)
    _log(f"rung 3 (trained through the filter): {through_settings.describe()}", progress and through_settings.enabled)
    trained, trainer_message = run_through_filter(
        specs,
        through_settings,
        attacker_images=x_attack,
        attacker_labels=y_attack,
        class_names=getattr(dataset, "class_names", None) or info.class_names,
        seed=seed,
        threads=threads,
        progress=progress,
    )
    for row, rungs, spec, spec_seed in pending:
        result = _through_rung(
            trained[spec.text],
            spec,
            (x_eval, y_eval, eval_model),
            (x_validation, validation_model),
            projector,
            reference,
            settings,
            threads,
            spec_seed,
        )
        row.through_status, row.through_accuracy, row.through_seconds = result.status, result.accuracy, result.seconds
        row.through_psnr, row.through_ssim, row.through_risk = result.psnr, result.ssim, result.risk
        if result.ran:
            row.through_examples = result.reconstructions[:grid]
            rungs["through"] = (result.psnr, result.ssim, result.risk, result.reconstructions[:grid])
            _set_worst(row, rungs, (base_psnr, base_ssim, base_risk))

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
        "through": {
            "enabled": through_settings.enabled,
            "budget": through_settings.describe(),
            "epochs": through_settings.epochs,
            "train_limit": through_settings.train_limit,
            "data": through_settings.data or "the bench's attacker split",
            "extra": dict(through_settings.extra),
            "trainer": trainer_message,
            "run": sum(row.through_status in ("run", "cached") for row in rows),
            "cached": sum(row.through_status == "cached" for row in rows),
            "description": (
                "a classifier and decoder trained with the filter in the loop by the attack trainer (straight-through "
                "estimators for rounding/top-k/argmax, noise drawn fresh every step), its outputs released through "
                "the real edgeguard filter on the evaluation images and decoded by its own decoder"
            ),
        },
        "repeats_experiment": {
            "counts": list(repeat_counts),
            "eval_size": min(repeat_eval_size, eval_size),
            "train_size": min(repeat_train_size, attack_size - n_validation),
            "epochs": min(repeat_epochs, attack_epochs),
        },
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
        repeats=repeat_rows,
    )


# --- helpers of the ladder, the utility columns and the repeats experiment --------------------------


def _set_worst(row: BenchRow, rungs: dict[str, Any], base: tuple[float, float, float]) -> None:
    """The row's worst case over ``rungs`` (name -> (psnr, ssim, risk, examples)) against the label-only baseline."""
    base_psnr, base_ssim, base_risk = base
    worst = max(rungs, key=lambda name: (_finite(rungs[name][0]), -list(rungs).index(name)))
    row.worst_rung = worst
    row.worst_psnr_gain_db = rungs[worst][0] - base_psnr
    row.worst_ssim_gain = max(_finite(values[1]) for values in rungs.values()) - base_ssim
    worst_risk = max(_finite(values[2]) for values in rungs.values())
    row.worst_risk_vs_label_only = worst_risk / base_risk if base_risk else float("nan")
    row.worst_examples = rungs[worst][3]


def _finite(value: float) -> float:
    return value if isinstance(value, float | int) and np.isfinite(value) else -np.inf


def _pipeline(spec: FilterSpec, info: ModelInfo) -> FilterPipeline:
    """A freshly built pipeline of ``spec`` (new noise secrets and budgets), bound to the model's output kind."""
    return FilterPipeline(spec.build(), input_kind=info.output_kind, task_type=info.task_type)


def _plain_session(safe: Any, raw_session: Any) -> Any:
    """The SafeModel's own session when it runs the plain model; else (filters fused into the graph) the bench's."""
    session = getattr(safe, "session", None)  # SafeModel's public session
    try:
        same = [i.name for i in session.get_inputs()] == [i.name for i in raw_session.get_inputs()] and [
            o.name for o in session.get_outputs()
        ] == [o.name for o in raw_session.get_outputs()]
    except AttributeError:
        return raw_session
    return session if same else raw_session


def _predict_takes_inputs(safe: Any, sample: np.ndarray) -> bool:
    """Whether ``safe.predict`` hands the inputs to a pipeline that needs them (consistent noise)."""
    try:
        safe.predict(sample)
    except FilterError:
        return False
    return True


def _predict_with_inputs(session: Any, pipeline: FilterPipeline) -> Any:
    input_name = session.get_inputs()[0].name

    def call(x: np.ndarray) -> Any:
        return pipeline(session.run(None, {input_name: x})[0], inputs=x)

    return call


def _release(safe: Any, x: np.ndarray, raw: np.ndarray, seed: int, notes: list[str]) -> np.ndarray:
    """The release of the evaluation images: ``safe.predict``, or its pipeline with the inputs for consistent noise."""
    if not safe.pipeline.needs_inputs:
        return safe.predict(x, seed=seed)
    try:
        return safe.predict(x, seed=seed)
    except FilterError:
        note = (
            "Consistent-noise rows: SafeModel.predict does not pass the inputs to its pipeline in this build, so their "
            "releases (and latency) are the model's raw outputs put through SafeModel's own pipeline with inputs=batch."
        )
        if note not in notes:
            notes.append(note)
        return safe.pipeline(raw, np.random.default_rng(seed), inputs=x)


def _decoder_rows(release: np.ndarray, num_classes: int) -> np.ndarray:
    """What a decoder trained through a filter reads: the released rows, an index as its one-hot row."""
    release = np.asarray(release)
    if release.ndim == 1:
        return one_hot(release.astype(np.int64), num_classes)
    return np.ascontiguousarray(release, dtype=np.float32)


def _utility(release: np.ndarray, labels: np.ndarray, domain: OutputDomain) -> tuple[float, float]:
    """(top-3 accuracy, AUROC of the released top-1 score for telling right from wrong top-1 labels).

    A label release names one class: its top-3 accuracy is its top-1 accuracy and its
    confidence carries nothing (AUROC 0.5).
    """
    release = np.asarray(release)
    if release.ndim == 1 or domain.kind == "labels":
        top1 = _labels(release)
        return float(np.mean(top1 == labels)), 0.5
    order = np.argsort(-release, axis=1, kind="stable")[:, :3]
    top3 = float(np.mean((order == labels[:, None]).any(axis=1)))
    correct = release.argmax(axis=1) == labels
    if correct.all() or not correct.any():
        return top3, float("nan")
    from sklearn.metrics import roc_auc_score

    return top3, float(roc_auc_score(correct, release.max(axis=1)))


def _through_rung(
    trained: Any,
    spec: FilterSpec,
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    projector: Any,
    reference: Any,
    settings: AttackSettings,
    threads: int,
    seed: int,
) -> RungResult:
    """Score the attacker trained through ``spec``: its model's release through the real filter, decoded."""
    if isinstance(trained, str):
        return RungResult(trained)
    status, classifier_path, decoder_path, seconds = trained
    x_eval, y_eval, eval_model = evaluation
    x_validation, validation_model = validation
    try:
        classifier_proto = load_model(classifier_path).proto
        decoder_proto = load_model(decoder_path, allow_dynamic_ops=True, require_info=False).proto
        info = ModelInfo.from_model(classifier_proto)
        classifier = _session(classifier_proto, threads, "classifier trained through the filter")
        decoder = _session(decoder_proto, threads, "decoder trained through the filter")
        pipeline = _pipeline(spec, info) if not spec.is_raw else None

        def reconstruct(images: np.ndarray, model_images: np.ndarray, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
            raw = _run(classifier, model_images)
            release = raw if pipeline is None else pipeline(raw, np.random.default_rng(rng_seed), inputs=model_images)
            return release, _run(decoder, _decoder_rows(release, info.num_classes))

        release, recon = reconstruct(x_eval, eval_model, seed + 3)
        if tuple(recon.shape[1:]) != tuple(x_eval.shape[1:]):
            return RungResult(f"not run: the trained decoder makes images of shape {tuple(recon.shape[1:])}")
        _, validation_recon = reconstruct(x_validation, validation_model, seed + 4)
    except Exception as error:  # a trainer's files that do not fit: say so, keep the other rungs
        return RungResult(f"not run: its files could not be evaluated ({type(error).__name__}: {str(error)[:200]})")
    recon = np.clip(recon, 0.0, 1.0).astype(np.float32)
    psnr_value, ssim_value, _ = _leakage(x_eval, recon, None)
    risk = float("nan")
    if projector is not None and reference is not None:
        rank = _pick_rank(
            np.clip(validation_recon, 0, 1), x_validation, projector, reference, settings.projection_ranks
        )
        risk = _risk(x_eval, projector.project(recon, rank), reference)
    accuracy = float(np.mean(_labels(release) == y_eval))
    return RungResult(status, psnr_value, ssim_value, risk, accuracy, seconds, recon)


def _repeats_experiment(
    specs: list[FilterSpec],
    info: ModelInfo,
    counts: Sequence[int],
    *,
    decoder_proto: Any,
    decoder_session: Any,
    mapping: DecoderInputMap,
    raw_domain: OutputDomain,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    attacker: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    eval_size: int,
    train_size: int,
    settings: AttackSettings,
    base_psnr: float,
    seed: int,
    threads: int,
    progress: bool,
) -> list[RepeatRow]:
    """Leakage of averaged repeats for every noise spec, fresh and consistent (:mod:`edgeguard.bench.repeats`)."""
    counts = sorted({int(c) for c in counts if int(c) >= 1})
    noisy = noise_specs(specs)
    if not counts or not noisy:
        return []
    x_eval, y_eval, eval_model, raw_eval = (a[:eval_size] for a in data)
    x_train, y_train, train_model, raw_train, native_train = (a[:train_size] for a in attacker)
    x_validation, validation_model, raw_validation = (a[: max(2, min(len(a), 400))] for a in validation)
    from edgeguard.vetting.leakage import label_only_reconstruct

    label_only = label_only_reconstruct(attacker[1], attacker[0], raw_eval.argmax(axis=1))
    base = psnr(x_eval, label_only)  # the label-only baseline on this subset
    variants: list[tuple[FilterSpec, str]] = []
    for spec in noisy:
        variants.append((spec, "consistent" if "consistent=true" in spec.text else "fresh"))
        twin = consistent_variant(spec)
        if twin is not None and twin.text != spec.text and twin.text not in {s.text for s in specs}:
            variants.append((twin, "consistent"))
    rows: list[RepeatRow] = []
    bar = _bar(len(variants) * len(counts), "repeats", progress)
    for index, (spec, kind) in enumerate(variants):
        victim = _pipeline(spec, info)  # one device: one secret for all of the victim's releases
        domain = victim.domains(info.num_classes)[-1]
        for repeats in counts:
            bar.set_postfix_str(f"{spec.text} x{repeats}")
            spec_seed = seed * 1_000_003 + index * 101 + repeats

            def victim_release(r: int, spec_seed: int = spec_seed, victim: Any = victim) -> np.ndarray:
                return victim(raw_eval, np.random.default_rng(spec_seed + 7919 * r), inputs=eval_model)

            mean_release, identical = averaged(lambda r: _as_rows(victim_release(r), info.num_classes), repeats)
            release = mean_release.astype(np.float32)
            if kind == "consistent" and repeats > 1 and identical and rows and rows[-1].filter == spec.text:
                # Byte-identical releases: the average is the single release and the attacker learns nothing
                # new from repeats, so every number is the one measured for fewer repeats.
                rows.append(RepeatRow(**{**rows[-1].to_dict(), "repeats": repeats, "identical": True}))
                bar.update(1)
                continue
            memo: dict[tuple[int, int], np.ndarray] = {}

            def attacker_average(
                raw: np.ndarray,
                images: np.ndarray,
                draw_seed: int,
                repeats: int = repeats,
                memo: dict = memo,
                spec: FilterSpec = spec,
                kind: str = kind,
            ) -> Any:
                # The attacker's R-averaged releases of its own images, drawn once per split (reused across epochs:
                # R x N draws per epoch would dominate the run for the OpenDP sampler).
                cached = memo.get((id(raw), len(raw)))
                if cached is not None:
                    return cached
                device = _pipeline(spec, info)  # the attacker's own device (another secret)
                if kind == "consistent":
                    value = _as_rows(device(raw, np.random.default_rng(draw_seed), inputs=images), info.num_classes)
                else:
                    value = averaged(
                        lambda r: _as_rows(
                            device(raw, np.random.default_rng(draw_seed + 7919 * r), inputs=images), info.num_classes
                        ),
                        repeats,
                    )[0]
                memo[(id(raw), len(raw))] = value = np.asarray(value, dtype=np.float32)
                return value

            eval_inputs = mapping(release, domain)
            server = _run(decoder_session, eval_inputs)
            validation_release = attacker_average(raw_validation, validation_model, spec_seed + 17)
            validation_inputs = mapping(validation_release, domain)
            attack = adaptive_attack(
                decoder_proto,
                AttackData(
                    train_inputs=lambda epoch, s=spec_seed, average=attacker_average, domain=domain: mapping(
                        average(raw_train, train_model, s + 31 * (epoch + 1)), domain
                    ),
                    train_images=x_train,
                    train_labels=y_train,
                    native_inputs=native_train,
                    validation_inputs=validation_inputs,
                    validation_images=x_validation,
                    validation_groups=validation_release.argmax(axis=1),
                    eval_inputs=eval_inputs,
                    eval_groups=release.argmax(axis=1),
                    server_validation=_run(decoder_session, validation_inputs),
                    server_eval=server,
                ),
                settings=settings,
                projector=None,
                reference=None,
                seed=spec_seed % (2**31),
                threads=threads,
            )
            winner = "server" if attack.decoder == "server" else f"adaptive: {attack.decoder}"
            value = psnr(x_eval, attack.reconstructions)
            rows.append(
                RepeatRow(
                    filter=spec.text,
                    noise=kind,
                    repeats=repeats,
                    identical=bool(identical) if repeats > 1 else True,
                    accuracy=float(np.mean(release.argmax(axis=1) == y_eval)),
                    psnr=value,
                    ssim=ssim(x_eval, attack.reconstructions) if min(x_eval.shape[-2:]) >= 11 else float("nan"),
                    psnr_gain_db=value - base,
                    attacker=winner,
                )
            )
            bar.update(1)
    bar.close()
    return rows


def _as_rows(release: np.ndarray, num_classes: int) -> np.ndarray:
    release = np.asarray(release)
    return one_hot(release.astype(np.int64), num_classes) if release.ndim == 1 else release
