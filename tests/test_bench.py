"""``edgeguard bench``: the CLI end to end on a tiny vicious model, the Python API, the spec parser and the one-hot mapping."""

from __future__ import annotations

import csv
import json
import inspect
import math

import click
import numpy as np
import pytest
from click.testing import CliRunner

from edgeguard import Argmax, ClippedLaplace, GaussianNoise, LabelPreservingNoise, Round, Softmax, TopK
from edgeguard.bench import (
    CSV_COLUMNS,
    BenchReport,
    BenchRow,
    BenchSettings,
    DecoderInputMap,
    default_filter_specs,
    one_hot,
    parse_filter_spec,
    parse_filter_specs,
    run_bench,
)
from edgeguard.cli import main
from edgeguard.errors import DataError, FilterError
from edgeguard.filters import FilterPipeline, OutputDomain

SHORT_GRID = "none;softmax;softmax>round:1;gaussian:1;argmax;label_preserving:3;clipped_laplace:c=5,eps=100"
SMALL = ["--eval-size", "150", "--attack-size", "350", "--attack-epochs", "1", "--repeats", "20", "--threads", "1"]
# the ladder's rung 3 (one epoch on the 315 attacker training images) and a short repeats experiment
LADDER = ["--through-epochs", "1", "--through-train-limit", "300", "--repeats-experiment", "1,3"]
LADDER += ["--repeat-eval-size", "60", "--repeat-train-size", "100"]


@pytest.fixture(scope="module")
def probe_npz(tmp_path_factory, fmnist_test_small):
    path = tmp_path_factory.mktemp("bench_data") / "probe.npz"
    np.savez(path, x=fmnist_test_small.x, y=fmnist_test_small.y, class_names=np.array(fmnist_test_small.class_names))
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_threats, probe_npz):
    """One `edgeguard bench` run on the tiny vicious model with a short grid; returns (result, out folder)."""
    vicious = tiny_threats["vicious"]
    out = tmp_path_factory.mktemp("bench_out")
    args = ["bench", str(vicious["classifier"]), "--decoder", str(vicious["decoder"]), "--data", str(probe_npz)]
    result = CliRunner().invoke(
        main, [*args, "--filters", SHORT_GRID, "--out", str(out), "--seed", "3", *SMALL, *LADDER]
    )
    return result, out


def _rows(out):
    with (out / "bench.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, {row["filter"]: row for row in reader}


# --- the CLI end to end -------------------------------------------------------------------------


def test_cli_writes_every_file(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    files = ("bench.csv", "bench.md", "bench.json", "bench.png", "bench_reconstructions.png")
    for name in (*files, "bench_frontier.png", "bench_worst_case.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    from PIL import Image

    with Image.open(out / "bench.png") as plot, Image.open(out / "bench_reconstructions.png") as grid:
        assert plot.size[0] > 400 and plot.size[1] > 300
        # header + originals + label-only + one line per filter, 2x-scaled 28-pixel tiles
        assert grid.size[1] >= (2 + len(SHORT_GRID.split(";"))) * 56
    document = json.loads((out / "bench.json").read_text())
    assert [row["filter"] for row in document["rows"]] == [spec.text for spec in parse_filter_specs(SHORT_GRID)]
    assert document["rows"][0]["capacity_bits"] == "inf" and document["settings"]["command"].startswith(
        "edgeguard bench"
    )
    markdown = (out / "bench.md").read_text()
    assert "| `argmax` |" in markdown and "Target (accuracy within 0.5 points" in markdown
    assert markdown in result.stdout  # the report goes to stdout


def test_csv_has_the_promised_columns_and_sane_numbers(cli_run):
    _, out = cli_run
    columns, rows = _rows(out)
    assert tuple(columns) == CSV_COLUMNS
    assert list(rows) == [spec.text for spec in parse_filter_specs(SHORT_GRID)]
    for name, row in rows.items():
        accuracy = float(row["accuracy"])
        assert 0.5 < accuracy <= 1.0, name
        assert math.isclose(float(row["accuracy_drop_points"]), 100 * (float(rows["none"]["accuracy"]) - accuracy))
        for key in ("latency_us", "raw_latency_us", "latency_ratio"):
            assert 0 < float(row[key]) < 1e7, (name, key)
        for prefix in ("server", "adaptive"):
            assert 5.0 < float(row[f"{prefix}_psnr"]) < 40.0, (name, prefix)
            assert -1.0 <= float(row[f"{prefix}_ssim"]) <= 1.0, (name, prefix)
            assert 0.0 < float(row[f"{prefix}_risk"]) < 10.0, (name, prefix)
        assert math.isfinite(float(row["adaptive_psnr_gain_db"])) and math.isfinite(float(row["adaptive_risk"]))
        assert row["attack_decoder"] in ("finetuned", "server", "knn", "label_only")
    # the raw row reports a latency ratio: its noise floor (both calls raw)
    assert 0.5 < float(rows["none"]["latency_ratio"]) < 2.0
    assert rows["none"]["capacity_bits"] == "inf" and rows["none"]["release"] == "logits"
    assert math.isclose(float(rows["argmax"]["capacity_bits"]), math.log2(10))
    assert rows["argmax"]["release"] == "labels (index)" and "one-hot" in rows["argmax"]["decoder_input"]
    assert rows["softmax"]["release"] == "probabilities" and "log" in rows["softmax"]["decoder_input"]


def test_label_preserving_releases_keep_raw_accuracy(cli_run):
    _, out = cli_run
    _, rows = _rows(out)
    raw = rows["none"]["accuracy"]
    for name in ("argmax", "softmax", "label_preserving:3"):
        assert rows[name]["accuracy"] == raw, name
    # heavy noise on the logits changes some top-1 classes
    assert float(rows["clipped_laplace:c=5,eps=100"]["accuracy"]) < float(raw)


def test_raw_outputs_leak_more_than_the_label(cli_run):
    _, out = cli_run
    _, rows = _rows(out)
    raw, label = rows["none"], rows["argmax"]
    # the vicious model's raw logits carry more than the label, for the decoder as trained and the adaptive attacker
    assert float(raw["adaptive_psnr"]) > float(label["adaptive_psnr"]) + 1.0
    assert float(raw["server_psnr"]) > float(label["server_psnr"]) + 1.0
    # argmax carries the label only: the adaptive attacker ends near the label-only baseline
    assert abs(float(label["adaptive_psnr_gain_db"])) < 1.0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--filters", "round:x"], 2, "parameter 'decimals' of 'round' must be an integer"),
        (["--filters", "softmax>bogus:1"], 2, "unknown filter 'bogus'"),
        (["--filters", "reverse_sigmoid"], 2, "does not fit this model"),
        (["--eval-size", "400", "--attack-size", "400"], 2, "lower --eval-size / --attack-size"),
        (["--repeats", "0"], 4, "--repeats"),
    ],
    ids=["bad-value", "unknown-filter", "wrong-kind", "too-little-data", "usage"],
)
def test_cli_errors_are_clear(tiny_threats, probe_npz, tmp_path, args, code, message):
    vicious = tiny_threats["vicious"]
    base = ["bench", str(vicious["classifier"]), "--decoder", str(vicious["decoder"]), "--data", str(probe_npz)]
    result = CliRunner().invoke(main, [*base, "-q", "--out", str(tmp_path), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bench.csv").exists()


def test_cli_without_decoder_is_a_usage_error(tiny_threats, probe_npz):
    result = CliRunner().invoke(main, ["bench", str(tiny_threats["vicious"]["classifier"]), "--data", str(probe_npz)])
    assert result.exit_code == 4 and "--decoder" in result.output


# --- the Python API -----------------------------------------------------------------------------


def _api_run(tiny_threats, data, filters, **knobs):
    vicious = tiny_threats["vicious"]
    settings = dict(eval_size=60, attack_size=150, attack_epochs=0, repeats=3, seed=1, repeat_counts=())
    settings = BenchSettings(**{**settings, **knobs})
    return run_bench(vicious["classifier"], vicious["decoder"], data, filters, settings, progress=False)


def test_api_is_seeded_and_rows_are_plain_data(tiny_threats, fmnist_test_small):
    first = _api_run(tiny_threats, fmnist_test_small, filters=["none", "gaussian:1;argmax"], attacker="knn")
    second = _api_run(tiny_threats, fmnist_test_small, filters="none;gaussian:1;argmax", attacker="knn")
    assert [r.filter for r in first.rows] == ["none", "gaussian:1", "argmax"]
    for a, b in zip(first.rows, second.rows):
        a_dict, b_dict = a.to_dict(), b.to_dict()
        assert set(a_dict) == set(CSV_COLUMNS)
        for key in ("accuracy", "server_psnr", "server_risk", "adaptive_psnr", "adaptive_ssim", "adaptive_risk"):
            assert a_dict[key] == b_dict[key], (a.filter, key)
    report = first.to_dict()
    assert report["settings"]["attacker"] == "knn" and report["label_only"]["psnr"] > 5
    assert report["target"]["met_by"] == [row.filter for row in first.meeting_target()]
    assert report["target"]["statement"] == first.target_statement()


def test_api_without_torch_says_so(tiny_threats, fmnist_test_small, monkeypatch):
    import edgeguard.bench.attack as attack

    monkeypatch.setattr(attack, "torch_available", lambda: False)
    report = _api_run(tiny_threats, fmnist_test_small, filters="none;argmax", attack_epochs=2)
    assert report.settings["attacker"] == "knn"
    assert any("torch is not installed" in note for note in report.notes)
    assert "torch is not installed" in report.to_markdown()
    assert all(row.attack_decoder != "finetuned" and row.attack_best_epoch is None for row in report.rows)


def test_api_refuses_too_little_data(tiny_threats, fmnist_test_small):
    with pytest.raises(DataError, match="expected at least 1000 images"):
        _api_run(tiny_threats, fmnist_test_small, filters="none", eval_size=500, attack_size=500)


# --- the attacker ladder and the repeats experiment ---------------------------------------------------------
LADDER_COLUMNS = (
    "through_status",
    "through_accuracy",
    "through_psnr",
    "through_ssim",
    "through_risk",
    "worst_rung",
    "worst_psnr_gain_db",
    "worst_ssim_gain",
    "worst_risk_vs_label_only",
    "top3_accuracy",
    "confidence_auroc",
)


def test_cli_ladder_writes_every_rung_and_the_worst_case(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    columns, rows = _rows(out)
    assert set(LADDER_COLUMNS) <= set(columns)
    document = json.loads((out / "bench.json").read_text())
    label_psnr = document["label_only"]["psnr"]
    assert (
        document["settings"]["through"]["enabled"] and "converters.ladder" in document["settings"]["through"]["trainer"]
    )
    for name, row in rows.items():
        assert row["through_status"] == "run", (name, row["through_status"])  # the converters trainer is installed
        assert 0.0 <= float(row["through_accuracy"]) <= 1.0 and 0.0 < float(row["through_psnr"]) < 40.0, name
        rungs = {"server": row["server_psnr"], "adaptive": row["adaptive_psnr"], "through": row["through_psnr"]}
        assert row["codes_status"] == "run", (name, row["codes_status"])  # the converters code builder is installed
        rungs["codes"] = row["codes_psnr"]
        assert float(row["codes_bits_carried"]) <= float(row["capacity_bits"]) + 1e-9, name
        worst = max(rungs, key=lambda rung: float(rungs[rung]))
        assert row["worst_rung"] == worst, name
        assert math.isclose(float(row["worst_psnr_gain_db"]), float(rungs[worst]) - label_psnr, abs_tol=1e-9)
        assert 0.0 <= float(row["top3_accuracy"]) <= 1.0 and float(row["top3_accuracy"]) >= float(row["accuracy"])
    assert float(rows["argmax"]["confidence_auroc"]) == 0.5  # a label carries no confidence
    assert 0.5 < float(rows["softmax"]["confidence_auroc"]) <= 1.0
    markdown = (out / "bench.md").read_text()
    for text in (
        "rung 3: classifier + decoder trained through the filter",
        "worst case",
        "### Repeated queries",
        "### Rung 4: hand-built codes",
    ):
        assert text in markdown
    # the repeats experiment: every noise filter, fresh and consistent, for each R
    repeats = document["repeats"]
    noisy = {"gaussian:1", "label_preserving:3", "clipped_laplace:c=5,eps=100"}
    assert {(r["filter"], r["repeats"]) for r in repeats if r["noise"] == "fresh"} == {
        (f, n) for f in noisy for n in (1, 3)
    }
    consistent = {r["filter"]: r for r in repeats if r["noise"] == "consistent" and r["repeats"] == 3}
    assert set(consistent) == {"gaussian:1,consistent=true", "label_preserving:3,consistent=true"}
    assert all(r["identical"] for r in consistent.values())
    assert not any(r["identical"] for r in repeats if r["noise"] == "fresh" and r["repeats"] == 3)


def test_ladder_jobs_are_cached_by_their_settings(tiny_threats, probe_npz, cli_run):
    _, out = cli_run  # same model, data, seed and rung-3 budget: the trained attackers are reused
    vicious = tiny_threats["vicious"]
    args = ["bench", str(vicious["classifier"]), "--decoder", str(vicious["decoder"]), "--data", str(probe_npz)]
    again = out / "again"
    result = CliRunner().invoke(
        main,
        [
            *args,
            "-q",
            "--filters",
            "none;argmax",
            "--out",
            str(again),
            "--cache-dir",
            str(out / ".cache"),
            "--seed",
            "3",
        ]
        + [*SMALL, *LADDER[:4], "--repeats-experiment", "none"],
    )
    assert result.exit_code == 0, result.output
    _, rows = _rows(again)
    assert [row["through_status"] for row in rows.values()] == ["cached", "cached"]
    assert json.loads((again / "bench.json").read_text())["repeats"] == []


def test_rung_three_without_a_trainer_is_reported_as_not_run(tiny_threats, fmnist_test_small, monkeypatch, tmp_path):
    import edgeguard.bench.ladder as ladder
    from edgeguard.bench.ladder import ThroughSettings

    monkeypatch.setattr(ladder, "entry_points", lambda group: [])
    report = _api_run(
        tiny_threats, fmnist_test_small, filters="none;argmax", through=ThroughSettings(cache_dir=str(tmp_path))
    )
    for row in report.rows:
        assert row.through_status.startswith("not run: no attack trainer 'train_through' is installed")
        assert row.worst_rung in ("server", "adaptive") and math.isnan(row.through_psnr)
    assert "rungs 3 and 4 did not run" in report.target_statement() and "### Rung 3 not run" in report.to_markdown()
    assert all(row.codes_status.startswith("not run: no code builder 'hand_codes'") for row in report.rows)


def test_averaging_repeats_beats_fresh_noise_but_not_consistent_noise(tiny_threats, fmnist_test_small):
    report = _api_run(
        tiny_threats,
        fmnist_test_small,
        filters="none;gaussian:3",
        repeat_counts=(1, 30),
        repeat_eval_size=60,
        repeat_train_size=135,
        attacker="knn",
    )
    cells = {(r.noise, r.repeats): r for r in report.repeats}
    assert set(cells) == {("fresh", 1), ("fresh", 30), ("consistent", 1), ("consistent", 30)}
    assert cells["fresh", 30].psnr_gain_db > cells["fresh", 1].psnr_gain_db + 0.3  # the noise averages away
    assert cells["consistent", 30].identical and not cells["fresh", 30].identical
    assert cells["consistent", 30].psnr_gain_db == cells["consistent", 1].psnr_gain_db  # nothing to average


def _row(name: str, accuracy: float, gain: float, through: str = "run") -> BenchRow:
    values = dict.fromkeys(CSV_COLUMNS, 1.0)
    values.update(filter=name, stages="[]", release="logits", decoder_input="", random=False, attack_decoder="knn")
    values.update(accuracy=accuracy, accuracy_drop_points=100 * (0.9 - accuracy), worst_psnr_gain_db=gain)
    values.update(attack_best_epoch=None, projection_rank=None, through_status=through, worst_rung="through")
    return BenchRow(**values)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [_row("none", 0.9, 5.0), _row("argmax", 0.9, 0.05), _row("round:0", 0.85, 0.0)],
            "met by 1 of 2 filters: `argmax` (acc 90.00%, worst gain +0.05 dB, 1.0 bits). Recommended (a finite "
            "capacity bound, measured on every rung that ran and, if random, not broken by averaging repeats): "
            "`argmax` (1.0 bits). Fastest of them: `argmax`",
        ),
        (
            [_row("none", 0.9, 5.0), _row("gaussian:3", 0.8, 0.0), _row("round:1", 0.9, 0.4)],
            "met by none of the 2 filters. Of the 1 filters that keep accuracy, the lowest worst-case gain is +0.40 dB",
        ),
        (
            [_row("none", 0.9, 5.0, "not run: x"), _row("argmax", 0.9, 0.0, "not run: x")],
            "worst case over rungs 1-2 (rungs 3 and 4 did not run)",
        ),
    ],
    ids=["one-meets", "none-meets", "no-rung-3"],
)
def test_target_statement_is_computed_from_rows(rows, expected):
    report = BenchReport(rows, 0.9, {"psnr": 13.0, "ssim": 0.3, "risk": 1.0}, {}, {})
    statement = report.target_statement()
    assert expected in statement
    assert [r.filter for r in report.meeting_target()] == [r.filter for r in rows[1:] if r.meets()]


# --- the filter-spec parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "filters"),
    [
        ("none", "none", []),
        (" RAW ", "none", []),
        ("softmax>round:2", "softmax>round:2", [Softmax(), Round(2)]),
        ("Softmax > Round : 2", "softmax>round:2", [Softmax(), Round(2)]),
        ("round:decimals=1,clip=5", "round:1,clip=5", [Round(1, clip=5.0)]),
        ("gaussian:0.5", "gaussian:0.5", [GaussianNoise(0.5)]),
        ("gaussian_noise:std=0.5", "gaussian:0.5", [GaussianNoise(0.5)]),
        ("topk:3", "top_k:3", [TopK(3)]),
        ("argmax:one_hot", "argmax:one_hot", [Argmax("one_hot")]),
        (
            "lpn:3,distribution=laplace",
            "label_preserving:3,distribution=laplace",
            [LabelPreservingNoise(3.0, "laplace")],
        ),
        (
            "softmax>gaussian:0.03,renormalize=false",
            "softmax>gaussian:0.03,renormalize=false",
            [Softmax(), GaussianNoise(0.03, False)],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_spec_parser_accepts_good_specs(text, canonical, filters):
    spec = parse_filter_spec(text)
    assert spec.text == canonical and spec.is_raw == (not filters)
    assert repr(spec.build()) == repr(filters)
    assert parse_filter_spec(spec.text) == spec  # the canonical text parses back to the same spec


def test_spec_parser_clipped_laplace_gets_a_fresh_unlimited_budget():
    spec = parse_filter_spec("clipped_laplace:c=5,eps=1")
    assert spec.text == "clipped_laplace:c=5,eps=1"
    assert parse_filter_spec("clipped_laplace:5,1") == spec == parse_filter_spec("dp:clip=5,epsilon=1")
    first, second = spec.build()[0], spec.build()[0]
    assert isinstance(first, ClippedLaplace) and (first.clip, first.epsilon) == (5.0, 1.0)
    assert first.accountant is not second.accountant and first.accountant.total_epsilon > 1e100
    budgeted = parse_filter_spec("clipped_laplace:c=5,eps=1,budget=3").build()[0]
    assert budgeted.accountant.total_epsilon == 3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the spec is empty"),
        ("bogus", "unknown filter 'bogus'; known filters: none, softmax"),
        ("round", "'round' needs decimals (e.g. 'round:2')"),
        ("round:two", "parameter 'decimals' of 'round' must be an integer, got 'two'"),
        ("round:-1", "expected decimals to be an integer in [0, 12], got -1"),
        ("gaussian:0", "expected std to be a positive finite number"),
        ("gaussian:nan", "must be a finite number"),
        ("round:2,foo=1", "'round' has no parameter 'foo'; its parameters: decimals, clip, preserve_sum"),
        ("round:1,2,true,4", "'round' takes at most 3 argument(s), got 4"),
        ("gaussian:std=1,std=2", "parameter 'std' of 'gaussian' is given twice"),
        ("top_k:k=2,3", "positional argument '3' after a key=value one"),
        ("clipped_laplace:c=5", "'clipped_laplace' needs epsilon"),
        ("softmax>>round:2", "a stage has no name"),
        ("round:2:3", "more than one ':'; separate stages with '>'"),
        ("round:2,", "empty argument"),
        ("softmax>none", "'none' means no filter and cannot be combined"),
        ("argmax:sideways", "expected output 'index' or 'one_hot'"),
    ],
    ids=lambda value: value or "empty",
)
def test_spec_parser_rejects_bad_specs_clearly(text, message):
    with pytest.raises(FilterError) as error:
        parse_filter_spec(text)
    assert message in str(error.value)
    assert str(error.value).startswith("expected a filter spec (e.g. 'softmax>round:2'")


def test_specs_split_on_semicolons_expand_default_and_drop_duplicates():
    specs = parse_filter_specs(["none;argmax", " softmax>round:2 ;; none", "default"])
    texts = [s.text for s in specs]
    assert texts[:3] == ["none", "argmax", "softmax>round:2"]
    assert len(texts) == len(set(texts)) == 3 + len(default_filter_specs()) - 3
    with pytest.raises(FilterError, match="no spec given"):
        parse_filter_specs(" ; ")


@pytest.mark.parametrize("output_kind", ["logits", "probabilities"])
def test_default_grid_covers_the_issue(output_kind):
    texts = [spec.text for spec in default_filter_specs(output_kind)]
    prefix = "softmax>" if output_kind == "logits" else ""
    assert texts[0] == "none" and "argmax" in texts
    assert all(f"{prefix}round:{d}" in texts for d in range(4))
    assert {f"{prefix}top_k:1", f"{prefix}gaussian:0.03", f"{prefix}laplace:0.03"} <= set(texts)
    assert sum(t.startswith("clipped_laplace:") for t in texts) >= 3
    assert sum(t.startswith("label_preserving:") for t in texts) == 3
    if output_kind == "logits":
        assert {"softmax", "round:0", "round:3", "gaussian:1", "laplace:1"} <= set(texts)
    else:
        assert not any("softmax" in t for t in texts)
    for spec in default_filter_specs(output_kind):  # every entry type-checks against such a model
        FilterPipeline(spec.build(), input_kind=output_kind)


# --- the mapping of releases to the decoder's input --------------------------------------------


def _calibrated(kind: str = "logits") -> tuple[DecoderInputMap, np.ndarray]:
    raw = np.random.default_rng(0).normal(0.0, 3.0, size=(400, 4)).astype(np.float32)
    if kind == "probabilities":
        raw = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    return DecoderInputMap.fit(raw, kind), raw


def _domain(filters, kind="logits"):
    return FilterPipeline(filters, input_kind=kind).domains(4)[-1]


def test_one_hot_rows():
    rows = one_hot(np.array([2, 0, 3]), 4)
    assert rows.dtype == np.float32 and rows.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(FilterError, match=r"expected labels in \[0, 3\]"):
        one_hot(np.array([4]), 4)
    with pytest.raises(FilterError, match="expected integer labels"):
        one_hot(np.array([0.5]), 4)


def test_argmax_index_becomes_one_hot_for_a_probability_decoder():
    mapping, _ = _calibrated("probabilities")
    domain = _domain([Argmax()], "probabilities")
    fed = mapping(np.array([1, 3]), domain)
    assert fed.tolist() == one_hot(np.array([1, 3]), 4).tolist()
    assert mapping.rule(domain) == "argmax index -> one-hot"
    # a one-hot release is fed as it is
    one_hot_domain = _domain([Argmax("one_hot")], "probabilities")
    assert mapping(one_hot(np.array([2]), 4), one_hot_domain).tolist() == [[0, 0, 1, 0]]


def test_argmax_index_becomes_the_class_table_row_for_a_logits_decoder():
    mapping, raw = _calibrated("logits")
    fed = mapping(np.array([0, 2]), _domain([Argmax()]))
    predicted = raw.argmax(axis=1)
    expected = np.stack([raw[predicted == k].mean(axis=0) for k in (0, 2)])
    np.testing.assert_allclose(fed, expected, rtol=1e-5)
    assert fed.argmax(axis=1).tolist() == [0, 2]  # a class's typical logits point at that class
    assert "class table" in mapping.rule(_domain([Argmax()]))


def test_probabilities_are_mapped_back_to_logits():
    mapping, raw = _calibrated("logits")
    probabilities = Softmax()(raw[:5])
    fed = mapping(probabilities, _domain([Softmax()]))
    # softmax is inverted up to each row's shift; rows are re-centred on the mean raw row-mean
    expected = raw[:5] - raw[:5].mean(axis=1, keepdims=True) + raw.mean(axis=1).mean()
    np.testing.assert_allclose(fed, expected, atol=1e-4)
    # a probability rounded to 0 at d decimals is taken as half a rounding step
    rounded = _domain([Softmax(), Round(2)])
    fed = mapping(np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32), rounded)
    assert np.isclose(fed[0, 1] - fed[0, 0], -np.log(0.005), rtol=1e-5)


def test_logits_pass_through_and_logits_feed_a_probability_decoder_as_softmax():
    mapping, raw = _calibrated("logits")
    noisy_domain = _domain([GaussianNoise(0.1)])
    assert noisy_domain.kind == "logits"
    np.testing.assert_array_equal(mapping(raw[:3], noisy_domain), raw[:3])
    probability_map = DecoderInputMap(decoder_kind="probabilities", num_classes=4)
    fed = probability_map(raw[:3], OutputDomain.of_model("logits"))
    np.testing.assert_allclose(fed, Softmax()(raw[:3].astype(np.float64)), rtol=1e-5)


# --- BenchSettings: one frozen dataclass, the CLI carries its names -------------------------------------


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"eval_size": 1}, "expected eval_size to be an integer >= 2, got 1"),
        ({"threads": 0}, "expected threads to be an integer >= 1, got 0"),
        ({"attacker": "gradient"}, "expected attacker to be one of auto, finetune, knn, got 'gradient'"),
        ({"attack_learning_rate": -1.0}, "expected attack_learning_rate to be a positive number"),
        ({"repeat_counts": (1, 0)}, "expected each of repeat_counts to be an integer >= 1, got 0"),
        ({"through": {"epochs": 1}}, "expected through to be a ThroughSettings"),
    ],
    ids=["eval-size", "threads", "attacker", "learning-rate", "repeat-counts", "through"],
)
def test_bench_settings_refuse_bad_values_with_a_config_error(knobs, message):
    from edgeguard.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as error:
        BenchSettings(**knobs)
    assert isinstance(error.value, ValueError)


def test_cli_options_carry_the_settings_names():
    import dataclasses

    from edgeguard.bench import ATTACKERS, CodeSettings, ThroughSettings
    from edgeguard.bench.cli import bench_command

    fields = {f.name for f in dataclasses.fields(BenchSettings)} - {"through", "codes"}
    through = {f"through_{f.name}" for f in dataclasses.fields(ThroughSettings)} | {"through"}
    through |= {f"codes_{f.name}" for f in dataclasses.fields(CodeSettings)} | {"codes"}
    options = {p.name: p for p in bench_command.params if isinstance(p, click.Option)}
    plain = set(options) - {"decoder", "data", "label_column", "filters", "out_dir", "name", "quiet"}
    assert "label_column" in inspect.signature(run_bench).parameters  # how the data is read: run_bench's own name
    assert plain <= fields | through, plain - fields - through
    assert fields <= plain  # every setting can be given on the command line
    for name in plain & fields:
        flag = options[name].opts[0]
        assert flag == "--" + name.replace("_", "-"), (name, flag)
    assert tuple(options["attacker"].type.choices) == ATTACKERS
    defaults = BenchSettings()
    for name in plain & fields - {"repeat_counts"}:
        assert options[name].default == getattr(defaults, name), name


# --- rung 3's data and budget ----------------------------------------------------------------------------


def test_rung_three_trains_on_the_training_split_and_says_how_much(tiny_threats, fmnist_test_small, monkeypatch):
    import edgeguard.bench.ladder as ladder
    from edgeguard.bench import ThroughSettings
    from edgeguard.data import fashion_mnist_dir

    folder = str(fashion_mnist_dir())
    assert ladder.training_split(folder) == folder and ladder.training_images(folder) == 60_000
    monkeypatch.setattr(ladder, "entry_points", lambda group: [])  # no trainer: only the budget is computed
    report = _api_run(
        tiny_threats, fmnist_test_small, filters="none", through=ThroughSettings(epochs=1, train_limit=10_000)
    )
    # a Dataset has no training split: the attacker split (150 images), and the limit above it is reported
    budget = report.settings["through"]["budget"]
    assert budget.startswith("1 epoch(s) on 150 images of the bench's attacker split"), budget
    assert any("--through-train-limit 10000 exceeds the 150 training images" in note for note in report.notes)
