"""``edgeguard vet`` through click's CliRunner: exit codes 0/1/2/3/4, JSON numbers, stdout vs stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _vet_models import linear_classifier, save, write_probe
from click.testing import CliRunner

from edgeguard import __version__, model_sha256
from edgeguard.cli import main
from edgeguard.vetting import VetReport

SMALL = [
    "--leakage-decoders", "knn",
    "--augment-seed", "5",
    "--finetune-train-samples", "64",
    "--finetune-eval-samples", "200",
    "--finetune-batch-size", "32",
]  # fmt: skip


def thresholds(tmp_path, leakage: float, finetune: float = -1.0, name: str = "t.json"):
    """A thresholds file: the leakage audit flags above ``leakage`` dB; the fine-tune test below ``finetune``."""
    data = {
        "source": "test",
        "tests": {
            "leakage": {"threshold": leakage, "scale": 0.1, "higher_is_vicious": True},
            "finetune": {"threshold": finetune, "scale": 0.01, "higher_is_vicious": False},
        },
        "combined": {"weights": {"leakage": 1.0, "finetune": 1.0}, "bias": 0.0, "required": ["leakage"]},
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def model(tmp_path):
    return str(save(linear_classifier(), tmp_path / "model.onnx"))


@pytest.fixture
def probe(tmp_path):
    return str(write_probe(tmp_path / "probe.npz", 600))


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_version_and_help():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = run("vet", "--help")
    assert result.exit_code == 0
    for line in ("0  passed", "1  flagged", "2  error", "3  inconclusive", "4  usage"):
        assert line in result.output


@pytest.mark.parametrize(
    ("leakage_threshold", "code", "verdict"), [(100.0, 0, "honest"), (-100.0, 1, "vicious")], ids=["pass", "flag"]
)
def test_exit_codes_0_and_1_with_json_numbers(tmp_path, model, probe, leakage_threshold, code, verdict):
    path = thresholds(tmp_path, leakage_threshold)
    result = run(
        "vet", model, "-p", probe, "--format", "json", "--thresholds", path, "-q", *SMALL,
        "--tests", "consistency", "--tests", "precision", "--tests", "continuity", "--tests", "leakage",
        "--tests", "finetune",
    )
    assert result.exit_code == code, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == verdict and data["exit_code"] == code
    assert data["model_sha256"] == model_sha256(model)
    leakage = data["tests"]["leakage"]
    assert leakage["status"] == "ran" and leakage["threshold"] == leakage_threshold
    assert leakage["flagged"] is (code == 1)
    details = leakage["details"]
    assert details["excess_gain_db"] == pytest.approx(leakage["score"])  # the excess over the trained twin
    assert details["excess_ci95_db"][0] <= leakage["score"] <= details["excess_ci95_db"][1]
    assert data["settings"]["leakage"]["decoders"] == ["knn"] and details["augment_seed"] == 5 and details["samples"] == 600
    assert data["tests"]["consistency"]["details"]["consistent"] is True
    assert data["checked"]["batch_sizes"][0] == 1 and len(data["thresholds_sha256"]) == 64
    finetune = data["tests"]["finetune"]
    assert finetune["status"] == "ran" and -1.0 <= finetune["score"] <= 1.0
    assert finetune["details"]["train_samples"] == 64
    assert data["capacity_bits"] == "unbounded"
    assert data["probe"]["samples"] == 600 and data["probe"]["accuracy"] > 0.9
    assert (data["likelihood"] > 0.5) is (code == 1)


def test_release_and_reference_options(tmp_path, model, probe):
    result = run(
        "vet", model, "-p", probe, "--format", "json", "-q", "--thresholds", thresholds(tmp_path, 100.0),
        "--release", "argmax", "--reference-model", model, *SMALL,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["release"]["spec"] == "argmax" and data["release"]["gain_db"] == 0.0
    assert data["tests"]["leakage"]["details"]["excess_gain_db"] == 0.0
    bad = run("vet", model, "-p", probe, "--release", "round:-1", "-q")
    assert bad.exit_code in (2, 4) and "round" in bad.output


def test_text_report_on_stdout_progress_on_stderr(tmp_path, model, probe):
    result = run("vet", model, "-p", probe, "--thresholds", thresholds(tmp_path, 100.0), *SMALL)
    assert result.exit_code == 0, result.output
    assert "--- Summary" in result.stdout and "HONEST" in result.stdout
    assert "Scores vs thresholds" in result.stdout and "[vet]" not in result.stdout
    assert "[vet] static audit" in result.stderr


def test_output_file_round_trips(tmp_path, model, probe):
    out = tmp_path / "report.json"
    result = run("vet", model, "-p", probe, "--format", "json", "-o", str(out), "-q", *SMALL)
    assert result.stdout == ""
    report = VetReport.load(out)
    assert report.model_sha256 == model_sha256(model)
    assert VetReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    assert result.exit_code == report.exit_code


@pytest.mark.parametrize("case", ["garbage-model", "missing-model", "missing-probe", "wrong-classes"], ids=lambda c: c)
def test_exit_code_2_for_errors(tmp_path, model, probe, case):
    args = [model, "-p", probe]
    if case == "garbage-model":
        bad = tmp_path / "garbage.onnx"
        bad.write_bytes(b"not an onnx file at all")
        args[0] = str(bad)
    elif case == "missing-model":
        args[0] = str(tmp_path / "missing.onnx")
    elif case == "missing-probe":
        args[2] = str(tmp_path / "missing.npz")
    else:
        args += ["--class-names", "a,b,c"]  # the probe names its classes differently
    result = run("vet", *args, "--format", "json", "-q", *SMALL)
    assert result.exit_code == 2, result.output
    if case == "garbage-model":
        data = json.loads(result.stdout)
        assert data["findings"][0]["code"] == "onnx-invalid" and data["findings"][0]["severity"] == "critical"
    else:
        assert result.stdout == "" and "error:" in result.stderr


@pytest.mark.parametrize("case", ["too-small", "missing-class"], ids=lambda c: c)
def test_exit_code_3_inconclusive(tmp_path, model, case):
    if case == "too-small":
        probe = write_probe(tmp_path / "p.npz", 120)  # the leakage audit needs at least 200 images
        extra: list[str] = []
    else:
        probe = write_probe(tmp_path / "p.npz", 600, classes=2)
        extra = SMALL
    result = run("vet", model, "-p", str(probe), "--format", "json", "-q", *extra)
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "inconclusive"
    text = " ".join(data["reasons"])
    if case == "too-small":
        assert data["tests"]["leakage"]["status"] == "skipped" and "probe set too small" in text
    else:
        assert "stripe-bottom" in text and data["probe"]["class_counts"][2] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["vet"],
        ["vet", "m.onnx"],
        ["vet", "m.onnx", "-p", "x", "--format", "xml"],
        ["vet", "m.onnx", "-p", "x", "--finetune-optimiser", "rmsprop"],
        ["vet", "m.onnx", "-p", "x", "--finetune-steps", "0"],
        ["vet", "m.onnx", "-p", "x", "--no-such-flag"],
        ["vet", "m.onnx", "-p", "x", "--input-shape", "1,28,28,3"],
        ["vet", "m.onnx", "-p", "x", "--pixel-range", "0"],
        ["no-such-command"],
    ],
    ids=["no-model", "no-probe", "format", "optimiser", "steps", "flag", "shape", "pixel-range", "command"],
)
def test_exit_code_4_for_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 4, result.output


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"threshold": "2.8x"}, "expected a finite number for tests.leakage.threshold"),
        ({"scale": 0}, "expected a positive number for tests.leakage.scale"),
        ({"higher_is_vicious": "yes"}, "expected true or false for tests.leakage.higher_is_vicious"),
    ],
    ids=["threshold-typo", "zero-scale", "bool-as-string"],
)
def test_a_typo_in_a_thresholds_file_is_a_config_error(tmp_path, model, probe, entry, message):
    path = Path(thresholds(tmp_path, 1.0))
    data = json.loads(path.read_text())
    data["tests"]["leakage"].update(entry)
    path.write_text(json.dumps(data))
    result = run("vet", model, "-p", probe, "--thresholds", str(path), "-q", *SMALL)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "unexpected" not in result.stderr
