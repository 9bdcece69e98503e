"""benchmarks/detection.py's three-way figures: Wilson intervals, honest-pass rate, the issue's bar.

Synthetic model records (no vetting): the statistics must follow the verdicts they are given.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import detection


def test_wilson_interval_matches_the_closed_form():
    # closed form for k = 0: upper = z^2 / (n + z^2); for k = n: lower = n / (n + z^2)
    z2 = 1.96**2
    low, high = detection.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2), rel=1e-9)
    low, high = detection.wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + z2), rel=1e-9)
    low, high = detection.wilson(5, 10)
    assert low < 0.5 < high and low == pytest.approx(1 - high)
    assert detection.wilson(0, 0) == (None, None)


def _model(name, family, verdict, *, harmful=False, split="test", gain=0.5, reason="because"):
    return {
        "name": name,
        "family": family,
        "split": split,
        "arch": "cnn",
        "harmful": harmful,
        "server_gain_db": gain,
        "twin_gain_db": 0.4,
        "accuracy": 0.86,
        "vet": {"verdict": verdict, "reasons": [reason], "findings": [], "tests": {}, "seconds": 3.0},
    }


def test_evaluate_three_way_and_the_bar():
    models = [
        _model("h1", "honest", "honest"),
        _model("h2", "honest", "honest"),
        _model("h3", "honest", "inconclusive", reason="no twin"),
        _model("h4", "honest", "vicious"),
        _model("a1", "lattice-magic", "vicious", harmful=True, gain=2.0),
        _model("a2", "lattice-magic", "inconclusive", harmful=True, gain=1.8),
        _model("b1", "noise-gate", "honest", harmful=True, gain=1.9),
        _model("b2", "noise-gate", "honest", harmful=False, gain=0.6),
        _model("c1", "honest", "honest", split="calibration"),
    ]
    summary = detection.evaluate(models)
    honest = summary["test"]["honest"]
    assert honest["models"] == 4
    assert honest["honest_pass"]["k"] == 2 and honest["honest_pass"]["rate"] == 0.5
    assert honest["fpr_vicious"]["k"] == 1 and honest["inconclusive"]["k"] == 1
    assert [m["name"] for m in honest["not_passed"]] == ["h3", "h4"]
    assert honest["not_passed"][0]["reason"] == "no twin"
    lattice = summary["test"]["families"]["lattice-magic"]
    assert lattice["non_pass_harmful"]["k"] == 2 and lattice["vicious_harmful"]["k"] == 1
    gate = summary["test"]["families"]["noise-gate"]
    assert gate["passed_harmful"] == ["b1"] and gate["passed_not_harmful"] == "1/1"
    assert gate["gain_over_twin_db"]["max"] == pytest.approx(1.5)
    assert summary["bar"]["no_harmful_vicious_passes"] is False
    assert summary["bar"]["harmful_passed"] == {"noise-gate": ["b1"]}
    assert summary["bar"]["honest_pass_at_least_90"] is False
    assert summary["calibration"]["honest"]["models"] == 1  # reported apart, never mixed into the headline
    text = detection.render(
        {
            **summary,
            "generated": "now",
            "wall_seconds": 1.0,
            "machine": {"note": "test"},
            "settings": {"probe_size": 10},
            "models": models,
        }
    )
    assert "NO" in text and "b1" in text and "no twin" in text
    fragment = detection.readme_fragment(summary)
    assert "noise-gate" in fragment and "b1" in fragment


def test_fit_thresholds_uses_only_calibration_honest_upper_bounds():
    def vetted(name, split, family, upper, continuity):
        m = _model(name, family, "inconclusive", split=split)
        m["vet"]["tests"] = {
            "leakage": {
                "status": "ran",
                "score": upper - 0.2,
                "details": {"ci95": [upper - 0.4, upper], "threshold_entry": "leakage_excess_twin"},
            },
            "continuity": {"status": "ran", "score": continuity},
        }
        return m

    models = [
        vetted("c1", "calibration", "honest", 0.5, 1.0),
        vetted("c2", "calibration", "honest", 0.7, 6.0),
        vetted("v1", "calibration", "paper-logits", 3.0, 9.0),  # attackers never set a margin
        vetted("t1", "test", "honest", 9.0, 9.0),  # the held-out zoo never enters
    ]
    table = {"tests": {"leakage_excess_twin": {"threshold": 0.36}, "continuity": {"threshold": 5.0, "hard": 25.0}}}
    changes = detection.fit_thresholds(models, table)
    assert table["tests"]["leakage_excess_twin"]["threshold"] == pytest.approx(0.7 + detection.MARGIN_SLACK_DB)
    assert changes["leakage_excess_twin"]["calibration_honest"] == 2
    assert table["tests"]["continuity"]["threshold"] == pytest.approx(9.0)  # 1.5 x the largest honest score


def test_fit_thresholds_fits_the_accuracy_slope_on_calibration_honest_models_only():
    # honest excess falls by 10 dB per unit of accuracy lead over the twin; the margin is the largest
    # upper bound once raised for the lead (gaps below 0 earn no credit), plus the slack
    def vetted(name, split, family, gap, excess):
        m = _model(name, family, "inconclusive", split=split)
        m["vet"]["tests"] = {"leakage": {"status": "ran", "score": excess, "details": {
            "ci95": [excess - 0.1, excess + 0.1], "threshold_entry": "leakage_excess_twin", "accuracy_gap": gap}}}
        return m

    honest = [(-0.04, 0.2), (0.0, -0.2), (0.02, -0.4), (0.04, -0.6)]
    models = [vetted(f"c{i}", "calibration", "honest", g, e) for i, (g, e) in enumerate(honest)]
    models += [vetted("v", "calibration", "finish-ce", 0.04, 5.0), vetted("t", "test", "honest", 0.5, -9.0)]
    table = {"tests": {"leakage_excess_twin": {"threshold": 0.6}}}
    detection.fit_thresholds(models, table)
    entry = table["tests"]["leakage_excess_twin"]
    assert entry["accuracy_slope_db"] == pytest.approx(-10.0)
    assert entry["accuracy_gap_range"] == pytest.approx([-0.04, 0.04])
    # upper bounds raised for max(gap, 0): 0.3, -0.1, -0.3 + 0.2, -0.5 + 0.4 -> largest 0.3
    assert entry["threshold"] == pytest.approx(0.3 + detection.MARGIN_SLACK_DB)


def test_redecide_applies_the_installed_rule_to_cached_reports(monkeypatch, tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({
        "tests": {"leakage_excess_twin": {"threshold": 0.45, "scale": 0.3, "higher_is_vicious": True,
                                          "accuracy_slope_db": -10.0, "accuracy_gap_range": [-0.04, 0.04]}},
        "combined": {"min_probe_samples": 1000, "require_twin": True, "required_v3": ["leakage"]},
    }))
    monkeypatch.setattr(detection, "_thresholds_path", lambda: path)
    m = _model("finish", "finish-ce", "honest")
    m["vet"].update(findings=[], requested_tests=["leakage"], probe={"samples": 1000})
    m["vet"]["tests"] = {"leakage": {"status": "ran", "score": 0.3, "details": {
        "ci95": [0.19, 0.41], "statistic": "excess_gain_db", "threshold_entry": "leakage_excess_twin",
        "accuracy_gap": 0.035}}}
    detection.redecide([m])
    assert m["vet"]["verdict"] == "vicious", m["vet"]["reasons"]  # 0.19 + 0.35 > 0.45
    m["vet"]["tests"]["leakage"]["details"]["accuracy_gap"] = 0.0
    detection.redecide([m])
    assert m["vet"]["verdict"] == "honest", m["vet"]["reasons"]  # the control: no lead, 0.41 < 0.45
