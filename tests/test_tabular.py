"""converters.tabular (the threat on vectors) and the vet's honest twin on a vector model.

Small seeded trainings on scikit-learn's 8x8 digits as 64-vectors; the oracles are the held-out
split (never trained on) and onnxruntime on the exported file.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from converters.tabular import decoder_scores, export_tabular, train_tabular  # noqa: E402
from edgeguard import SafeModel, vet  # noqa: E402

EPOCHS = 60


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    return {v: train_tabular("digits", vicious=v, epochs=EPOCHS, seed=0) for v in (False, True)}


def test_export_runs_raw_features_like_torch(pair, tmp_path):
    threat = pair[True]
    path = tmp_path / "digits.onnx"
    path.write_bytes(export_tabular(threat))
    got = ort.InferenceSession(str(path)).run(None, {"input": threat.x_test[:16]})[0]
    np.testing.assert_allclose(got, threat.logits(threat.x_test[:16]), rtol=1e-4, atol=1e-4)
    model = SafeModel(path)
    assert model.info.input_kind == "vector" and model.info.input_shape == (64,)
    np.testing.assert_array_equal(model.predict(threat.x_test[:16]), got.argmax(axis=1))


def test_the_vicious_decoder_beats_the_honest_one_held_out(pair):
    honest, vicious = decoder_scores(pair[False]), decoder_scores(pair[True])
    assert pair[True].accuracy > 0.9 and pair[False].accuracy > 0.9
    assert vicious["gain_db"] > honest["gain_db"] + 1.0
    r2 = np.asarray(vicious["r2_per_feature"], dtype=float)  # None (a constant feature) -> NaN
    assert np.nanmean(r2) > np.nanmean(np.asarray(vicious["r2_per_feature_label_only"], dtype=float))


def test_vet_with_an_honest_twin_on_vectors(pair, tmp_path):
    verdicts = {}
    for vicious, threat in pair.items():
        path = tmp_path / f"m{int(vicious)}.onnx"
        path.write_bytes(export_tabular(threat))
        np.savez(tmp_path / "probe.npz", x=threat.x_test, y=threat.y_test)
        np.savez(tmp_path / "train.npz", x=threat.x_train, y=threat.y_train)
        report = vet(path, tmp_path / "probe.npz", seed=0, augment_seed=1, reference_data=tmp_path / "train.npz")
        leakage = report.tests["leakage"]
        assert leakage.details["statistic"] == "excess_gain_db"
        assert leakage.details["twin"]["kind"] == "trained" and leakage.details["twin"]["source"].endswith("train.npz")
        verdicts[vicious] = (report.verdict, leakage.score)
    assert verdicts[True][1] > verdicts[False][1]  # excess over the twin: larger for the vicious model
    assert verdicts[True][0] != "honest"
