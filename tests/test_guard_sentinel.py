"""NaN, +-inf and out-of-range inputs: every pipeline releases the documented sentinel, never an error
carrying values and never raw values (guarded files under plain onnxruntime, and SafeModel).

Regression: `softmax>label_confidence:4` turned a NaN top probability into an int64 index far out of
range before the gate, and onnxruntime's Gather raised instead of the file releasing NaN rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from test_fusion import SHAPE, _linear_model  # the tiny seeded models of the fusion tests

from edgeguard import SafeModel
from edgeguard.errors import EdgeguardError, GuardError, InvalidInputError
from edgeguard.filters import FILTER_NAMES, FilterPipeline, default_filter_specs, parse_filter_spec
from edgeguard.guard import guard_model, guarded_feeds

#: One example per grammar entry (the default grid covers the rest with its own parameters).
GRAMMAR_EXAMPLES = {
    "none": "none",
    "softmax": "softmax",
    "sigmoid": "sigmoid",
    "round": "round:2",
    "truncate": "truncate:2",
    "top_k": "softmax>top_k:3",
    "argmax": "argmax",
    "gaussian": "gaussian:1",
    "laplace": "laplace:1",
    "label_preserving": "label_preserving:1",
    "clipped_laplace": "clipped_laplace:c=5,eps=1",
    "rounded": "rounded",
    "high_confidence": "softmax>high_confidence:0.5",
    "reverse_sigmoid": "softmax>reverse_sigmoid:beta=0.5,gamma=0.5",
    "class_labels": "softmax>class_labels",
    "label_confidence": "softmax>label_confidence:4",
}
JUST_ABOVE = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
BAD_VALUES = (np.nan, np.inf, -np.inf, 1.5, -0.5, JUST_ABOVE)
ROWS = 3
#: Stages with no in-graph form: `guard` must refuse these specs, and must accept every other one.
NOT_IN_GRAPH = {"none", "label_preserving", "clipped_laplace"}


def _specs() -> list[str]:
    texts = [spec.text for spec in default_filter_specs("logits")]
    return texts + [GRAMMAR_EXAMPLES[name] for name in FILTER_NAMES if GRAMMAR_EXAMPLES[name] not in texts]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _linear_model(tmp_path_factory.mktemp("sentinel") / "logits.onnx", kind="logits")


def _images(bad: float | None = None) -> np.ndarray:
    x = np.random.default_rng(0).random((ROWS, *SHAPE), dtype=np.float32)
    if bad is not None:
        x[1, 0, 2, 2] = bad
    return x


def _raw_texts(model: Path) -> list[str]:
    """The raw scores of the valid rows as an error message would quote them (3 decimals)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = session.run(None, {session.get_inputs()[0].name: _images()})[0]
    return [f"{v:.3f}" for v in raw.ravel() if abs(v) >= 0.01]


def _assert_sentinel(released: np.ndarray, index: bool) -> None:
    if index:
        assert released.dtype == np.int64 and (released == -1).all()
    else:
        assert np.isnan(released).all()


def test_the_grammar_table_covers_every_filter_name():
    assert set(GRAMMAR_EXAMPLES) == set(FILTER_NAMES)
    for text in GRAMMAR_EXAMPLES.values():
        parse_filter_spec(text).build()


def _must_guard(spec: str) -> bool:
    return not {part.split(":")[0] for part in spec.split(">")} & NOT_IN_GRAPH


@pytest.mark.parametrize("spec", _specs())
def test_bad_inputs_release_the_sentinel_in_guarded_files_and_safe_model(model, tmp_path, spec):
    out = tmp_path / "guarded.onnx"
    filters = parse_filter_spec(spec).build()
    if _must_guard(spec):
        guard_model(model, spec, out)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        valid = session.run(None, guarded_feeds(session, _images()))[0]
        index = valid.dtype == np.int64
        assert valid.shape == ((ROWS,) if index else (ROWS, 10))
        assert ((valid >= 0) & (valid < 10)).all() if index else np.isfinite(valid).all()  # valid inputs release
        for bad in BAD_VALUES:
            _assert_sentinel(session.run(None, guarded_feeds(session, _images(bad)))[0], index)
    else:
        with pytest.raises(GuardError):
            guard_model(model, spec, out)
        assert not out.exists()
    if not filters:
        return  # "none": SafeModel refuses to release raw outputs at all
    safe = SafeModel(model, filters=filters, input_dither=False)
    released = safe.predict(_images(), seed=0)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = session.run(None, {session.get_inputs()[0].name: _images()})[0]
    expected = FilterPipeline(filters, input_kind="logits")(raw, np.random.default_rng(0))  # numpy, row by row
    assert released.shape == expected.shape and released.dtype == expected.dtype
    if not safe.pipeline.is_random:
        np.testing.assert_allclose(released, expected, rtol=2e-6, atol=2e-7)
    else:
        assert np.isfinite(released).all() and not np.array_equal(released, raw)
    raw_texts = _raw_texts(model)
    for bad in BAD_VALUES:
        with pytest.raises(InvalidInputError) as caught:
            safe.predict(_images(bad), seed=0)
        message = str(caught.value)
        assert not any(text in message for text in raw_texts), message
        assert caught.value.__cause__ is None and caught.value.__context__ is None


def _non_finite_model(model: Path, out: Path) -> Path:
    """The same model with an infinite bias: valid inputs, NaN scores after a softmax (a lazy vicious edit)."""
    proto = onnx.load(str(model))
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name == "bias":
            bias = numpy_helper.to_array(tensor).copy()
            bias[3] = np.inf
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(bias, "bias"))
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("spec", ["softmax>label_confidence:4", "softmax>label_confidence:10", "softmax>round:2"])
def test_non_finite_scores_on_valid_inputs_release_the_sentinel(model, tmp_path, spec):
    broken = _non_finite_model(model, tmp_path / "broken.onnx")
    out = tmp_path / "guarded.onnx"
    guard_model(broken, spec, out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    _assert_sentinel(session.run(None, guarded_feeds(session, _images()))[0], index=False)
    safe = SafeModel(broken, filters=parse_filter_spec(spec).build(), input_dither=False)
    with pytest.raises(EdgeguardError) as caught:
        safe.predict(_images(), seed=0)
    assert not re.search(r"\d\.\d{3}", str(caught.value)), str(caught.value)
