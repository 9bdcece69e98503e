"""`edgeguard guard --verdict`: the report is checked as SafeModel checks it, never taken on its word."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from _vet_models import linear_classifier, save, write_probe
from click.testing import CliRunner

from edgeguard.cli import main
from edgeguard.errors import ConfigError, GuardError
from edgeguard.guard import guard_model, inspect_guarded
from edgeguard.vetting import vet

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3,
        "leakage_decoders": ("knn",)}
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def vetted(tmp_path_factory) -> dict[str, Path]:
    """A model, its real vet report (installed thresholds, signed) and the reviewer's key."""
    folder = tmp_path_factory.mktemp("guard_verdict")
    model = save(linear_classifier(), folder / "m.onnx")
    key = folder / "reviewer.key"
    key.write_text(KEY)
    report = vet(model, write_probe(folder / "probe.npz", 600), sign_key=key, **FAST)
    return {"model": model, "report": report.save(folder / "report.json"), "key": key}


def _guard_cli(vetted, report: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        main, ["guard", str(vetted["model"]), "--filters", "argmax", "--out", str(out), "--verdict", str(report), *extra]
    )


def _forgeries(vetted, folder: Path) -> dict[str, Path]:
    real = json.loads(vetted["report"].read_text())
    hand = folder / "hand.json"
    hand.write_text(json.dumps({"model_sha256": real["model_sha256"], "verdict": "honest"}))
    edited = folder / "edited.json"
    edited.write_text(json.dumps({**real, "verdict": "honest" if real["verdict"] != "honest" else "vicious"}))
    return {hand: "full vet report", edited: "the report was edited"}


def test_a_real_vet_report_is_recorded_with_its_re_decided_verdict(vetted, tmp_path):
    real = json.loads(vetted["report"].read_text())
    out = tmp_path / "g.onnx"
    result = guard_model(vetted["model"], "argmax", out, verdict=vetted["report"])
    assert result.metadata.vet_verdict == real["verdict"]
    assert result.metadata.vet_report_sha256 == hashlib.sha256(vetted["report"].read_bytes()).hexdigest()
    cli = _guard_cli(vetted, vetted["report"], tmp_path / "c.onnx", "--verdict-key", str(vetted["key"]))
    assert cli.exit_code == 0, cli.output
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "c.onnx")).metadata_props}
    assert props["edgeguard.guard.vet_verdict"] == real["verdict"]
    report = inspect_guarded(out, source=vetted["model"], verdict=vetted["report"])
    assert report.ok, [c for c in report.checks if not c.passed]


def test_hand_written_and_edited_reports_are_refused_by_the_api_and_the_cli(vetted, tmp_path):
    for forged, message in _forgeries(vetted, tmp_path).items():
        out = tmp_path / f"{forged.stem}.onnx"
        with pytest.raises(GuardError, match=message):
            guard_model(vetted["model"], "argmax", out, verdict=forged)
        result = _guard_cli(vetted, forged, out)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "edgeguard vet" in result.output
        assert not out.exists()


def test_inspect_refuses_a_forged_report_even_when_the_file_records_its_hash(vetted, tmp_path):
    out = tmp_path / "g.onnx"
    guard_model(vetted["model"], "argmax", out, verdict=vetted["report"])
    assert inspect_guarded(out, verdict=vetted["report"]).ok  # the control
    for forged in _forgeries(vetted, tmp_path):
        proto = onnx.load(str(out))  # a file guarded by hand-editing the provenance, as an old guard allowed
        for entry in proto.metadata_props:
            if entry.key == "edgeguard.guard.vet_report_sha256":
                entry.value = hashlib.sha256(forged.read_bytes()).hexdigest()
            elif entry.key == "edgeguard.guard.vet_verdict":
                entry.value = json.loads(forged.read_text())["verdict"]
        edited = tmp_path / f"{forged.stem}.onnx"
        onnx.save(proto, str(edited))
        checks = {c.name: c for c in inspect_guarded(edited, verdict=forged).checks}
        assert checks["vet_report"].passed is False, checks["vet_report"].detail


def test_the_verdict_key_requires_a_report_signed_with_it(vetted, tmp_path):
    data = json.loads(vetted["report"].read_text())
    data["tests"]["consistency"]["score"] = 0.0 if data["tests"]["consistency"]["score"] else 1e-9  # verdict kept
    resigned = tmp_path / "touched.json"
    resigned.write_text(json.dumps(data))
    other = tmp_path / "other.key"
    other.write_text("fedcba9876543210fedcba9876543210")
    guard_model(vetted["model"], "argmax", tmp_path / "ok.onnx", verdict=resigned)  # no key: the scores decide
    for key, message in ((vetted["key"], "edited after signing"), (other, "another key")):
        with pytest.raises(GuardError, match=message):
            guard_model(vetted["model"], "argmax", tmp_path / "g.onnx", verdict=resigned, verdict_key=key)
        result = _guard_cli(vetted, resigned, tmp_path / "g.onnx", "--verdict-key", str(key))
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    with pytest.raises(ConfigError, match="signing key file"):
        guard_model(vetted["model"], "argmax", tmp_path / "g.onnx", verdict=resigned, verdict_key=tmp_path / "none")
    with pytest.raises(GuardError, match="verdict_key"):
        guard_model(vetted["model"], "argmax", tmp_path / "g.onnx", verdict_key=vetted["key"])
    assert not (tmp_path / "g.onnx").exists()
