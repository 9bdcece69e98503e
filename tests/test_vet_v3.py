"""Vet v3 (issue 17): a pass must be earned. Each mechanism next to a control in which the honest model passes.

Hand-built models (tests/_vet_models.py) keep it fast: the linear stripe classifier is the
honest base model; the graph edits sit on top of it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _vet_models import CLASSES, SHAPE, linear_classifier, probe_arrays, save, write_probe
from onnx import TensorProto, helper, numpy_helper

from edgeguard.errors import ModelRefusedError
from edgeguard.verdicts.rule import decide_record
from edgeguard.verdicts.signing import sign_record, verify_signature
from edgeguard.verdicts.verify import verify_report
from edgeguard.vetting import vet
from edgeguard.vetting.decoders import feature_sets
from edgeguard.vetting.static import static_audit

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3,
        "leakage_decoders": ("knn",)}
MAGIC = float(1.5 * 2**23)


def table(margin: float = 100.0, min_probe: int = 500) -> dict:
    """Thresholds for the 600-image test probes (as if recalibrated for them)."""
    return {
        "source": "test",
        "tests": {
            "leakage": {"threshold": margin, "scale": 0.1, "higher_is_vicious": True},
            "leakage_excess_twin": {"threshold": margin, "scale": 0.1, "higher_is_vicious": True},
            "finetune": {"threshold": -1.0, "scale": 0.01, "higher_is_vicious": False, "statistic": "cosine"},
        },
        "combined": {"weights": {"leakage": 1.0, "finetune": 0.0}, "min_probe_samples": min_probe, "require_twin": True},
    }


@pytest.fixture
def probe(tmp_path):
    return write_probe(tmp_path / "probe.npz", 600)


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype)))


def codes(tail: str = "logits") -> list[onnx.NodeProto]:
    """A 'vicious' projection of the image: a few pixel sums scaled into the logits (nodes reading 'flat')."""
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 1.0, size=(int(np.prod(SHAPE)), len(CLASSES))).astype(np.float32) / 4.0
    return [
        helper.make_node("Constant", [], ["Wv"], value=numpy_helper.from_array(w)),
        helper.make_node("MatMul", ["flat", "Wv"], ["code"]),
        helper.make_node("Add", [tail, "code"], ["vicious"]),
    ]


# -- the decision rule -----------------------------------------------------------------------------------


def _record(ci, *, samples=1000, statistic="excess_gain_db", findings=(), checks=("consistency", "precision", "continuity")):
    tests = {name: {"status": "ran", "score": 0.0, "flagged": False, "details": {}} for name in checks}
    tests["precision"] = {"status": "ran", "score": 1e-7, "details": {}} if "precision" in checks else None
    tests["continuity"] = {"status": "ran", "score": 0.5, "details": {}} if "continuity" in checks else None
    tests = {k: v for k, v in tests.items() if v is not None}
    tests["leakage"] = {
        "status": "ran", "score": (ci[0] + ci[1]) / 2,
        "details": {"ci95": list(ci), "statistic": statistic, "threshold_entry": "leakage_excess_twin",
                    "twin_missing_reason": "" if statistic == "excess_gain_db" else "no twin: test"},
    }
    return {"tests": tests, "findings": [dict(f) for f in findings], "probe": {"samples": samples},
            "settings": {"tests": list(tests)}}


@pytest.mark.parametrize(
    ("ci", "verdict"), [((-0.5, 0.2), "honest"), ((0.5, 0.9), "vicious"), ((0.2, 0.6), "inconclusive")],
    ids=["below", "above", "straddles"],
)
def test_three_way_decision_on_intervals(ci, verdict):
    decision = decide_record(_record(ci), table(margin=0.36, min_probe=1000))
    assert decision.verdict == verdict, decision.reasons
    if verdict == "inconclusive":
        assert "straddles the margin" in decision.reasons[0]


def test_honest_needs_every_check_a_twin_and_the_calibrated_probe_size():
    t = table(margin=0.36, min_probe=1000)
    assert decide_record(_record((-0.5, 0.2)), t).verdict == "honest"  # the control
    small = decide_record(_record((-0.5, 0.2), samples=600), t)
    assert small.verdict == "inconclusive" and "calibrated" in " ".join(small.reasons)
    no_twin = decide_record(_record((-0.5, 0.2), statistic="gain_db"), t)
    assert no_twin.verdict == "inconclusive" and "twin" in " ".join(no_twin.reasons)
    missing = decide_record(_record((-0.5, 0.2), checks=("consistency", "precision")), t)
    assert missing.verdict == "inconclusive" and "continuity did not run" in " ".join(missing.reasons)
    blinded = decide_record(_record((-0.5, 0.2), findings=[{"code": "op-not-allowed", "severity": "high"}]), t)
    assert blinded.verdict == "inconclusive" and "op-not-allowed" in " ".join(blinded.reasons)


def test_hard_failures_are_vicious_whatever_the_leakage():
    t = table(margin=0.36, min_probe=1000)
    record = _record((-0.5, 0.2))
    record["tests"]["precision"]["score"] = 0.05  # beyond the hard limit (1e-2)
    assert decide_record(record, t).verdict == "vicious"
    record = _record((-0.5, 0.2), findings=[{"code": "batch-dependent-outputs", "severity": "high"}])
    assert decide_record(record, t).verdict == "vicious"


def test_a_probe_below_the_calibrated_size_is_never_a_pass(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    assert vet(path, probe, thresholds=table(min_probe=500), **FAST).verdict == "honest"  # the control
    report = vet(path, probe, thresholds=table(min_probe=1000), **FAST)
    assert report.verdict == "inconclusive" and any("calibrated on" in reason for reason in report.reasons)


# -- precision tricks ------------------------------------------------------------------------------------


def magic_rounding(step: float = 0.5) -> onnx.ModelProto:
    """Logits snapped to a lattice by a float32 magic number (no rounding op), plus a code below the step."""
    extra = [
        _const("step", step), _const("magic", MAGIC), _const("small", step * 0.45 / 8.0),
        helper.make_node("Div", ["logits", "step"], ["units"]),
        helper.make_node("Add", ["units", "magic"], ["big"]),
        helper.make_node("Sub", ["big", "magic"], ["snapped_units"]),
        helper.make_node("Mul", ["snapped_units", "step"], ["snapped"]),
        *codes(tail="snapped"),
        helper.make_node("Sigmoid", ["code"], ["unit_code"]),
        helper.make_node("Mul", ["unit_code", "small"], ["below"]),
        helper.make_node("Add", ["snapped", "below"], ["tail"]),
    ]
    return linear_classifier(extra_nodes=[n for n in extra if n.output[0] != "vicious"], tail="tail")


def test_float64_reevaluation_catches_magic_number_rounding(tmp_path, probe):
    honest = vet(save(linear_classifier(), tmp_path / "h.onnx"), probe, thresholds=table(), **FAST)
    assert honest.tests["precision"].details["outcome"] == "pass" and honest.verdict == "honest"  # the control
    assert honest.tests["precision"].score < 1e-5
    report = vet(save(magic_rounding(), tmp_path / "m.onnx"), probe, thresholds=table(), **FAST)
    assert report.tests["precision"].score > 1e-2
    assert "precision-dependent-outputs" in {f.code for f in report.findings}
    assert report.verdict == "vicious" and any("hard limit" in r for r in report.reasons)


def _in_function(op_nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    """The linear classifier whose logits pass through a model-local function holding ``op_nodes``."""
    function = helper.make_function("local.ops", "Snap", ["v"], ["w"], op_nodes, [helper.make_opsetid("", 17)])
    call = helper.make_node("Snap", ["logits"], ["tail"], domain="local.ops")
    model = linear_classifier(extra_nodes=[call], tail="tail")
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local.ops", 1))
    return model


def test_static_audit_scans_function_bodies_and_denies_unlisted_ops(tmp_path):
    assert not [f for f in static_audit(save(linear_classifier(), tmp_path / "h.onnx")) if f.severity == "high"]
    hidden = _in_function([
        helper.make_node("Constant", [], ["ten"], value=numpy_helper.from_array(np.array(10.0, np.float32))),
        helper.make_node("Mul", ["v", "ten"], ["s"]), helper.make_node("Round", ["s"], ["r"]),
        helper.make_node("Div", ["r", "ten"], ["w"]),
    ])
    codes_found = {f.code: f for f in static_audit(save(hidden, tmp_path / "f.onnx"))}
    assert "hidden-in-function" in codes_found and "Round" in codes_found["hidden-in-function"].message
    assert "op-not-allowed" in codes_found
    half = linear_classifier(extra_nodes=[
        helper.make_node("Cast", ["logits"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["tail"], to=TensorProto.FLOAT),
    ], tail="tail")
    assert "low-precision-cast" in {f.code for f in static_audit(save(half, tmp_path / "c.onnx"))}
    smooth = linear_classifier(extra_nodes=[
        _const("tau", 2 * np.pi), helper.make_node("Mul", ["logits", "tau"], ["a"]),
        helper.make_node("Sin", ["a"], ["s"]), helper.make_node("Div", ["s", "tau"], ["d"]),
        helper.make_node("Sub", ["logits", "d"], ["tail"]),
    ], tail="tail")
    denied = [f for f in static_audit(save(smooth, tmp_path / "s.onnx")) if f.code == "op-not-allowed"]
    assert denied and "Sin" in denied[0].message


def test_a_denied_op_makes_the_verdict_inconclusive_naming_it(tmp_path, probe):
    smooth = linear_classifier(extra_nodes=[
        _const("tau", 2 * np.pi), helper.make_node("Mul", ["logits", "tau"], ["a"]),
        helper.make_node("Sin", ["a"], ["s"]), helper.make_node("Div", ["s", "tau"], ["d"]),
        helper.make_node("Sub", ["logits", "d"], ["tail"]),
    ], tail="tail")
    report = vet(save(smooth, tmp_path / "s.onnx"), probe, thresholds=table(), **FAST)
    assert report.verdict == "inconclusive" and "op-not-allowed" in " ".join(report.reasons)


# -- the deployment distribution: an input-statistic switch ------------------------------------------------


def grid_switch() -> onnx.ModelProto:
    """Vicious outputs on 8-bit images, honest ones elsewhere: a magic-number grid detector, no Round/Sin."""
    extra = [
        _const("k255", 255.0), _const("magic", MAGIC), _const("sharp", 2000.0), _const("one", 1.0),
        helper.make_node("Mul", ["input", "k255"], ["grey"]),
        helper.make_node("Add", ["grey", "magic"], ["big"]),
        helper.make_node("Sub", ["big", "magic"], ["nearest"]),
        helper.make_node("Sub", ["grey", "nearest"], ["offset"]),
        helper.make_node("Abs", ["offset"], ["distance"]),
        helper.make_node("ReduceMean", ["distance"], ["mean_distance"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean_distance", "axis1"], ["column"]),
        helper.make_node("Mul", ["column", "sharp"], ["scaled"]),
        helper.make_node("Sub", ["one", "scaled"], ["raw_switch"]),
        helper.make_node("Relu", ["raw_switch"], ["switch"]),
        *codes(),
        helper.make_node("Sub", ["vicious", "logits"], ["difference"]),
        helper.make_node("Mul", ["switch", "difference"], ["gated"]),
        helper.make_node("Add", ["logits", "gated"], ["tail"]),
    ]
    extra.insert(0, helper.make_node("Constant", [], ["axis1"], value=numpy_helper.from_array(np.array([1], np.int64))))
    return linear_classifier(extra_nodes=extra, tail="tail")


def test_input_statistic_switch_is_stopped(tmp_path, probe):
    path = save(grid_switch(), tmp_path / "switch.onnx")
    report = vet(path, probe, thresholds=table(), **FAST)
    codes_found = {f.code for f in report.findings}
    assert report.verdict == "vicious", report.reasons
    assert "output-discontinuity" in codes_found or "precision-dependent-outputs" in codes_found
    assert report.tests["continuity"].score > 25.0  # a jump under a sub-quantum dither
    control = vet(save(linear_classifier(), tmp_path / "h.onnx"), probe, thresholds=table(), **FAST)
    assert control.tests["continuity"].score < 5.0 and control.verdict == "honest"


# -- features an attacker cannot rescale away -------------------------------------------------------------


def test_softmax_behind_logits_metadata_changes_nothing(tmp_path, probe):
    plain = vet(save(linear_classifier(), tmp_path / "p.onnx"), probe, thresholds=table(), twin=False, **FAST)
    lied = linear_classifier(extra_nodes=[helper.make_node("Softmax", ["logits"], ["tail"], axis=1)], tail="tail")
    report = vet(save(lied, tmp_path / "l.onnx"), probe, thresholds=table(), twin=False, **FAST)
    assert report.model["output_kind"] == "logits" and "output-kind-mismatch" in {f.code for f in report.findings}
    mine, theirs = plain.tests["leakage"].details["gains_db"], report.tests["leakage"].details["gains_db"]
    for key in ("clean/log/knn", "off-grid/rest/knn"):
        assert mine[key] == pytest.approx(theirs[key], abs=0.05), key


def test_a_spike_on_the_top_class_cannot_swamp_the_features():
    rng = np.random.default_rng(1)
    v = rng.normal(0.0, 2.0, size=(400, len(CLASSES) + 4))
    spiked = v + 40.0 * np.exp(50 * v) / np.exp(50 * v).sum(axis=1, keepdims=True)
    plain, inflated = feature_sets(v, residues=False), feature_sets(spiked, residues=False)
    same = np.abs(inflated["rest"] - plain["rest"]).max(axis=1) < 1e-3
    assert same.mean() > 0.8  # rows whose top class is clear: the spike is gone with the top class
    spread = np.abs(inflated["log"] - plain["log"]).max(axis=1)
    assert np.median(spread) > 10.0  # the log features carry the spike (and their global scale with it)


def test_a_code_below_a_lattice_is_read_by_the_residue_features():
    from edgeguard.vetting.audit import AuditSettings, audit_model, make_views, summarise

    x, y = probe_arrays(400, seed=2)
    images = (x[:, None] / 255.0).astype(np.float32)
    w = np.random.default_rng(0).normal(size=(int(np.prod(SHAPE)), len(CLASSES)))

    def honest(batch):
        return batch.reshape(len(batch), -1) @ w

    p = np.random.default_rng(1).normal(size=(int(np.prod(SHAPE)), len(CLASSES)))

    def stego(batch):  # honest logits snapped to 1/4, three projections of the image coded below the step
        snapped = np.round(honest(batch) * 4.0) / 4.0
        projected = batch.reshape(len(batch), -1) @ p
        return snapped + 0.24 / (1.0 + np.exp(-projected / projected.std()))

    views = make_views(images, 0, 1)
    settings = AuditSettings(decoders=("knn",), bootstrap=20, max_fit=600)
    plain = summarise(audit_model(honest, views, y, settings=settings), rounds=20)
    coded = summarise(audit_model(stego, views, y, settings=settings), rounds=20)
    lattice = max(v for k, v in coded["gains_db"].items() if "residue:0.25" in k)
    assert lattice > max(v for k, v in plain["gains_db"].items() if "residue:0.25" in k) + 1.0


# -- verdicts that cannot be forged -------------------------------------------------------------------------


def _verify(report, path, **kwargs):
    from edgeguard import __version__
    from edgeguard.model import model_sha256

    return verify_report(report, model_sha256=model_sha256(path), version=__version__, **kwargs)


def test_forged_or_edited_reports_are_refused(tmp_path, probe):
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=table(margin=-100.0), **FAST)
    assert report.verdict == "vicious"
    with pytest.raises(ModelRefusedError, match="full vet report"):
        _verify({"model_sha256": report.model_sha256, "verdict": "honest"}, path)
    edited = report.to_dict()
    edited["verdict"] = "honest"
    with pytest.raises(ModelRefusedError, match="edited"):
        _verify(edited, path, accept_thresholds=True)
    assert _verify(report, path, accept_thresholds=True).verdict == "vicious"  # the control: the report as made


def test_signed_reports(tmp_path, probe):
    key = tmp_path / "reviewer.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(path, probe, thresholds=table(), sign_key=key, **FAST)
    assert report.signature and report.signature["algorithm"] == "hmac-sha256"
    saved = report.save(tmp_path / "report.json")
    assert _verify(saved, path, key=key, accept_thresholds=True).signed is True
    data = json.loads(saved.read_text())
    data["tests"]["leakage"]["score"] = -5.0  # an edit that keeps the verdict consistent
    with pytest.raises(ModelRefusedError, match="edited after signing"):
        _verify(data, path, key=key, accept_thresholds=True)
    unsigned = vet(path, probe, thresholds=table(), **FAST)
    with pytest.raises(ModelRefusedError, match="not signed"):
        _verify(unsigned, path, key=key, accept_thresholds=True)
    other = tmp_path / "other.key"
    other.write_text("fedcba9876543210fedcba9876543210")
    assert "another key" in verify_signature(report.to_dict(), other.read_bytes())
    assert sign_record(report.to_dict(), key.read_bytes().strip()) == report.signature


def test_safe_model_accepts_only_full_verified_reports(tmp_path, probe):
    from edgeguard.errors import ConfigError
    from edgeguard.safe_model import SafeModel

    path = save(linear_classifier(), tmp_path / "m.onnx")
    key = tmp_path / "reviewer.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    report = vet(path, probe, thresholds=table(), sign_key=key, **FAST)
    assert report.verdict == "honest"
    model = SafeModel(path, verdict=report, verdict_key=key, accept_thresholds=True)  # the control
    assert model.verdict == "honest"
    with pytest.raises(ModelRefusedError, match="full vet report"):
        SafeModel(path, verdict={"model_sha256": report.model_sha256, "verdict": "honest"})
    flagged = vet(path, probe, thresholds=table(margin=-100.0), **FAST).to_dict()
    flagged["verdict"] = "honest"
    with pytest.raises(ModelRefusedError, match="edited"):
        SafeModel(path, verdict=flagged, accept_thresholds=True)
    unsigned = vet(path, probe, thresholds=table(), **FAST)
    with pytest.raises(ModelRefusedError, match="not signed"):
        SafeModel(path, verdict=unsigned, verdict_key=key, accept_thresholds=True)
    older = report.to_dict()
    older["edgeguard_version"] = "0.0.1"
    with pytest.raises(ModelRefusedError, match="edgeguard"):
        SafeModel(path, verdict=older)
    with pytest.raises(ConfigError, match="verdict_key"):
        SafeModel(path, verdict_key=key)


def test_finetune_statistics_are_measured_against_the_twin(tmp_path, probe):
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    report = vet(
        path, probe, thresholds=table(), tests=("consistency", "precision", "continuity", "leakage", "finetune"),
        finetune_train_samples=64, finetune_eval_samples=200, finetune_batch_size=32, **FAST,
    )
    details = report.tests["finetune"].details
    assert set(details["twin"]) >= {"loss_decrease_per_shift", "shift_per_gradient_norm"}
    ratio = details["ratio_to_twin"]["loss_decrease_per_shift"]
    assert ratio == pytest.approx(details["loss_decrease_per_shift"] / details["twin"]["loss_decrease_per_shift"])
    assert report.tests["finetune"].details["outcome"] == "informational" and report.verdict == "honest"


@pytest.mark.parametrize(
    "edit", [lambda d: d.pop("ci95"), lambda d: d.update(ci95=[0.1, 0.2]), lambda d: d.update(ci95=[None, 0.2])],
    ids=["no-interval", "interval-without-its-score", "malformed-interval"],
)
def test_a_leakage_score_without_a_usable_interval_is_never_honest(edit):
    t = table(margin=0.36, min_probe=1000)
    record = _record((-0.5, 0.2))
    edit(record["tests"]["leakage"]["details"])  # the point score (-0.15) alone lies below the margin
    decision = decide_record(record, t)
    assert decision.verdict == "inconclusive" and "no usable 95% interval" in " ".join(decision.reasons)
    assert decision.outcomes["leakage"] == "undecided"


def test_a_table_that_requires_nothing_gives_no_honest_verdict():
    t = table(margin=0.36, min_probe=1000)
    t["combined"]["required_v3"] = []  # e.g. the thresholds a report carries, accepted with accept_thresholds=True
    empty = decide_record({"tests": {}, "findings": [], "probe": {"samples": 1000}, "settings": {}}, t)
    assert empty.verdict == "inconclusive" and "no leakage test" in " ".join(empty.reasons)
    assert decide_record(_record((-0.5, 0.2)), t).verdict == "honest"  # the control: the leakage interval passed


@pytest.mark.parametrize("flagged", [False, True])
def test_a_check_without_a_thresholds_entry_cannot_pass_on_its_own_say_so(flagged):
    t = table(margin=0.36, min_probe=1000)
    record = _record((-0.5, 0.2))
    assert decide_record(record, t).verdict == "honest"  # the control: consistency decides by itself
    record["tests"]["made_up_check"] = {"status": "ran", "score": 0.0, "flagged": flagged, "details": {}}
    decision = decide_record(record, t)
    assert decision.verdict == "inconclusive" and decision.outcomes["made_up_check"] == "undecided"
    reason = " ".join(decision.reasons)
    assert "made_up_check" in reason and "thresholds entry" in reason


def test_the_finetune_test_evaluates_on_what_a_short_probe_leaves(tmp_path, probe):
    """A probe short of train + eval samples: evaluated on the rest when >= 500 are left, else skipped, saying why."""
    pytest.importorskip("torch")
    path = save(linear_classifier(), tmp_path / "m.onnx")
    knobs = dict(FAST, finetune_train_samples=64, finetune_eval_samples=1000, finetune_batch_size=32)
    tests = ("consistency", "finetune")
    ran = vet(path, probe, thresholds=table(), tests=tests, **knobs).tests["finetune"]  # 600 images: 536 left
    assert ran.status == "ran" and ran.details["eval_samples"] == 600 - 64
    short = vet(path, write_probe(tmp_path / "short.npz", 520), thresholds=table(), tests=tests, **knobs)
    test = short.tests["finetune"]
    assert test.status == "skipped" and "at least 500 held out, got 520" in test.reason
