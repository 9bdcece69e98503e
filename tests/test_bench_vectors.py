"""``edgeguard bench`` on vector models: a skl2onnx LogisticRegression (with ZipMap) and the vicious
tabular MLP of converters.tabular, through the public API and the CLI.

Oracles: the scikit-learn model's own labels (accuracy), numpy least squares on the same
standardised rows (the label-only release can tell no more than the per-class mean), and the
vicious model's known behaviour (its raw probabilities carry the features, its label does not).
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from _classifiers import digits_data, export_sklearn, iris_model_path, sequence_model
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from edgeguard import SafeModel
from edgeguard.bench import VECTOR_ATTACKERS, BenchSettings, VectorBenchReport, run_bench
from edgeguard.cli import main
from edgeguard.errors import DataError
from edgeguard.vectors import VectorSet

FAST = dict(eval_size=300, attack_size=700, repeats=5)
IMAGE_ONLY = {"psnr", "ssim", "risk", "pictures", "through", "codes", "repeats"}


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    x, y = digits_data()
    folder = tmp_path_factory.mktemp("logistic")
    with warnings.catch_warnings():  # a few iterations are enough for a fixture (ConvergenceWarning)
        warnings.simplefilter("ignore")
        estimator = LogisticRegression(max_iter=60).fit(x, y)
    path = export_sklearn(estimator, x, folder / "logistic.onnx", zipmap=True)
    np.savez(folder / "digits.npz", x=x, y=y)
    return estimator, path, folder / "digits.npz", x, y


@pytest.fixture(scope="module")
def logistic_report(logistic):
    _, path, data, _, _ = logistic
    return run_bench(path, None, data, "none;round:2;argmax", BenchSettings(**FAST), progress=False)


def test_vector_bench_names_every_attacker_and_skips_image_parts_with_reasons(logistic_report):
    report = logistic_report
    assert isinstance(report, VectorBenchReport)
    assert [row.filter for row in report.rows] == ["none", "round:2", "argmax"]
    for row in report.rows:
        assert set(row.attackers) == {"ridge", "knn", "mlp"}  # no decoder given: no server attacker
        assert row.worst_attacker in row.attackers
        assert row.worst_gain_db == max(score.gain_db for score in row.attackers.values())
        assert len(row.attackers["ridge"].r2_per_feature) == 64
    assert set(report.attackers) == {"ridge", "knn", "mlp"} and report.attackers["knn"] == VECTOR_ATTACKERS["knn"]
    assert IMAGE_ONLY | {"server"} <= set(report.skipped) and all(len(v) > 20 for v in report.skipped.values())
    text = report.to_markdown()
    assert "worst attacker" in text and "SSIM compares local windows" in text
    assert "PSNR" not in text.split("## Not measured")[0]  # no image figure in the measured part


def test_vector_bench_accuracy_is_the_estimators(logistic, logistic_report):
    estimator, _, _, x, y = logistic
    order = np.random.default_rng(0).permutation(len(x))
    evaluation = np.sort(order[: FAST["eval_size"]])
    expected = float(np.mean(estimator.predict(x[evaluation]) == y[evaluation]))
    for row in logistic_report.rows:  # rounding and argmax keep the top-1 class of a 10-class LR
        assert row.accuracy == pytest.approx(expected, abs=1.5 / FAST["eval_size"])
    assert logistic_report.row("argmax").capacity_bits == pytest.approx(np.log2(10))
    assert np.isinf(logistic_report.row("none").capacity_bits)


def test_a_label_only_release_gains_nothing_over_the_per_class_mean(logistic, logistic_report):
    argmax = logistic_report.row("argmax")
    assert abs(argmax.worst_gain_db) < 0.15, argmax.to_dict()
    # independent oracle: least squares from the one-hot label to the standardised features IS the class mean
    estimator, _, _, x, _ = logistic
    order = np.random.default_rng(0).permutation(len(x))
    ev, at = np.sort(order[: FAST["eval_size"]]), order[FAST["eval_size"] : FAST["eval_size"] + FAST["attack_size"]]
    mean, std = x[at].astype(np.float64).mean(0), x[at].astype(np.float64).std(0)
    std = np.where(std > 1e-12, std, 1.0)
    z_at, z_ev = (x[at] - mean) / std, (x[ev] - mean) / std
    hot_at, hot_ev = np.eye(10)[estimator.predict(x[at])], np.eye(10)[estimator.predict(x[ev])]
    solution = np.linalg.lstsq(hot_at, z_at, rcond=None)[0]
    class_means = np.stack([z_at[estimator.predict(x[at]) == k].mean(0) for k in range(10)])
    np.testing.assert_allclose(solution, class_means, atol=1e-9)
    assert np.mean((hot_ev @ solution - z_ev) ** 2) > 0  # the baseline is not trivially exact
    # an honest LR's probabilities tell somewhat more than its label, never less than the label (up to noise)
    assert logistic_report.row("none").worst_gain_db > argmax.worst_gain_db - 0.05


def test_vector_report_files_are_plain_data(logistic_report, tmp_path):
    paths = logistic_report.write(tmp_path, stem="vec")
    assert set(paths) == {"markdown", "json", "csv"} and not list(tmp_path.glob("*.png"))
    document = json.loads(paths["json"].read_text())
    assert document["kind"] == "vector" and document["rows"][2]["filter"] == "argmax"
    assert document["rows"][0]["capacity_bits"] == "inf"
    assert set(document["rows"][0]["attackers"]) == {"ridge", "knn", "mlp"}
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["filter"] for r in rows] == ["none", "round:2", "argmax"]
    assert float(rows[2]["worst_gain_db"]) == pytest.approx(logistic_report.row("argmax").worst_gain_db)


def test_vector_bench_refuses_too_little_data_with_the_fix(logistic):
    _, path, data, _, _ = logistic
    with pytest.raises(DataError, match="--eval-size"):
        run_bench(path, None, data, "argmax", BenchSettings(eval_size=1000, attack_size=4000), progress=False)


def test_sequence_model_is_scored_per_feature_of_every_step(tmp_path):
    path = sequence_model(tmp_path / "seq.onnx", steps=5, features=3, classes=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=400)
    report = run_bench(
        path,
        None,
        VectorSet(x, y),
        "none;argmax",
        BenchSettings(eval_size=120, attack_size=280, repeats=3),
        progress=False,
    )
    assert report.settings["input_kind"] == "sequence" and len(report.feature_names) == 15
    assert len(report.row("none").attackers["ridge"].r2_per_feature) == 15
    # the logits are a linear map of the per-feature means over time: ridge on them beats the label clearly
    assert report.row("none").attackers["ridge"].gain_db > report.row("argmax").worst_gain_db + 0.5


def test_fixed_batch_model_is_run_in_its_batches_and_its_latency_skipped_with_the_reason():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    data = VectorSet(x[:, :2].astype(np.float32), y.astype(np.int64))
    report = run_bench(
        iris_model_path(), None, data, "round:3;argmax", BenchSettings(eval_size=45, attack_size=105), progress=False
    )
    assert "fixed at 3" in report.skipped["latency"]
    assert np.isnan(report.row("argmax").latency_us)
    # oracle: SafeModel's own fixed-batch handling on the same evaluation rows
    evaluation = np.sort(np.random.default_rng(0).permutation(len(x))[:45])
    labels = SafeModel(iris_model_path()).predict(data.x[evaluation])
    expected = float(np.mean(labels == data.y[evaluation]))
    assert report.raw_accuracy == pytest.approx(expected) and report.row("argmax").accuracy == pytest.approx(expected)


# --- the vicious tabular MLP (converters.tabular) and the server's decoder ------------------------------------------
@pytest.fixture(scope="module")
def vicious(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from converters.tabular import export_tabular, load_tabular, train_tabular

    torch.set_num_threads(1)
    threat = train_tabular("breast_cancer", vicious=True, lam=10.0, epochs=40, seed=0)
    folder = tmp_path_factory.mktemp("vicious")
    model = folder / "vicious.onnx"
    model.write_bytes(export_tabular(threat))
    decoder = folder / "decoder.onnx"
    with torch.no_grad():
        torch.onnx.export(
            threat.decoder.eval(),
            (torch.zeros(4, 2),),
            str(decoder),
            dynamo=False,
            opset_version=17,
            input_names=["logits"],
            output_names=["features"],
            dynamic_axes={"logits": {0: "batch"}, "features": {0: "batch"}},
        )
    x, y, classes, features = load_tabular("breast_cancer")
    header = [name.replace(" ", "_") for name in features]
    probe = folder / "breast_cancer.csv"
    with probe.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "diagnosis"])
        writer.writerows([[*map(float, row), classes[label]] for row, label in zip(x, y)])
    return model, decoder, probe


def test_raw_probabilities_of_a_vicious_model_leak_more_than_its_label(vicious):
    model, decoder, probe = vicious
    settings = BenchSettings(eval_size=170, attack_size=399, repeats=5)
    report = run_bench(
        model,
        decoder,
        probe,
        "none;softmax;softmax>round:1;argmax",
        settings,
        progress=False,
        label_column="diagnosis",
    )
    assert report.feature_names[0] == "mean_radius" and len(report.feature_names) == 30
    assert set(report.row("none").attackers) == {"ridge", "knn", "mlp", "server"} and "server" not in report.skipped
    raw, label = report.row("softmax"), report.row("argmax")
    assert raw.worst_gain_db > label.worst_gain_db + 1.0, (raw.to_dict(), label.to_dict())
    assert raw.worst_mean_r2 > report.label_only_mean_r2 + 0.05
    assert abs(label.worst_gain_db) < 0.3
    # the server's decoder reads the probabilities back as logits (centred log): it leaks as much as on logits
    assert raw.attackers["server"].gain_db > 1.0


def test_cli_bench_on_a_csv_probe(vicious, tmp_path):
    model, _, probe = vicious
    args = [
        "bench",
        str(model),
        "--data",
        str(probe),
        "--label-column",
        "diagnosis",
        "--filters",
        "softmax;argmax",
        "--eval-size",
        "170",
        "--attack-size",
        "399",
        "--repeats",
        "5",
        "--out",
        str(tmp_path),
        "-q",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| `softmax` | probabilities |" in result.output and "worst attacker" in result.output
    document = json.loads((tmp_path / "bench.json").read_text())
    assert IMAGE_ONLY <= set(document["skipped"])
    assert {"csv", "md"} <= {p.suffix[1:] for p in tmp_path.iterdir()}
    missing = CliRunner().invoke(main, [*args[:4], "--label-column", "nope", "--out", str(tmp_path / "x"), "-q"])
    assert missing.exit_code == 2 and "expected a label column 'nope'" in missing.output
