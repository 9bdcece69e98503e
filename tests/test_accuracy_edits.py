"""converters.attacks.accuracy_edits: each edit against an independent numpy oracle, and the server's exact undo."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from _vet_models import linear_classifier, probe_arrays

from converters.attacks.accuracy_edits import (
    bias_shift,
    head_without_gemm,
    hide_accuracy,
    swap_unsure,
    undo_bias_shift,
    undo_swap_unsure,
)
from edgeguard.errors import InvalidInputError


def _run(model, images):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images})[0].astype(np.float64)


@pytest.fixture(scope="module")
def data():
    x, y = probe_arrays(300, seed=4)
    images = (x[:, None].astype(np.float32) / 255.0)
    model = linear_classifier()
    return model, images, y, _run(model, images)


def _swap_oracle(logits, margin):
    """One row at a time: the two largest entries trade places when they are closer than ``margin``."""
    out = logits.copy()
    for row in out:
        first, second = np.argsort(row)[-1], np.argsort(row)[-2]
        if row[first] - row[second] < margin:
            row[first], row[second] = row[second], row[first]
    return out


def test_bias_shift_adds_to_one_class_and_is_undone(data):
    model, images, _, logits = data
    edited = _run(bias_shift(model, bias=1.5, class_index=2), images)
    expected = logits.copy()
    expected[:, 2] += 1.5
    np.testing.assert_allclose(edited, expected, atol=1e-5)
    np.testing.assert_allclose(undo_bias_shift(edited, bias=1.5, class_index=2), logits, atol=1e-5)
    with pytest.raises(InvalidInputError, match="class index"):
        bias_shift(model, bias=1.0, class_index=7)


def test_swap_unsure_matches_a_row_at_a_time_oracle_and_is_its_own_inverse(data):
    model, images, _, logits = data
    margin = float(np.median(np.diff(np.sort(logits, axis=1)[:, -2:], axis=1)))  # about half the rows
    edited = _run(swap_unsure(model, margin=margin), images)
    np.testing.assert_allclose(edited, _swap_oracle(logits, margin), atol=1e-4)
    assert (edited.argmax(1) != logits.argmax(1)).mean() > 0.2
    np.testing.assert_allclose(undo_swap_unsure(edited, margin=margin), logits, atol=1e-4)


@pytest.mark.parametrize("live", [False, True])
def test_head_without_gemm_computes_the_same_function_without_the_gemm(data, live):
    model, images, _, logits = data
    rewritten = head_without_gemm(model, weight_from_input=live)
    assert "Gemm" not in {n.op_type for n in rewritten.graph.node}
    np.testing.assert_allclose(_run(rewritten, images), logits, atol=1e-4)


def test_hide_accuracy_finds_the_smallest_parameter_reaching_the_target(data):
    _, _, labels, logits = data
    top1 = float((logits.argmax(1) == labels).mean())
    found = hide_accuracy("bias-shift", logits, labels, top1 - 0.2, step=0.25)
    assert found["reached"] and found["accuracy_after"] <= top1 - 0.2
    before = undo_bias_shift(logits, bias=-(found["bias"] - 0.25))  # one step less does not reach it
    assert float((before.argmax(1) == labels).mean()) > top1 - 0.2
    with pytest.raises(InvalidInputError, match="edit"):
        hide_accuracy("nope", logits, labels, 0.5)
