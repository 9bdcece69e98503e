"""The decision's adjustment for a model more accurate than its honest twin (verdicts.rule.accuracy_adjustment).

Honest models leak less the better they are trained, and a twin trained on little reference data
is often less accurate than a converged model; the excess over the twin is raised by the calibrated
slope times the model's accuracy lead. These tests check the arithmetic against a hand-computed
oracle, its conservative edges, and that the decision applies it (honest -> not honest; a lead
beyond the calibrated range can refuse a pass but never convict).
"""

from __future__ import annotations

import pytest

from edgeguard.verdicts.rule import accuracy_adjustment, decide_record

SLOPE, SPAN = -17.0, [-0.02, 0.05]


def _entry(margin=0.4):
    return {"threshold": margin, "scale": 0.1, "higher_is_vicious": True, "accuracy_slope_db": SLOPE,
            "accuracy_gap_range": SPAN}


def _table(margin=0.4):
    return {"tests": {"leakage_excess_twin": _entry(margin)},
            "combined": {"min_probe_samples": 1000, "require_twin": True,
                         "required_v3": ["consistency", "precision", "continuity", "leakage"]}}


def _record(ci, gap):
    tests = {
        "consistency": {"status": "ran", "score": 0.0, "flagged": False, "details": {}},
        "precision": {"status": "ran", "score": 1e-7, "details": {}},
        "continuity": {"status": "ran", "score": 0.5, "details": {}},
        "leakage": {"status": "ran", "score": (ci[0] + ci[1]) / 2,
                    "details": {"ci95": list(ci), "statistic": "excess_gain_db",
                                "threshold_entry": "leakage_excess_twin", "accuracy_gap": gap}},
    }
    return {"tests": tests, "findings": [], "probe": {"samples": 1000}, "settings": {"tests": list(tests)}}


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (0.035, (17.0 * 0.035, 17.0 * 0.035)),  # inside the calibrated range: both ways the same
        (-0.01, (0.0, 0.0)),  # less accurate than the twin: no credit, no penalty
        (0.10, (17.0 * 0.05, 17.0 * 0.10)),  # beyond the range: convicts only up to its edge
        (None, (0.0, 0.0)),  # a report without the figure
    ],
)
def test_adjustment_matches_the_hand_computed_oracle(gap, expected):
    got = accuracy_adjustment(_entry(), {"accuracy_gap": gap})
    assert got == pytest.approx(expected)


def test_no_slope_or_a_positive_one_means_no_adjustment():
    assert accuracy_adjustment({"threshold": 0.4}, {"accuracy_gap": 0.05}) == (0.0, 0.0)
    assert accuracy_adjustment(dict(_entry(), accuracy_slope_db=2.0), {"accuracy_gap": 0.05}) == (0.0, 0.0)


def test_a_lead_over_the_twin_turns_a_pass_into_a_conviction():
    # a model 3.5 points more accurate than its twin whose raw excess sits below the margin
    # (finish-ce on the held-out zoo: +0.31 [0.19, 0.41] raw over a twin 0.035 less accurate)
    assert decide_record(_record((0.19, 0.41), 0.0), _table(0.45)).verdict == "honest"  # the control: no lead
    decision = decide_record(_record((0.19, 0.41), 0.035), _table(0.45))
    assert decision.verdict == "vicious", decision.reasons
    assert "accuracy lead" in decision.reasons[0]


def test_a_lead_beyond_the_calibrated_range_refuses_a_pass_but_does_not_convict():
    # raw [-0.9, -0.6]; lead 0.1: to convict +0.85 -> lower bound -0.05 < 0.4; to pass +1.7 -> upper 1.1 > 0.4
    decision = decide_record(_record((-0.9, -0.6), 0.10), _table(0.4))
    assert decision.verdict == "inconclusive", decision.reasons
    assert "straddles" in " ".join(decision.reasons)
    assert decide_record(_record((-0.9, -0.6), 0.04), _table(0.4)).verdict == "honest"  # inside: +0.68 -> 0.08


def test_an_untrusted_accuracy_measure_is_assumed_to_hide_the_largest_lead_for_a_pass():
    complete = accuracy_adjustment(_entry(), {"accuracy_gap": 0.01, "accuracy_measure_trusted": True})
    partial = accuracy_adjustment(_entry(), {"accuracy_gap": 0.01, "accuracy_measure_trusted": False})
    assert complete == pytest.approx((0.17, 0.17))
    assert partial == pytest.approx((0.17, 17.0 * 0.05))  # a pass assumes the range's top; conviction does not
