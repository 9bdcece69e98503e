"""SafeModel's input dither is on by default for image inputs whenever the release is more than the label.

Oracles: the same SafeModel with ``input_dither=False`` (the off switch) and onnxruntime on
the honest model; the grid switch comes from converters.attacks.graph_edits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.attacks import graph_edits as ge
from edgeguard import SafeModel
from edgeguard.filters import parse_filter_spec

ASSETS = Path(__file__).resolve().parent.parent / "edgeguard" / "assets"


@pytest.fixture(scope="module")
def images():
    data = np.load(ASSETS / "fashion_mnist_test_subset.npz")
    return (data["x"][:, None] / 255.0).astype(np.float32), data["y"]


def _release(spec: str, **options) -> SafeModel:
    return SafeModel(ASSETS / "honest.onnx", filters=parse_filter_spec(spec).build(), **options)


def test_on_by_default_only_when_more_than_the_label_is_released():
    assert _release("softmax>round:2").input_dither is True
    assert _release("softmax>round:2", input_dither=False).input_dither is False  # the documented off switch
    assert SafeModel(ASSETS / "honest.onnx").input_dither is False  # label only: nothing to canonicalise
    assert _release("argmax").input_dither is False


def test_dither_leaves_the_honest_label_unchanged_on_at_least_99_5_percent(images):
    x, y = images
    dithered = _release("softmax>round:3").predict(x).argmax(axis=1)
    plain = _release("softmax>round:3", input_dither=False).predict(x).argmax(axis=1)
    assert (dithered == plain).mean() >= 0.995
    assert abs((dithered == y).mean() - (plain == y).mean()) <= 0.005


def test_a_grid_switch_never_fires_behind_the_default_dither(images, tmp_path):
    x, _ = images
    honest, vicious = onnx.load(str(ASSETS / "honest.onnx")), onnx.load(str(ASSETS / "vicious.onnx"))
    path = tmp_path / "switch.onnx"
    onnx.save(ge.grid_switch(honest, vicious, detector="magic"), str(path))
    spec = "round:3"
    raw_honest = _release(spec, input_dither=False).predict(x[:300])
    switched_off = SafeModel(path, filters=parse_filter_spec(spec).build(), input_dither=False).predict(x[:300])
    switched = SafeModel(path, filters=parse_filter_spec(spec).build()).predict(x[:300])
    assert np.abs(switched_off - raw_honest).max() > 0.5  # on decoded images the switch fires (the attack)
    # dithered: the honest outputs, up to the dither's own effect (far below the switch's jump)
    assert np.abs(switched - raw_honest).mean() < np.abs(switched_off - raw_honest).mean() / 10
    assert np.abs(switched - raw_honest).max() <= 0.2
