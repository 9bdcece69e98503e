"""Vector probe readers (.npz/.csv/.parquet) and the leakage audit's targets for vectors and large images."""

from __future__ import annotations

import numpy as np
import pytest

from edgeguard.errors import DataError
from edgeguard.vectors import load_vectors
from edgeguard.vetting.leakage import LeakageSettings, leakage_audit
from edgeguard.vetting.targets import audit_target, per_feature_r2, thumbnail


def _table(n=30, f=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, f)).astype(np.float32), rng.integers(0, 3, size=n)


def test_csv_with_a_named_label_column_and_class_names(tmp_path):
    x, y = _table()
    names = ["cat", "dog", "eel"]
    lines = ["a,b,species,c,d"] + [f"{r[0]},{r[1]},{names[t]},{r[2]},{r[3]}" for r, t in zip(x, y)]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_vectors(path, label_column="species", class_names=names)
    np.testing.assert_allclose(data.x, x, rtol=1e-6)
    np.testing.assert_array_equal(data.y, y)
    assert data.feature_names == ("a", "b", "c", "d") and data.class_names == tuple(names)
    with pytest.raises(DataError, match="label column 'label'"):
        load_vectors(path)


def test_parquet_matches_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    x, y = _table()
    columns = {f"f{i}": x[:, i] for i in range(x.shape[1])} | {"target": y}
    pq.write_table(pa.table(columns), tmp_path / "p.parquet")
    data = load_vectors(tmp_path / "p.parquet", label_column="target")
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)


def test_npz_vectors_and_refusals(tmp_path):
    x, y = _table()
    np.savez(tmp_path / "p.npz", x=x, y=y)
    data = load_vectors(tmp_path / "p.npz")
    np.testing.assert_array_equal(data.x, x)
    bad = x.copy()
    bad[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    with pytest.raises(DataError, match="finite"):
        load_vectors(tmp_path / "nan.npz")
    (tmp_path / "text.csv").write_text("a,label\nhello,1\n")
    with pytest.raises(DataError, match="numeric feature columns"):
        load_vectors(tmp_path / "text.csv")


def test_targets_by_input_kind():
    small = audit_target(np.zeros((3, 1, 28, 28), np.float32))
    assert small.kind == "pixels" and small.values == 784
    big = audit_target(np.zeros((3, 3, 224, 224), np.float32))
    assert big.kind == "thumbnail" and big.values == 3 * 32 * 32 and "32x32 thumbnail" in big.name
    x, _ = _table()
    vector = audit_target(x)
    encoded = vector.encode(x)
    assert vector.kind == "standardised" and encoded.min() > 0 and encoded.max() < 1
    z = (x - x.mean(0)) / x.std(0)  # the encoding is one affine map of the z-scores
    slope = np.polyfit(z.reshape(-1), encoded.reshape(-1), 1)
    np.testing.assert_allclose(np.polyval(slope, z), encoded, atol=1e-9)


def test_thumbnail_is_the_block_mean():
    images = np.random.default_rng(0).uniform(size=(2, 3, 64, 64)).astype(np.float32)
    expected = images.reshape(2, 3, 32, 2, 32, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(thumbnail(images), expected, atol=1e-6)


def test_per_feature_r2_against_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(1)
    truth = rng.normal(size=(50, 3))
    decoded = truth + rng.normal(scale=0.5, size=truth.shape)
    scores = per_feature_r2(decoded, np.zeros_like(truth), truth)
    np.testing.assert_allclose(scores["r2_per_feature"], r2_score(truth, decoded, multioutput="raw_values"))


def test_vector_audit_finds_features_copied_into_the_outputs():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=3000).fit(x, y)
    scale = x[:, :4].std(0)

    def honest(b):
        return np.log(np.clip(model.predict_proba(b), 1e-9, 1))

    def leaky(b):  # four features ride along in extra output columns
        return np.hstack([honest(b), (b[:, :4] - x[:, :4].mean(0)) / scale])

    settings = LeakageSettings(bootstrap=50)
    fair = leakage_audit(x, honest, labels=y, seed=0, augment_seed=1, settings=settings)
    leak = leakage_audit(x, leaky, labels=y, seed=0, augment_seed=1, settings=settings)
    assert fair.extra["target"].startswith("standardised features")
    assert leak.ci_low_db > fair.ci_high_db  # 4 of 30 features leaked: a clear, not a huge, gain
    leaked = np.array(leak.extra["r2_per_feature"][:4])
    others = np.array(fair.extra["r2_per_feature"][:4])
    assert np.all(leaked > others + 0.1)
    assert len(leak.extra["r2_per_feature_label_only"]) == 30
