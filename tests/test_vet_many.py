"""``edgeguard vet`` over many models (files, folders, globs): reports, summary, worst exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _vet_models import linear_classifier, rounding_classifier, save, write_probe
from click.testing import CliRunner
from test_cli_vet import SMALL

import edgeguard.verdicts
from edgeguard.cli import main
from edgeguard.errors import DataNotFoundError
from edgeguard.vetting.many import EXIT_PRIORITY, expand_model_paths, worst_exit_code


def thresholds(folder: Path, leakage: float) -> str:
    """The packaged thresholds with every leakage statistic flagging above ``leakage`` dB."""
    data = json.loads((Path(edgeguard.verdicts.__file__).with_name("thresholds.json")).read_text())
    for name in ("leakage", "leakage_gain_max", "leakage_excess_twin", "leakage_excess"):
        data["tests"][name]["threshold"] = leakage
    data["combined"]["min_probe_samples"] = 500  # as if recalibrated for the 600-image test probes
    path = folder / f"thresholds-{leakage}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """zoo/a/model.onnx (passes), zoo/b/model.onnx (Round: a high finding blinds the tests), zoo/bad.onnx (garbage)."""
    root = tmp_path_factory.mktemp("many")
    (root / "zoo" / "a").mkdir(parents=True)
    (root / "zoo" / "b").mkdir()
    save(linear_classifier(), root / "zoo" / "a" / "model.onnx")
    save(rounding_classifier(), root / "zoo" / "b" / "model.onnx")
    (root / "zoo" / "bad.onnx").write_bytes(b"not an onnx file")
    write_probe(root / "probe.npz", 600)
    return root


def vet(zoo: Path, *args: str):
    base = ["vet", "-p", str(zoo / "probe.npz"), *SMALL]
    return CliRunner().invoke(main, [*base, *args])


def test_worst_exit_code_order():
    assert EXIT_PRIORITY == (2, 1, 3, 0)
    assert worst_exit_code([0, 3, 1]) == 1 and worst_exit_code([3, 2, 1]) == 2 and worst_exit_code([0, 3]) == 3
    assert worst_exit_code([]) == 0 and worst_exit_code([0, 7]) == 2  # an unknown code counts as an error


def test_paths_folders_and_globs_expand(zoo):
    got = expand_model_paths([zoo / "zoo", str(zoo / "zoo" / "*" / "*.onnx"), zoo / "zoo" / "bad.onnx"])
    assert [p.relative_to(zoo).as_posix() for p in got] == ["zoo/a/model.onnx", "zoo/b/model.onnx", "zoo/bad.onnx"]
    with pytest.raises(DataNotFoundError, match="glob matches no file"):
        expand_model_paths([str(zoo / "nothing-*.onnx")])
    with pytest.raises(DataNotFoundError, match="does not exist"):
        expand_model_paths([zoo / "missing.onnx"])


@pytest.mark.parametrize(
    ("models", "leakage", "code", "counts"),
    [
        (["zoo"], 100.0, 2, {"honest": 1, "inconclusive": 1, "refused": 1}),
        (["zoo/*/model.onnx"], 100.0, 3, {"honest": 1, "inconclusive": 1}),
        (["zoo/a/model.onnx", "zoo/b/model.onnx"], -100.0, 1, {"vicious": 2}),
        (["zoo/b/model.onnx", "zoo/bad.onnx"], -100.0, 2, {"vicious": 1, "refused": 1}),
        (["zoo/a"], 100.0, 0, {"honest": 1}),
    ],
    ids=["error-beats-all", "inconclusive-beats-honest", "flagged", "error-beats-flagged", "folder-of-one"],
)
def test_summary_json_and_worst_exit_code(zoo, tmp_path, monkeypatch, models, leakage, code, counts):
    monkeypatch.chdir(zoo)
    out = tmp_path / "reports"
    result = vet(
        zoo, *models, "--format", "json", "--output-dir", str(out), "--thresholds", thresholds(tmp_path, leakage)
    )
    assert result.exit_code == code, result.output
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == code and summary["counts"] == counts
    assert summary["models"] == sum(counts.values()) == len(summary["rows"])
    for row in summary["rows"]:
        if row["outcome"] == "error":  # the vet raised: no report, the message is in the row
            assert row["error"] and row["report_file"] is None and row["exit_code"] == 2
            continue
        report = json.loads(Path(row["report_file"]).read_text())  # one report per model
        assert report["model_path"] == row["model_path"] and report["exit_code"] == row["exit_code"]
    names = sorted(p.name for p in out.iterdir())
    if models == ["zoo"]:
        assert names == ["a__model.json", "b__model.json", "bad.json"]  # named after the path below zoo/


def test_text_summary_progress_bar_and_pool(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo)
    result = vet(zoo, "zoo", "--jobs", "2", "--thresholds", thresholds(tmp_path, 100.0))
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "outcome", "exit"]
    assert any(line.startswith("zoo/bad.onnx") and " refused " in line for line in lines)
    assert "3 model(s): 1 honest, 1 inconclusive, 1 refused; exit code 2" in result.stdout
    assert "vet: 100%" in result.stderr and "3/3" in result.stderr  # tqdm's bar, on stderr only
    quiet = vet(zoo, "zoo/a", "zoo/b", "-q", "--thresholds", thresholds(tmp_path, 100.0))
    assert quiet.exit_code == 3 and "vet:" not in quiet.stderr and "[vet]" not in quiet.stderr  # no bar, no lines


def test_cache_dir_reuses_finished_vets(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo)
    args = [
        "zoo/a",
        "--format",
        "json",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--thresholds",
        thresholds(tmp_path, 100.0),
    ]
    first, second = vet(zoo, *args), vet(zoo, *args)
    assert first.exit_code == second.exit_code == 0
    assert [r["cached"] for r in json.loads(first.stdout)["rows"]] == [False]
    assert [r["cached"] for r in json.loads(second.stdout)["rows"]] == [True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zoo/nothing-*.onnx"], "glob matches no file"),
        (["zoo/a", "zoo/b", "--ray", "auto"], "pip install 'edgeguard[ray]'"),
    ],
    ids=["empty-glob", "ray-missing"],
)
def test_errors_exit_2_with_a_message(zoo, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(zoo)
    if "--ray" in args:
        monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    result = vet(zoo, *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""
