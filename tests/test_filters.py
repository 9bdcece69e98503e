"""Output filters: batch == one row at a time, ART semantics, typing, capacity, fail-closed, budgets."""

from __future__ import annotations

import itertools
import math
import threading

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeguard import (
    Argmax,
    ClassLabels,
    ClippedLaplace,
    FilterError,
    FilterPipeline,
    GaussianNoise,
    HighConfidence,
    LabelConfidence,
    LabelPreservingNoise,
    LaplaceNoise,
    OutputFilter,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    ReverseSigmoid,
    Round,
    Rounded,
    Sigmoid,
    Softmax,
    TopK,
    Truncate,
    device_secret,
    pipeline_capacity_bits,
)
from edgeguard.filters import make_rng, parse_filter_spec, secure_rng

K = 10


def _logits(rows: int = 17, k: int = K, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(rows, k)) * 3).astype(dtype)
    x[1, 2] = x[1, 5] = x[1].max() + 1  # a tie for the top class
    x[2] = 0.5  # a constant row
    return x


def _probabilities(rows: int = 17, k: int = K, seed: int = 0, dtype=np.float32) -> np.ndarray:
    z = _logits(rows, k, seed, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


# --- one-row-at-a-time oracles (plain Python on a 1-D row; ART's formulas where ART defines them) ----------
def _first_argmax(row):
    values = list(row)
    return values.index(max(values))


def _one_hot(row):
    out = np.zeros_like(row)
    out[_first_argmax(row)] = 1
    return out


def _oracle_softmax(row, rng):
    exps = [math.exp(v - max(row)) for v in row]
    return np.array([e / sum(exps) for e in exps])


def _oracle_sigmoid(row, rng):
    return np.array([1 / (1 + math.exp(-v)) for v in row])


def _oracle_round(decimals, clip=None):
    def oracle(row, rng):
        values = np.clip(row, -clip, clip) if clip else row
        return np.array([np.rint(v * 10.0**decimals) / 10.0**decimals for v in values], dtype=row.dtype)

    return oracle


def _oracle_truncate(decimals):
    def oracle(row, rng):
        return np.array([math.trunc(float(np.float32(v) * np.float32(10.0**decimals))) / 10.0**decimals for v in row])

    return oracle


def _oracle_top_k(k, renormalize=False):
    def oracle(row, rng):
        keep = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out = np.zeros_like(row)
        for j in keep:
            out[j] = row[j]
        if renormalize:
            out = out / out.sum()
        return out

    return oracle


def _oracle_argmax_index(row, rng):
    return _first_argmax(row)


def _oracle_class_labels(row, rng):  # ART ClassLabels, K > 1
    return _one_hot(row)


def _oracle_high_confidence(cutoff):
    return lambda row, rng: np.array([v if v >= cutoff else 0.0 for v in row])


def _oracle_reverse_sigmoid(beta, gamma):
    def perturb(p):
        clipped = min(max(p, 1e-9), 1 - 1e-9)
        r = beta * (1 / (1 + math.exp(-gamma * math.log(clipped / (1 - clipped)))) - 0.5)
        return min(max(p - r, 0.0), 1.0)

    def oracle(row, rng):
        q = [perturb(float(p)) for p in row]
        return np.array([v / sum(q) for v in q])

    return oracle


def _renormalized(values):
    values = np.maximum(values, 0)
    return values / values.sum() if values.sum() > 0 else np.full_like(values, 1 / len(values))


def _oracle_gaussian(std, renormalize):
    def oracle(row, rng):
        noisy = row + rng.standard_normal(len(row), dtype=row.dtype) * np.asarray(std, row.dtype)
        return _renormalized(noisy) if renormalize else noisy

    return oracle


def _oracle_laplace(scale, renormalize):
    def oracle(row, rng):
        noisy = (row + rng.laplace(0.0, scale, len(row))).astype(row.dtype)
        return _renormalized(noisy) if renormalize else noisy

    return oracle


def _oracle_label_preserving(std):
    def oracle(row, rng):
        noisy = row + rng.standard_normal(len(row), dtype=row.dtype) * np.asarray(std, row.dtype)
        label, moved = _first_argmax(row), _first_argmax(noisy)
        noisy[label], noisy[moved] = noisy[moved], noisy[label]
        for j in range(len(noisy)):
            if j != label and noisy[j] >= noisy[label]:
                noisy[j] = np.nextafter(noisy[label], -np.inf)
        return noisy

    return oracle


# (filter, input kind, oracle, tolerance); random filters are fed the same seeded stream row by row
ORACLE_CASES = {
    "softmax": (Softmax(), "logits", _oracle_softmax, 1e-6),
    "sigmoid": (Sigmoid(), "logits", _oracle_sigmoid, 1e-6),
    "round2-logits": (Round(2), "logits", _oracle_round(2), 0),
    "round3-probabilities": (Round(3), "probabilities", _oracle_round(3), 0),
    "round1-clip2": (Round(1, clip=2.0), "logits", _oracle_round(1, 2.0), 0),
    "rounded-art": (Rounded(), "probabilities", _oracle_round(3), 0),
    "truncate2": (Truncate(2), "logits", _oracle_truncate(2), 1e-6),
    "top3": (TopK(3), "logits", _oracle_top_k(3), 0),
    "top2-renormalized": (TopK(2, renormalize=True), "probabilities", _oracle_top_k(2, True), 1e-6),
    "argmax-index": (Argmax(), "logits", _oracle_argmax_index, 0),
    "argmax-one-hot": (Argmax("one_hot"), "logits", lambda row, rng: _one_hot(row), 0),
    "class-labels": (ClassLabels(), "probabilities", _oracle_class_labels, 0),
    "high-confidence": (HighConfidence(0.2), "probabilities", _oracle_high_confidence(0.2), 0),
    "reverse-sigmoid": (ReverseSigmoid(1.0, 0.1), "probabilities", _oracle_reverse_sigmoid(1.0, 0.1), 1e-6),
    "reverse-sigmoid-strong": (ReverseSigmoid(0.8, 2.0), "probabilities", _oracle_reverse_sigmoid(0.8, 2.0), 1e-6),
    "gaussian-logits": (GaussianNoise(0.3), "logits", _oracle_gaussian(0.3, False), 0),
    "gaussian-probabilities": (
        GaussianNoise(0.05, renormalize=True),
        "probabilities",
        _oracle_gaussian(0.05, True),
        1e-6,
    ),
    "laplace-logits": (LaplaceNoise(0.3), "logits", _oracle_laplace(0.3, False), 0),
    "laplace-probabilities": (LaplaceNoise(0.05, renormalize=True), "probabilities", _oracle_laplace(0.05, True), 1e-6),
    "label-preserving": (LabelPreservingNoise(2.0), "logits", _oracle_label_preserving(2.0), 0),
}


@pytest.mark.parametrize("case", ORACLE_CASES.values(), ids=ORACLE_CASES.keys())
def test_batch_equals_one_row_at_a_time(case):
    stage, kind, oracle, tolerance = case
    batch = _logits() if kind == "logits" else _probabilities()
    released = stage(batch, np.random.default_rng(7))
    stream = np.random.default_rng(7)
    expected = np.stack([np.asarray(oracle(row.copy(), stream)) for row in batch])
    assert released.shape == expected.shape == ((len(batch),) if released.ndim == 1 else batch.shape)
    np.testing.assert_allclose(released, expected, rtol=tolerance, atol=tolerance)


def test_class_labels_are_one_hot_per_row_on_batches():
    """ART's ClassLabels once set column argmax(row) to 1 in every row of a batch (all ones): not here."""
    batch = np.eye(K, dtype=np.float32)[::-1] + 0.01
    labels = ClassLabels()(batch)
    assert labels.sum(axis=1).tolist() == [1.0] * K
    np.testing.assert_array_equal(labels.argmax(axis=1), np.arange(K)[::-1])


def test_art_binary_semantics_with_one_column():
    p = np.array([[0.2], [0.7], [0.5]], dtype=np.float32)
    np.testing.assert_array_equal(ClassLabels()(p)[:, 0], [0, 1, 0])  # ART: preds > 0.5
    released = ReverseSigmoid(1.0, 0.1)(p)[:, 0]
    expected = [_oracle_reverse_sigmoid(1.0, 0.1)(np.array([v, 1 - v]), None)[0] for v in p[:, 0]]
    np.testing.assert_allclose(released, expected, rtol=1e-6)
    noisy = GaussianNoise(5.0)(p, np.random.default_rng(0))
    assert (noisy >= 0).all()  # ART clips negatives for one column


def test_unbound_gaussian_noise_follows_art_row_by_row():
    """ART renormalises a batch only if *all* rows are probabilities; here each row is judged alone."""
    mixed = np.concatenate([_probabilities(3), _logits(3)])
    noisy = GaussianNoise(0.01)(mixed, np.random.default_rng(1))
    np.testing.assert_allclose(noisy[:3].sum(axis=1), 1.0, rtol=1e-5)
    assert (noisy[:3] >= 0).all()
    assert not np.allclose(noisy[3:].sum(axis=1), 1.0)


def test_bound_noise_renormalizes_by_declared_kind_not_by_values():
    pipeline = FilterPipeline([GaussianNoise(0.05)], input_kind="probabilities")
    noisy = pipeline(_probabilities(), np.random.default_rng(0))
    np.testing.assert_allclose(noisy.sum(axis=1), 1.0, rtol=1e-5)
    logits_like_probabilities = _probabilities()  # values look like probabilities but the model declares logits
    noisy = FilterPipeline([GaussianNoise(0.05)], input_kind="logits")(logits_like_probabilities, make_rng(0))
    assert not np.allclose(noisy.sum(axis=1), 1.0)


def test_renormalization_of_a_row_with_nothing_left_is_uniform():
    p = np.zeros((2, 4), dtype=np.float32)
    p[:, 0] = 1.0
    out = LaplaceNoise(1e-3, renormalize=True)(p - 5.0 * (np.arange(4) > -1), np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.25)


# --- property tests ------------------------------------------------------------------------------------------
_rows = st.integers(1, 6)
_cols = st.integers(2, 12)


@st.composite
def _score_batches(draw, dtype=None):
    dtype = dtype or draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(_rows), draw(_cols))
    # a small alphabet forces ties; wide floats test extremes
    elements = st.one_of(
        st.sampled_from([-1.0, 0.0, 0.5, 1.0, 3.0]),
        st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
    )
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(batch=_score_batches(), std=st.floats(1e-3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_label_preserving_noise_never_changes_the_top1_class(batch, std, seed):
    for distribution in ("gaussian", "laplace"):
        out = LabelPreservingNoise(std, distribution=distribution)(batch, np.random.default_rng(seed))
        np.testing.assert_array_equal(out.argmax(axis=1), batch.argmax(axis=1))
        assert out.dtype == batch.dtype and out.shape == batch.shape


@settings(max_examples=100, deadline=None)
@given(batch=_score_batches(), std=st.floats(1e-3, 10.0), seed=st.integers(0, 2**32 - 1))
def test_label_preserving_noise_on_probabilities_keeps_label_and_simplex(batch, std, seed):
    z = batch.astype(np.float64) / 100
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(batch.dtype)
    out = FilterPipeline([LabelPreservingNoise(std)], input_kind="probabilities")(p, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.argmax(axis=1), p.argmax(axis=1))
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)


_SHAPE_FILTERS = [
    Softmax(),
    Sigmoid(),
    Round(2),
    Round(0, clip=4.0),
    Truncate(1),
    TopK(2),
    Argmax("one_hot"),
    GaussianNoise(0.5, renormalize=False),
    LaplaceNoise(0.5, renormalize=False),
    LabelPreservingNoise(0.5),
    ClippedLaplace(2.0, 10.0, budget=1e9),
    Rounded(),
    HighConfidence(0.1),
    ClassLabels(),
]


@settings(max_examples=60, deadline=None)
@given(batch=_score_batches(), seed=st.integers(0, 2**32 - 1))
def test_every_filter_keeps_shape_and_dtype(batch, seed):
    for stage in _SHAPE_FILTERS:
        out = stage(batch, np.random.default_rng(seed))
        assert out.shape == batch.shape, stage
        assert out.dtype == batch.dtype, stage
    index = Argmax()(batch)
    assert index.shape == (len(batch),) and index.dtype == np.int64
    np.testing.assert_array_equal(index, batch.argmax(axis=1))


@settings(max_examples=60, deadline=None)
@given(batch=_score_batches(np.float64), decimals=st.integers(0, 4))
def test_softmax_then_round_gives_grid_probabilities(batch, decimals):
    p = Softmax()(batch)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    rounded = Round(decimals)(p)
    steps = rounded * 10**decimals
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-6)
    assert (np.abs(rounded.sum(axis=1) - 1) <= batch.shape[1] / 2 / 10**decimals + 1e-9).all()


def test_filters_do_not_modify_their_input():
    batch = _logits()
    before = batch.copy()
    for stage in _SHAPE_FILTERS + [TopK(3), ReverseSigmoid()]:
        stage(batch if stage.accepts != "probabilities" else _probabilities(), np.random.default_rng(0))
    np.testing.assert_array_equal(batch, before)


# --- typing -------------------------------------------------------------------------------------------------
TYPE_ERRORS = {
    "softmax-on-probabilities": ([Softmax()], "probabilities", "multiclass", "expected logits, got probabilities"),
    "reverse-sigmoid-on-logits": ([ReverseSigmoid()], "logits", "multiclass", "expected probabilities, got logits"),
    "double-softmax": ([Softmax(), Softmax()], "logits", "multiclass", "expected logits, got probabilities"),
    "after-argmax-index": ([Argmax(), Round(2)], "logits", "multiclass", "label index per row"),
    "softmax-multilabel": ([Softmax()], "logits", "multilabel", "use Sigmoid()"),
    "argmax-multilabel": ([Argmax()], "logits", "multilabel", "use ClassLabels()"),
    "topk-renormalize-logits": ([TopK(2, renormalize=True)], "logits", "multiclass", "expected probabilities"),
    "noise-renormalize-logits": ([GaussianNoise(1.0, renormalize=True)], "logits", "multiclass", "expected probab"),
    "noisy-probabilities-are-not-probabilities": (
        [GaussianNoise(0.1, renormalize=False), ReverseSigmoid()],
        "probabilities",
        "multiclass",
        "expected probabilities, got scores",
    ),
}


@pytest.mark.parametrize("case", TYPE_ERRORS.values(), ids=TYPE_ERRORS.keys())
def test_pipeline_type_checks_against_output_kind(case):
    filters, kind, task, message = case
    with pytest.raises(FilterError, match=message):
        FilterPipeline(filters, input_kind=kind, task_type=task)


def test_valid_pipelines_bind():
    assert len(FilterPipeline([Softmax(), Round(2), TopK(3, renormalize=True)], input_kind="logits")) == 3
    assert FilterPipeline([Sigmoid(), Round(2)], input_kind="logits", task_type="multilabel").terminal is False
    assert FilterPipeline([Argmax()], input_kind="probabilities").terminal is True
    with pytest.raises(FilterError, match="expected OutputFilter instances"):
        FilterPipeline([np.round])


BAD_PARAMETERS = {
    "round-negative": (Round, (-1,), "decimals"),
    "round-float": (Round, (2.5,), "decimals"),
    "round-too-many": (Round, (13,), "decimals"),
    "round-bad-clip": (Round, (2, -1.0), "clip"),
    "topk-zero": (TopK, (0,), "k"),
    "argmax-output": (Argmax, ("probabilities",), "output"),
    "gaussian-zero": (GaussianNoise, (0.0,), "std"),
    "gaussian-renormalize": (GaussianNoise, (1.0, "yes"), "renormalize"),
    "laplace-inf": (LaplaceNoise, (math.inf,), "scale"),
    "label-preserving-distribution": (LabelPreservingNoise, (1.0, "cauchy"), "distribution"),
    "high-confidence-zero": (HighConfidence, (0.0,), "cutoff"),
    "reverse-sigmoid-beta": (ReverseSigmoid, (-1.0,), "beta"),
    "clipped-laplace-epsilon": (ClippedLaplace, (1.0, 0.0, 10.0), "epsilon"),
    "clipped-laplace-budget": (ClippedLaplace, (1.0, 1.0, -5.0), "total_epsilon"),
    "clipped-laplace-policy": (ClippedLaplace, (1.0, 1.0, 5.0, "ignore"), "on_exhausted"),
}


@pytest.mark.parametrize("case", BAD_PARAMETERS.values(), ids=BAD_PARAMETERS.keys())
def test_bad_parameters_raise_filter_error(case):
    cls, args, word = case
    with pytest.raises(FilterError, match=word):
        cls(*args)


def test_filters_refuse_non_2d_input_and_topk_larger_than_k():
    with pytest.raises(FilterError, match=r"expected a 2-D float array of shape \(N, K\)"):
        Round(2)(np.zeros(5, dtype=np.float32))
    with pytest.raises(FilterError, match="2-D float"):
        Round(2)(np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(FilterError, match="k <= number of classes 5"):
        TopK(6)(np.zeros((2, 5), dtype=np.float32))


def test_to_dict_names_parameters_and_release_capacity():
    entry = Round(2, clip=3.0).to_dict()
    assert entry["name"] == "round" and entry["decimals"] == 2 and entry["clip"] == 3.0
    assert "stars and bars" in entry["release_capacity"]
    names = [cls.name for cls in (Softmax, Sigmoid, Round, Truncate, TopK, Argmax, GaussianNoise, LaplaceNoise)]
    assert len(set(names)) == len(names)
    described = FilterPipeline([Softmax(), Round(2)], input_kind="logits").to_dict(num_classes=10)
    assert described["capacity_bits"] == pytest.approx(pipeline_capacity_bits([Softmax(), Round(2)], 10), abs=1e-6)
    assert described["release_capacity"].startswith("at most")
    budget = ClippedLaplace(1.0, 1.0, budget=2.0).to_dict()["budget"]
    assert budget["total_epsilon"] == 2.0 and budget["users"] == 0 and "repeats included" in budget["composition"]


# --- capacity -----------------------------------------------------------------------------------------------
def _stars_and_bars_bits(decimals, k):
    return math.log2(math.comb(10**decimals + k - 1, k - 1))


@pytest.mark.parametrize("k", [2, 10, 100], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("decimals", [1, 2, 4], ids=lambda d: f"d{d}")
def test_rounded_probabilities_capacity_is_stars_and_bars_plus_the_reachable_row_sums(decimals, k):
    bits = pipeline_capacity_bits([Softmax(), Round(decimals)], k)
    scale, slack = 10**decimals, 1e-4  # declared probabilities sum to 1 within 1e-4
    sums = range(math.ceil(scale * (1 - slack) - k / 2), math.floor(scale * (1 + slack) + k / 2) + 1)
    assert bits == pytest.approx(math.log2(sum(math.comb(s + k - 1, k - 1) for s in sums if s >= 0)), rel=1e-12)
    assert bits > _stars_and_bars_bits(decimals, k)  # per-entry rounding breaks the sum-to-one of the paper's count
    assert pipeline_capacity_bits([Round(decimals)], k, input_kind="probabilities") == bits
    exact = pipeline_capacity_bits([Softmax(), Round(decimals, preserve_sum=True)], k)
    assert exact == pytest.approx(_stars_and_bars_bits(decimals, k), rel=1e-12)


def _simplex_points(k: int) -> np.ndarray:
    n = 200 if k <= 3 else 40
    grid = [c for c in itertools.product(range(n + 1), repeat=k - 1) if sum(c) <= n]
    p = np.array([[*(v / n for v in c), 1 - sum(c) / n] for c in grid])
    return np.concatenate([p, np.random.default_rng(0).dirichlet(np.ones(k), 20000)])


@pytest.mark.parametrize("k,decimals", [(2, 1), (3, 1), (4, 1), (3, 2)], ids=["K2d1", "K3d1", "K4d1", "K3d2"])
def test_capacity_bounds_a_brute_force_count_of_released_rows(k, decimals):
    """Enumerate a fine grid of the simplex (plus random points) and count the distinct released rows."""
    p = _simplex_points(k)
    counts = {}
    for name, pipeline in {
        "round": [Round(decimals)],
        "truncate": [Truncate(decimals)],
        "round-top1": [Round(decimals), TopK(1)],
        "preserve-sum": [Round(decimals, preserve_sum=True)],
    }.items():
        released = FilterPipeline(pipeline, input_kind="probabilities")(p)
        counts[name] = len({tuple(np.rint(row * 10**decimals).astype(int)) for row in released})
        assert math.log2(counts[name]) <= pipeline_capacity_bits(pipeline, k, input_kind="probabilities") + 1e-9
    assert counts["preserve-sum"] == math.comb(10**decimals + k - 1, k - 1)  # the paper's count, reached
    if k > 2:
        assert counts["round"] > math.comb(10**decimals + k - 1, k - 1)  # plain rounding exceeds it


def _oracle_largest_remainder(decimals):
    def oracle(row, rng):
        scale = 10**decimals
        scaled = [float(v) / float(sum(row.astype(np.float64))) * scale for v in row]
        steps = [math.floor(v) for v in scaled]
        for j in sorted(range(len(row)), key=lambda j: (-(scaled[j] - steps[j]), j))[: scale - sum(steps)]:
            steps[j] += 1
        return np.array(steps) / scale

    return oracle


def test_preserve_sum_rounding_matches_largest_remainder_row_by_row():
    p = _probabilities(50, seed=3)
    released = Round(2, preserve_sum=True)(p)
    expected = np.stack([_oracle_largest_remainder(2)(row, None) for row in p])
    np.testing.assert_allclose(released, expected, atol=1e-7)
    np.testing.assert_allclose(released.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(FilterError, match="expected multiclass probabilities"):
        FilterPipeline([Round(2, preserve_sum=True)], input_kind="logits")


CAPACITY_CASES = {
    "raw": ([], "logits", math.inf),
    "softmax": ([Softmax()], "logits", math.inf),
    "round-logits": ([Round(2)], "logits", math.inf),
    "round-logits-clipped": ([Round(2, clip=5.0)], "logits", 10 * math.log2(2 * 5 * 100 + 1)),
    "truncate-logits-clipped": ([Truncate(1, clip=2.0)], "logits", 10 * math.log2(2 * 2 * 10 + 1)),
    "argmax": ([Argmax()], "logits", math.log2(10)),
    "argmax-after-noise": ([GaussianNoise(1.0), Argmax("one_hot")], "logits", math.log2(10)),
    "class-labels": ([ClassLabels()], "probabilities", math.log2(10)),
    "noise": ([GaussianNoise(1.0)], "logits", math.inf),
    "laplace": ([LaplaceNoise(1.0)], "logits", math.inf),
    "noise-then-clipped-round": ([LaplaceNoise(1.0), Round(1, clip=3.0)], "logits", 10 * math.log2(61)),
    "round-then-noise": ([Softmax(), Round(2), GaussianNoise(0.01)], "logits", None),  # bounded by the Round
    "clipped-laplace": ([ClippedLaplace(3.0, 2.0, budget=10.0)], "logits", 2.0 * math.log2(math.e)),
    "clipped-laplace-argmax": (
        [ClippedLaplace(3.0, 0.5, budget=10.0, on_exhausted="argmax")],
        "logits",
        math.log2(10),
    ),
    # which of K entries is kept, and its value: one of 0.00 .. 1.00
    "top1-of-rounded": ([Softmax(), Round(2), TopK(1)], "logits", math.log2(10) + math.log2(101)),
}


@pytest.mark.parametrize("case", CAPACITY_CASES.values(), ids=CAPACITY_CASES.keys())
def test_capacity_rules(case):
    filters, kind, expected = case
    bits = pipeline_capacity_bits(filters, 10, input_kind=kind)
    if expected is None:
        assert bits == pipeline_capacity_bits([Softmax(), Round(2)], 10)
    elif math.isinf(expected):
        assert math.isinf(bits)
    else:
        assert bits == pytest.approx(expected, rel=1e-9)


def test_capacity_of_top_k_after_rounding_is_below_rounding_alone():
    rounded = pipeline_capacity_bits([Softmax(), Round(2)], 100)
    top3 = pipeline_capacity_bits([Softmax(), Round(2), TopK(3)], 100)
    assert top3 < rounded
    # K = 100 two-decimal probabilities sum to at most 1.5001 (rounding slack): 150 steps for the 3 kept values
    assert top3 == pytest.approx(math.log2(math.comb(100, 3)) + math.log2(math.comb(150 + 3, 3)), rel=1e-12)


def test_capacity_accepts_a_single_filter_a_list_or_a_pipeline_and_checks_k():
    assert pipeline_capacity_bits(Argmax(), 4) == 2.0
    assert pipeline_capacity_bits(FilterPipeline([Argmax()]), 4) == 2.0
    assert math.isinf(pipeline_capacity_bits([Round(2)], 4))  # unknown input: assume unbounded logits
    with pytest.raises(FilterError, match="num_classes"):
        pipeline_capacity_bits([Argmax()], 0)


# --- fail closed ----------------------------------------------------------------------------------------------
class _Leaky(OutputFilter):
    name = "leaky"

    def apply(self, outputs, rng, *, user_id=None):
        raise ValueError(f"cannot handle {outputs.tolist()}")


class _NaNs(OutputFilter):
    name = "nans"

    def apply(self, outputs, rng, *, user_id=None):
        return np.full_like(outputs, np.nan)


class _Shrinks(OutputFilter):
    name = "shrinks"

    def apply(self, outputs, rng, *, user_id=None):
        return outputs[:, :2].copy()


@pytest.mark.parametrize("stage", [_Leaky(), _NaNs(), _Shrinks()], ids=["raises", "nan", "shape"])
def test_pipeline_fails_closed_without_quoting_outputs(stage):
    outputs = np.array([[1.23456, -7.891011, 3.1415926]], dtype=np.float32)
    with pytest.raises(FilterError) as caught:
        FilterPipeline([Round(3), stage])(outputs)
    error = caught.value
    for text in (str(error), repr(error.args)):
        assert "1.23" not in text and "7.89" not in text and "3.14" not in text
    assert error.__cause__ is None and error.__context__ is None


def test_budget_errors_pass_through_the_pipeline():
    stage = ClippedLaplace(1.0, 1.0, budget=1.0)
    pipeline = FilterPipeline([stage])
    pipeline(np.zeros((1, 3), np.float32))
    with pytest.raises(PrivacyBudgetExceededError, match="epsilon") as caught:
        pipeline(np.zeros((1, 3), np.float32))
    assert caught.value.__context__ is None


# --- the clipped-Laplace mechanism and its budget ---------------------------------------------------------------
def test_clipped_laplace_noise_scale_matches_the_l1_sensitivity():
    stage = ClippedLaplace(clip=2.0, epsilon=4.0, budget=1e9)
    # 2cK / epsilon, raised by at most 0.1% so that OpenDP's privacy map certifies epsilon
    assert 10.0 <= stage.noise_scale(10) <= 10.01
    assert stage.row_epsilon(10) <= 4.0 and stage.row_epsilon(10) == pytest.approx(4.0, rel=1e-3)
    big = np.full((4000, 10), 100.0, dtype=np.float64)  # clipped to 2.0
    noise = stage(big) - 2.0
    # OpenDP cannot be seeded: fixed, generous bounds (40,000 draws; the std of the mean |noise| is 0.5%)
    assert np.mean(np.abs(noise)) == pytest.approx(10.0, rel=0.03)  # E|Laplace(b)| = b
    assert abs(np.mean(noise)) < 0.4  # 5.7 standard errors


def test_accountant_charges_per_user_and_refuses_when_spent():
    stage = ClippedLaplace(1.0, 0.5, budget=2.0)
    rows = np.zeros((2, 4), np.float32)
    stage(rows, make_rng(0), user_id="alice")  # 2 rows x 0.5
    stage(rows, make_rng(0), user_id="alice")
    assert stage.accountant.spent("alice") == pytest.approx(2.0)
    with pytest.raises(PrivacyBudgetExceededError, match="alice|spent"):
        stage(rows[:1], make_rng(0), user_id="alice")
    stage(rows, make_rng(0), user_id="bob")  # another user has their own budget
    assert stage.accountant.remaining("bob") == pytest.approx(1.0)
    with pytest.raises(PrivacyBudgetExceededError):  # all-or-nothing: 3 rows x 0.5 > 1.0 left
        stage(np.zeros((3, 4), np.float32), make_rng(0), user_id="bob")
    assert stage.accountant.remaining("bob") == pytest.approx(1.0)


def test_exhausted_budget_can_fall_back_to_argmax():
    stage = ClippedLaplace(1.0, 1.0, budget=1.0, on_exhausted="argmax")
    logits = _logits(4)
    first = stage(logits[:1], make_rng(0))
    assert not np.isin(first, [0.0, 1.0]).all()  # a noisy release
    fallback = stage(logits, make_rng(0))
    np.testing.assert_array_equal(fallback, np.eye(K, dtype=np.float32)[logits.argmax(axis=1)])


def test_accountant_is_thread_safe():
    accountant = PrivacyAccountant(total_epsilon=100.0)
    granted = []

    def spend():
        granted.append(sum(accountant.try_spend("user", 0.25) for _ in range(100)))

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 400
    assert accountant.spent("user") == pytest.approx(100.0)


def test_shared_accountant_between_filters():
    accountant = PrivacyAccountant(1.0)
    a, b = ClippedLaplace(1.0, 0.5, budget=accountant), ClippedLaplace(2.0, 0.5, budget=accountant)
    a(np.zeros((1, 3), np.float32), make_rng(0))
    b(np.zeros((1, 3), np.float32), make_rng(0))
    with pytest.raises(PrivacyBudgetExceededError):
        a(np.zeros((1, 3), np.float32), make_rng(0))


# --- randomness -----------------------------------------------------------------------------------------------
def test_default_randomness_is_fresh_and_seeds_reproduce():
    batch = np.zeros((2, K), np.float32)
    stage = GaussianNoise(1.0)
    assert not np.array_equal(stage(batch), stage(batch))  # no rng: fresh OS entropy per call
    pipeline = FilterPipeline([stage])
    assert not np.array_equal(pipeline(batch), pipeline(batch))
    np.testing.assert_array_equal(pipeline(batch, make_rng(3)), pipeline(batch, make_rng(3)))
    a, b = secure_rng().integers(0, 2**62, 4), secure_rng().integers(0, 2**62, 4)
    assert not np.array_equal(a, b)


def test_secure_rng_reseeds_from_the_os_once_enough_values_were_drawn(monkeypatch):
    import edgeguard.filters.base as base

    calls = []
    real = base.secrets.randbits
    monkeypatch.setattr(base.secrets, "randbits", lambda bits: calls.append(bits) or real(bits))
    done = threading.Event()
    counts = []

    def run():  # a fresh thread starts without a generator
        secure_rng(10)
        counts.append(len(calls))  # first use: seeded (state and increment)
        for _ in range(base.RESEED_AFTER_DRAWS // 10 - 1):
            secure_rng(10)
        counts.append(len(calls))  # 250 draws so far: same seed
        secure_rng(10)
        counts.append(len(calls))  # 260 > 256: reseeded
        secure_rng(1000)
        counts.append(len(calls))  # a large call always starts from a fresh seed
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert done.is_set() and counts == [2, 2, 4, 6]


def test_secure_rng_is_thread_local():
    barrier = threading.Barrier(4)
    seen = {}

    def draw(index):
        rng = secure_rng()
        barrier.wait()  # all four threads hold their generator at the same time
        seen[index] = id(rng)
        barrier.wait()

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen.values())) == 4


# --- consistent (keyed) noise ------------------------------------------------------------------------------------


def _images(rows: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32)


CONSISTENT = {
    "gaussian": lambda key: GaussianNoise(0.7, key=key),
    "laplace": lambda key: LaplaceNoise(0.4, key=key),
    "label-preserving": lambda key: LabelPreservingNoise(1.0, distribution="laplace", key=key),
    "softmax-gaussian": lambda key: GaussianNoise(0.05, key=key),
}


@pytest.mark.parametrize("name", CONSISTENT, ids=CONSISTENT.keys())
def test_consistent_noise_repeats_exactly_and_differs_across_inputs_and_devices(name):
    kind = "probabilities" if name == "softmax-gaussian" else "logits"
    outputs = _probabilities(6) if kind == "probabilities" else _logits(6)
    images, key = _images(), device_secret()
    device = FilterPipeline([CONSISTENT[name](key)], input_kind=kind)
    first, again = device(outputs, inputs=images), device(outputs, secure_rng(), inputs=images)
    np.testing.assert_array_equal(first, again)  # a repeat is the identical release (rng ignored)
    # the same input in another batch, at another position, gets the same noise
    reordered = device(outputs[::-1].copy(), inputs=images[::-1].copy())
    np.testing.assert_array_equal(reordered[::-1], first)
    assert not np.array_equal(first, outputs)
    # a different input (one pixel changed) gets different noise for the same outputs
    changed = images.copy()
    changed[0, 0, 0, 0] = np.nextafter(changed[0, 0, 0, 0], 2.0)
    other_input = device(outputs, inputs=changed)
    assert not np.array_equal(other_input[0], first[0]) and np.array_equal(other_input[1:], first[1:])
    # another device secret: another release of the same input
    other_device = FilterPipeline([CONSISTENT[name](device_secret())], input_kind=kind)
    assert not np.array_equal(other_device(outputs, inputs=images), first)
    # the rows of a batch get independent-looking noise even for identical outputs
    same = device(np.repeat(outputs[:1], 6, axis=0), inputs=images)
    assert len({row.tobytes() for row in same}) == 6


def test_consistent_noise_has_the_stated_distribution_and_hides_its_key():
    key = bytes(range(32))  # a fixed secret and fixed inputs: the noise, hence the statistic, is deterministic
    rows = 4000
    images = np.random.default_rng(5).random((rows, 3), dtype=np.float32)
    noise = GaussianNoise(2.0, key=key)(np.zeros((rows, K)), inputs=images)
    assert noise.std() == pytest.approx(2.0, rel=0.02) and abs(noise.mean()) < 0.03
    from scipy import stats

    assert stats.kstest(noise.ravel() / 2.0, "norm").statistic < 0.01  # fixed key material: deterministic
    laplace = LaplaceNoise(0.5, key=key)(np.zeros((rows, K)), inputs=images)
    assert stats.kstest(laplace.ravel(), "laplace", args=(0, 0.5)).statistic < 0.01
    stage = GaussianNoise(1.0, key=key)
    for text in (repr(stage), str(stage.to_dict()), repr(FilterPipeline([stage]).to_dict(K))):
        assert key.hex() not in text and "consistent" in text


def test_consistent_noise_needs_the_inputs_and_a_real_secret():
    pipeline = FilterPipeline([Softmax(), GaussianNoise(0.01, key=device_secret())], input_kind="logits")
    assert pipeline.needs_inputs and not FilterPipeline([GaussianNoise(0.01)]).needs_inputs
    with pytest.raises(FilterError, match="expected the model inputs of the 17 row"):
        pipeline(_logits())
    with pytest.raises(FilterError, match="expected the model inputs"):
        pipeline(_logits(), inputs=_images(3))  # one input per row
    for bad in (b"short", "a string key", 1234):
        with pytest.raises(FilterError, match="at least 16 bytes"):
            GaussianNoise(1.0, key=bad)


def test_consistent_spec_draws_a_fresh_secret_per_build():
    spec = parse_filter_spec("gaussian:1,consistent=true")
    assert spec.text == "gaussian:1,consistent=true"
    first, second = spec.build()[0], spec.build()[0]
    assert first.consistent and second.consistent and first.key != second.key and len(first.key) == 32
    assert parse_filter_spec("gaussian:1,consistent=false").build()[0].key is None
    images, outputs = _images(), _logits(6)
    assert not np.array_equal(first(outputs, inputs=images), second(outputs, inputs=images))


# --- the OpenDP-backed clipped Laplace ------------------------------------------------------------------------------
def test_clipped_laplace_releases_lie_on_opendp_grid_for_neighbouring_inputs():
    """Mironov's attack needs outputs whose low-order bits depend on the input; OpenDP's are grid points."""
    stage = ClippedLaplace(clip=1.0, epsilon=10.0, budget=1e9)
    step = stage.granularity(K)
    assert step == 2.0 ** math.floor(math.log2(step)) and step < stage.noise_scale(K) / 1000
    a = np.zeros((2000, K), np.float32)
    b = np.full((2000, K), 0.1234567, np.float32)  # a neighbouring input, not on the grid
    for outputs in (a, b):
        released = stage(outputs).astype(np.float64)
        multiples = released / step
        np.testing.assert_array_equal(multiples, np.round(multiples))  # every value an integer multiple of 2^k
    # the textbook float sampler fails this check: its outputs are arbitrary doubles
    textbook = np.random.default_rng(0).laplace(0.0, stage.noise_scale(K), (2000, K)) + 0.1234567
    assert not np.array_equal(textbook / step, np.round(textbook / step))


def test_clipped_laplace_follows_its_stated_laplace_distribution():
    """OpenDP cannot be seeded: 50,000 draws against a fixed, generous KS bound (the 1e-6 critical value is 0.011)."""
    from scipy import stats

    stage = ClippedLaplace(clip=2.0, epsilon=4.0, budget=1e9)
    scale = stage.noise_scale(K)
    outputs = np.full((5000, K), 0.75)
    noise = (stage(outputs) - 0.75).ravel() / scale
    assert stats.kstest(noise, "laplace").statistic < 0.02
    assert np.mean(np.abs(noise)) == pytest.approx(1.0, rel=0.03)
    # OpenDP's own privacy map certifies the stated epsilon for one row, and n times it for n rows
    assert stage.row_epsilon(K) <= 4.0
    from edgeguard.filters.privacy import _sampler

    assert _sampler(2.0, 4.0, K, 7).map(7 * stage.sensitivity(K)) == pytest.approx(7 * stage.row_epsilon(K))


def test_budget_counts_every_release_including_repeats_and_refuses_without_values():
    stage = ClippedLaplace(1.0, 1.0, budget=3.0)
    row = np.array([[1.2345, -7.8901, 3.1416]], np.float32)
    releases = [stage(row, user_id="carol") for _ in range(3)]  # the same input three times
    assert stage.accountant.spent("carol") == pytest.approx(3 * stage.row_epsilon(3))
    assert stage.accountant.releases("carol") == 3
    assert not np.array_equal(releases[0], releases[1])  # each repeat is a fresh draw, so each is charged
    with pytest.raises(PrivacyBudgetExceededError) as caught:
        FilterPipeline([stage])(row, user_id="carol")
    error = caught.value
    for text in (str(error), repr(error.args)):
        assert "1.23" not in text and "7.89" not in text and "3.14" not in text
    assert error.__context__ is None and error.__cause__ is None
    for release in releases:  # no released value shows up in the message either
        assert f"{release[0, 0]:.4g}" not in str(error)
    assert stage.accountant.remaining("dave") == 3.0  # another user's budget is untouched


# --- top-1 label with a quantised confidence --------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [1, 4, 10], ids=lambda n: f"L{n}")
def test_label_confidence_releases_one_of_k_times_l_rows(levels):
    probabilities = Softmax()(np.random.default_rng(2).normal(0, 3, (3000, K)).astype(np.float32))
    stage = LabelConfidence(levels)
    released = FilterPipeline([stage], input_kind="probabilities")(probabilities)
    assert released.shape == probabilities.shape and released.dtype == probabilities.dtype
    np.testing.assert_array_equal(released.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(released.sum(axis=1), 1.0, atol=1e-6)
    assert len({row.tobytes() for row in released}) <= K * levels
    assert stage.capacity_bits(K) == pytest.approx(math.log2(K) + math.log2(levels))
    assert pipeline_capacity_bits([Softmax(), stage], K) == pytest.approx(math.log2(K * levels))
    # the released confidence is the centre of the bin of [1/K, 1] the top-1 probability falls in
    top = released.max(axis=1)
    assert np.all(np.abs(top - probabilities.max(axis=1)) <= (1 - 1 / K) / (2 * levels) + 1e-6)


def test_label_confidence_spec_and_typing():
    spec = parse_filter_spec("softmax>confidence:4")
    assert spec.text == "softmax>label_confidence:4" and repr(spec.build()) == repr([Softmax(), LabelConfidence(4)])
    with pytest.raises(FilterError, match="expected probabilities"):
        FilterPipeline([LabelConfidence(4)], input_kind="logits")
    with pytest.raises(FilterError, match="expected levels to be a positive integer"):
        LabelConfidence(0)
