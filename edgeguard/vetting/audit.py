"""Leakage audit v3: the deployment distribution, several features and decoders, the worse kept.

The model is queried once on every view of the probe images:

- ``clean``: the probe images as they are (decoded 8-bit images: what an app will feed);
- ``off-grid``: augmented copies (shift, brightness, noise, mixup) that leave the 8-bit grid;
- ``on-grid``: augmented copies re-quantised to 8 bits (they stay on the grid).

The images are split into folds. For each fold a decoder is fitted on the other folds'
images (the clean ones and the fitting copies of both augmented kinds) and scored on the
fold's clean image and on one fresh copy of each kind: cross-fitted, so the clean score is
never in-sample. Every (view, feature set, decoder) gives a PSNR gain over the label-only
baseline (the mean fitting image of the probe label); the statistic is the largest gain,
or, with an honest twin audited on the very same queries, the largest excess of the
model's best gain over the twin's best gain (each the maximum over its configurations), with
a 95% bootstrap interval (images resampled, every configuration recomputed, the maxima
taken in each round). A clean
score far above the augmented ones (a switch on the 8-bit grid) is reported as a gap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeguard.errors import ConfigError, DataError
from edgeguard.vetting import large_inputs
from edgeguard.vetting.decoders import (
    DECODER_NAMES,
    feature_sets,
    knn_decode,
    krr_cv_decode,
    low_bit_entropy,
    mlp_decode,
    normalise_global,
    principal_basis,
    standardise_columns,
)
from edgeguard.vetting.targets import AuditTarget, audit_target

__all__ = ["AuditSettings", "Views", "ModelAudit", "make_views", "audit_model", "summarise", "VIEWS"]

VIEWS = ("clean", "off-grid", "on-grid")


@dataclass(frozen=True)
class AuditSettings:
    """Knobs of the v3 leakage audit.

    ``decoders`` among ("krr", "knn", "mlp"): the decoders run on the main feature sets
    ("log", "rest"); the residue and low-bit feature sets use k-NN. ``augmentations``
    fitting copies of each kind (off-grid, on-grid) per image; ``max_fit`` caps the fitting
    rows per fold; ``gap_margin_db``: a clean-vs-augmented gap whose lower bound exceeds it
    is flagged.
    """

    decoders: tuple[str, ...] = DECODER_NAMES
    folds: int = 2
    augmentations: int = 2
    max_fit: int = 1600
    bootstrap: int = 300
    neighbours: int = 10
    ridge_alpha: float = 1.0
    residues: bool = True
    gap_margin_db: float = 0.5
    min_samples: int = 200

    def __post_init__(self) -> None:
        unknown = [d for d in self.decoders if d not in DECODER_NAMES]
        if unknown or not self.decoders:
            raise ConfigError(f"expected decoders among {DECODER_NAMES}, got {list(self.decoders)}")
        if self.folds < 2 or self.augmentations < 1 or self.max_fit < 50 or self.neighbours < 1:
            raise ConfigError(
                f"expected folds >= 2, augmentations >= 1, max_fit >= 50, neighbours >= 1, got {self.folds}, "
                f"{self.augmentations}, {self.max_fit}, {self.neighbours}"
            )


@dataclass
class Views:
    """The queried copies of the probe items and which copy plays which role.

    Copies are regenerated on demand from ``(augment_seed, copy)`` (the model and its twin
    see the very same items) and never held all at once: only their audit targets
    (:mod:`edgeguard.vetting.targets`: pixels, a thumbnail, or standardised features) are kept.
    Large images (:mod:`edgeguard.vetting.large_inputs`, ``large``) are augmented, queried and
    encoded chunk by chunk; their targets are filled by the first :meth:`outputs` (or :meth:`encode`).
    """

    items: np.ndarray
    target: AuditTarget
    augment_seed: int
    kinds: list[str]  # per copy: "clean", "off-grid" or "on-grid"
    scored: dict[str, int]
    fitting: list[int]
    targets: np.ndarray = field(default=None, repr=False)  # (copies, N, values) in [0, 1]
    large: bool = False
    encoded: np.ndarray = field(default=None, repr=False)  # large inputs: (copies, N) rows whose targets are filled

    def copy(self, index: int) -> np.ndarray:
        if self.large:
            return self._chunk(index, np.arange(len(self.items)))
        kind = self.kinds[index]
        if kind == "clean":
            return self.items
        rng = np.random.default_rng([self.augment_seed, index])
        moved = self.target.augment(self.items, 1, rng)[0]
        if kind == "on-grid":
            moved = (np.round(moved * 255.0) / 255.0).astype(np.float32)
        return moved

    def _chunk(self, index: int, rows: np.ndarray) -> np.ndarray:
        kind = self.kinds[index]
        if kind == "clean":
            return self.items[rows]
        return large_inputs.augment_rows(self.items, rows, (self.augment_seed, index), on_grid=kind == "on-grid")

    def encode(self, needed: np.ndarray | None = None) -> None:
        """Large inputs: fill the targets of the ``needed`` (copies, N) rows (all by default) without a model."""
        if self.large:
            self._large_outputs(None, None, needed)

    def _large_outputs(
        self, run: Callable[[np.ndarray], np.ndarray] | None, clean: np.ndarray | None, needed: np.ndarray | None
    ) -> np.ndarray:
        """Outputs (copies * N, K) of the ``needed`` rows (NaN elsewhere), augmenting, querying and encoding one
        chunk of each copy at a time; targets are encoded once, by the first pass that reaches them."""
        n = len(self.items)
        needed = np.ones((len(self.kinds), n), bool) if needed is None else needed
        per_copy: list[np.ndarray | None] = []
        for index, kind in enumerate(self.kinds):
            reuse = kind == "clean" and clean is not None
            result = np.asarray(clean, dtype=np.float64) if reuse else None
            todo = np.flatnonzero(needed[index])
            for start in range(0, len(todo), large_inputs.CHUNK_ROWS):
                rows = todo[start : start + large_inputs.CHUNK_ROWS]
                fresh = not self.encoded[index, rows].all()
                if not fresh and (reuse or run is None):
                    continue
                part = self._chunk(index, rows)
                if fresh:
                    self.targets[index, rows] = self.target.encode(part)
                    self.encoded[index, rows] = True
                if run is not None and not reuse:
                    got = _checked(run(part), len(rows))
                    if result is None:
                        result = np.full((n, got.shape[1]), np.nan)
                    result[rows] = got
            per_copy.append(result)
        if run is None:
            return np.zeros((0, 0))
        k = next(r.shape[1] for r in per_copy if r is not None)
        return np.concatenate([np.full((n, k), np.nan) if r is None else r for r in per_copy])

    def outputs(
        self, run: Callable[[np.ndarray], np.ndarray], clean: np.ndarray | None = None, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """The model's outputs on every copy, (copies * N, K) float64, one copy at a time (``clean``: those
        of the clean items, already computed: one model pass fewer; ``needed``: large inputs only, the (copies, N)
        rows to query, NaN elsewhere)."""
        if self.large:
            return self._large_outputs(run, clean, needed)
        chunks = []
        for index in range(len(self.kinds)):
            if self.kinds[index] == "clean" and clean is not None:
                chunks.append(np.asarray(clean, dtype=np.float64))
                continue
            chunks.append(_checked(run(self.copy(index)), len(self.items)))
        return np.concatenate(chunks)


def _checked(chunk: np.ndarray, n: int) -> np.ndarray:
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2 or len(chunk) != n:
        raise DataError(f"expected outputs of shape ({n}, K), got {chunk.shape}")
    return chunk


def make_views(items: np.ndarray, augment_seed: int, augmentations: int, target: AuditTarget | None = None) -> Views:
    """Clean items, off-grid augmented copies and (images only) on-grid, 8-bit re-quantised, augmented copies."""
    items = np.asarray(items, dtype=np.float32)
    target = target or audit_target(items)
    a = augmentations + 1
    kinds = ["clean"] + ["off-grid"] * a + ([] if target.is_vector else ["on-grid"] * a)
    scored = {"clean": 0, "off-grid": 1}
    fitting = [0] + list(range(2, 1 + a))
    if not target.is_vector:
        scored["on-grid"] = 1 + a
        fitting += list(range(2 + a, 1 + 2 * a))
    views = Views(items, target, augment_seed, kinds, scored, fitting)
    if large_inputs.is_large(items):  # targets filled with the first model's outputs, chunk by chunk
        views.large, views.encoded = True, np.zeros((len(kinds), len(items)), bool)
        views.targets = np.zeros((len(kinds), len(items), target.values))
        return views
    views.targets = np.stack([target.encode(views.copy(i)) for i in range(len(kinds))])
    return views


@dataclass
class ModelAudit:
    """Per-image squared errors of every (view, features, decoder) and of the label-only baseline."""

    errors: dict[tuple[str, str, str], np.ndarray]
    baseline: dict[str, np.ndarray]
    simplex: bool
    low_bit_entropy: float
    gammas: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: vector targets only: per-feature squared errors summed over the scored rows, and the truth's spread
    feature_sse: dict[Any, np.ndarray] = field(default_factory=dict)
    feature_sst: dict[str, np.ndarray] = field(default_factory=dict)

    def gains(self) -> dict[tuple[str, str, str], float]:
        return {key: _gain(dec, self.baseline[key[0]]) for key, dec in self.errors.items()}


def _gain(decoder: np.ndarray, baseline: np.ndarray) -> float:
    return float(10.0 * np.log10(max(baseline.mean(), 1e-12) / max(decoder.mean(), 1e-12)))


def _configs(names: Sequence[str], decoders: Sequence[str]) -> list[tuple[str, str]]:
    """(feature set, decoder) pairs: every decoder on "log", all but the MLP on "logr"/"rest", k-NN on the rest."""
    out = []
    for name in names:
        if name in ("log", "logr", "rest"):
            out += [(name, d) for d in decoders if not (name != "log" and d == "mlp")]
        else:  # residue and low-bit features: k-NN only (cheap, and enough to read a code)
            out.append((name, "knn"))
    return out


def audit_model(
    run: Callable[[np.ndarray], np.ndarray],
    views: Views,
    labels: np.ndarray,
    *,
    task_type: str = "multiclass",
    settings: AuditSettings | None = None,
    seed: int = 0,
    outputs: np.ndarray | None = None,
    clean_outputs: np.ndarray | None = None,
) -> ModelAudit:
    """Query ``run`` on every view (unless ``outputs`` are given; ``clean_outputs``: the outputs of the clean
    items, already computed) and score every decoder, cross-fitted."""
    started = time.perf_counter()
    settings = settings or AuditSettings()
    copies, n = len(views.kinds), len(views.items)
    if n < settings.min_samples:
        raise DataError(f"expected at least {settings.min_samples} probe images for the leakage audit, got {n}")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), settings.folds)
    plan = [_fold_rows(views, folds, fold, settings.max_fit, seed) for fold in range(len(folds))]
    needed = None
    if views.large:  # only the rows read below are queried (the same draws: the statistics do not change)
        needed = np.zeros((copies, n), bool)
        for scored, fc, fi in plan:
            needed[fc, fi] = True
            for c in views.scored.values():
                needed[c, scored] = True
    if outputs is None:
        outputs = views.outputs(run, clean_outputs, needed)
    views.encode(needed)
    if outputs.ndim != 2 or len(outputs) != copies * n:
        raise DataError(f"expected outputs of shape ({copies * n}, K), got {outputs.shape}")
    used = outputs if needed is None else outputs[needed.reshape(-1)]
    if not np.all(np.isfinite(used)):
        raise DataError("expected finite model outputs, got NaN or inf; the model is broken for these inputs")
    sets = {}
    for name, f in feature_sets(used, task_type, settings.residues).items():
        if needed is not None:  # the rows never read stay zero
            f, part = np.zeros((copies * n, f.shape[1])), f
            f[needed.reshape(-1)] = part
        sets[name] = f.reshape(copies, n, -1)
    labels = np.asarray(labels)
    groups = np.unique(labels > 0.5, axis=0, return_inverse=True)[1].reshape(-1) if labels.ndim == 2 else labels
    errors: dict[tuple[str, str, str], np.ndarray] = {}
    baseline = {view: np.zeros(n) for view in views.scored}
    gammas: list[float] = []
    configs = _configs(list(sets), settings.decoders)
    per_feature = views.target.is_vector
    sse: dict[Any, np.ndarray] = {}
    truths: dict[str, list[np.ndarray]] = {view: [] for view in views.scored}
    for fold, (scored, fc, fi) in enumerate(plan):
        fit_images = views.targets[fc, fi]
        fit_groups = groups[fi]
        query_c = np.concatenate([np.full(len(scored), views.scored[v]) for v in views.scored])
        query_i = np.tile(scored, len(views.scored))
        truth = views.targets[query_c, query_i]
        axes = tuple(range(1, truth.ndim))
        means = {g: fit_images[fit_groups == g].mean(axis=0) for g in np.unique(fit_groups)}
        fallback = fit_images.mean(axis=0)
        base = np.stack([means.get(g, fallback) for g in groups[query_i]])
        base_err = ((base - truth) ** 2).mean(axis=axes)
        for k, view in enumerate(views.scored):
            rows = slice(k * len(scored), (k + 1) * len(scored))
            baseline[view][scored] = base_err[rows]
            if per_feature:
                sse[("baseline", view)] = sse.get(("baseline", view), 0.0) + ((base[rows] - truth[rows]) ** 2).sum(axis=0)
                truths[view].append(truth[rows])
        basis = large_inputs.gram_basis(fit_images) if views.large else principal_basis(fit_images)
        for name, decoder in configs:
            fit_x, query_x = sets[name][fc, fi], sets[name][query_c, query_i]
            if name in ("logr", "rest") or name.startswith("residue") or name == "lowbits":
                fit_x, query_x = standardise_columns(fit_x, query_x)
            else:
                fit_x, query_x = normalise_global(fit_x, query_x)
            if decoder == "krr":
                decoded, gamma = krr_cv_decode(
                    fit_x, fit_images, query_x, settings.ridge_alpha, seed=seed + fold, basis=basis
                )
                gammas.append(gamma)
            elif decoder == "mlp":
                decoded = mlp_decode(fit_x, fit_images, query_x, seed=seed + fold, basis=basis)
            else:
                decoded = knn_decode(fit_x, fit_images, query_x, settings.neighbours)
            err = ((decoded - truth) ** 2).mean(axis=axes)
            for k, view in enumerate(views.scored):
                rows = slice(k * len(scored), (k + 1) * len(scored))
                errors.setdefault((view, name, decoder), np.zeros(n))[scored] = err[rows]
                if per_feature:
                    key = (view, name, decoder)
                    sse[key] = sse.get(key, 0.0) + ((decoded[rows] - truth[rows]) ** 2).sum(axis=0)
    from edgeguard.vetting.decoders import is_simplex

    sst = {}
    if per_feature:
        for view, parts in truths.items():
            stacked = np.concatenate(parts)
            sst[view] = ((stacked - stacked.mean(axis=0)) ** 2).sum(axis=0)
    return ModelAudit(
        errors, baseline, is_simplex(used), low_bit_entropy(used), gammas, time.perf_counter() - started,
        sse, sst,
    )


def _fold_rows(
    views: Views, folds: list[np.ndarray], fold: int, max_fit: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold's scored images and its fitting rows (copy, image): the other folds' fitting copies, at most ``max_fit``."""
    rest = np.concatenate([f for j, f in enumerate(folds) if j != fold])
    rows = [(c, i) for c in views.fitting for i in rest]
    if len(rows) > max_fit:
        keep = np.random.default_rng([seed, fold]).choice(len(rows), max_fit, replace=False)
        rows = [rows[i] for i in np.sort(keep)]
    return folds[fold], np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def _bootstrap_gains(audit: ModelAudit, index: np.ndarray) -> dict[tuple[str, str, str], np.ndarray]:
    out = {}
    base = {view: np.log10(np.maximum(b[index].mean(axis=-1), 1e-12)) for view, b in audit.baseline.items()}
    for key, dec in audit.errors.items():
        out[key] = 10.0 * (base[key[0]] - np.log10(np.maximum(dec[index].mean(axis=-1), 1e-12)))
    return out


def summarise(
    mine: ModelAudit, twin: ModelAudit | None = None, *, rounds: int = 300, seed: int = 0, gap_margin_db: float = 0.5
) -> dict[str, Any]:
    """The audit's statistics with 95% intervals: max gain, max excess over the twin, clean-vs-augmented gap."""
    n = len(next(iter(mine.baseline.values())))
    rng = np.random.default_rng([seed, 17])
    index = np.concatenate([np.arange(n)[None], rng.integers(0, n, size=(max(rounds, 1), n))])
    own = _bootstrap_gains(mine, index)  # row 0: the point estimate
    keys = sorted(own)
    own_matrix = np.stack([own[k] for k in keys])  # (configs, rounds + 1)

    def interval(values: np.ndarray) -> list[float]:
        if rounds < 1:
            return [float(values[0]), float(values[0])]
        low, high = np.percentile(values[1:], [2.5, 97.5])
        return [float(min(low, values[0])), float(max(high, values[0]))]

    def best(matrix: np.ndarray, views: Sequence[str]) -> np.ndarray:
        rows = [i for i, k in enumerate(keys) if k[0] in views]
        return matrix[rows].max(axis=0)

    gains = {f"{v}/{f}/{d}": float(own[(v, f, d)][0]) for v, f, d in keys}
    top = int(own_matrix[:, 0].argmax())
    result: dict[str, Any] = {
        "gain_db": float(own_matrix[:, 0].max()),
        "gain_ci95_db": interval(own_matrix.max(axis=0)),
        "worst_configuration": "/".join(keys[top]),
        "gains_db": gains,
        "per_view_gain_db": {v: float(best(own_matrix, [v])[0]) for v in mine.baseline},
        "simplex_rows": mine.simplex,
        "low_bit_entropy_bits": mine.low_bit_entropy,
        "krr_gamma_chosen": sorted(set(mine.gammas)),
        "audit_seconds": mine.seconds,
    }
    if mine.feature_sst:  # vectors: R^2 per standardised feature, of the best decoder and of the label-only baseline
        view = keys[top][0]
        total = np.where(mine.feature_sst[view] > 1e-12, mine.feature_sst[view], np.nan)
        result["r2_per_feature"] = [float(v) for v in 1.0 - mine.feature_sse[keys[top]] / total]
        result["r2_per_feature_label_only"] = [float(v) for v in 1.0 - mine.feature_sse[("baseline", view)] / total]
    if twin is not None:
        other = _bootstrap_gains(twin, index)
        if sorted(other) != keys:
            raise DataError("expected the twin to be audited with the same configurations as the model")
        twin_matrix = np.stack([other[k] for k in keys])
        # the best client decoder on the model against the best one on the twin (each its own maximum)
        excess = own_matrix.max(axis=0) - twin_matrix.max(axis=0)
        result.update(
            excess_gain_db=float(excess[0]),
            excess_ci95_db=interval(excess),
            twin_worst_configuration="/".join(keys[int(twin_matrix[:, 0].argmax())]),
            twin_gain_db=float(twin_matrix[:, 0].max()),
            twin_audit_seconds=twin.seconds,
        )
        gap = (best(own_matrix, ["clean"]) - best(twin_matrix, ["clean"])) - (
            best(own_matrix, ["off-grid", "on-grid"]) - best(twin_matrix, ["off-grid", "on-grid"])
        )
    else:
        gap = best(own_matrix, ["clean"]) - best(own_matrix, ["off-grid", "on-grid"])
    result["clean_minus_augmented_db"] = float(gap[0])
    result["clean_minus_augmented_ci95_db"] = interval(gap)
    result["gap_flagged"] = bool(result["clean_minus_augmented_ci95_db"][0] > gap_margin_db)
    return result
