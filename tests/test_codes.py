"""Rung 4: hand-built codes (converters.attacks.codes through the entry point) and the bench's rung 4.

Oracles: the real edgeguard filter pipeline between encoder and decoder, symbol-for-symbol
comparison, and each release's own capacity bound (edgeguard.filters).
"""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import numpy as np
import pytest

from edgeguard.bench import BenchSettings, run_bench
from edgeguard.filters import FilterPipeline
from edgeguard.filters.spec import parse_filter_spec


def _kit(num_classes: int):
    points = {point.name: point for point in entry_points(group="edgeguard.attack_trainers")}
    assert "hand_codes" in points, "pip install -e . registers the hand_codes entry point"
    return points["hand_codes"].load()(num_classes)


def _release(spec: str, coded: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    pipeline = FilterPipeline(parse_filter_spec(spec).build(), input_kind="logits")
    domain = pipeline.domains(coded.shape[1])[-1]
    kind = "labels" if domain.terminal or domain.kind == "labels" else domain.kind
    return pipeline(coded, np.random.default_rng(seed)), kind


@pytest.fixture(scope="module")
def tiny_raw(tiny_threats, fmnist_test_small):
    """The tiny vicious model's logits on 300 test images (onnxruntime): the base outputs and the payload."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_threats["vicious"]["classifier"]), providers=["CPUExecutionProvider"])
    x = fmnist_test_small.x[:300]
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(
    ("spec", "code_name"),
    [
        ("none", "DiffLattice"),
        ("softmax", "DiffLattice"),
        ("softmax>top_k:1", "TopMass"),
        ("gaussian:1", "Lattice"),
        ("softmax>round:2", "ProbLattice"),
        ("softmax>label_confidence:4", "Level"),
    ],
)
def test_payload_comes_back_bit_exactly_through_the_release(tiny_raw, spec, code_name):
    from converters.attacks import codes

    kit = _kit(tiny_raw.shape[1])
    labels = tiny_raw.argmax(axis=1)
    _, kind = _release(spec, tiny_raw)
    exact = []
    for code in kit.candidates(kind):
        if type(code).__name__ != code_name:
            continue
        quantiser = kit.quantiser(tiny_raw, code.radices)
        symbols = quantiser.symbols(tiny_raw, labels)
        coded = code.encode(tiny_raw, symbols)
        assert (coded.argmax(axis=1) == labels).all(), code.name  # the label (accuracy) is kept
        release, _ = _release(spec, coded, seed=1)
        decoded = code.decode(release, kind)
        if decoded is not None and np.array_equal(decoded, symbols):
            exact.append(code)
            # the de-quantised payload is a function of the symbols and the released label only
            payload = quantiser.from_symbols(decoded, np.asarray(release).argmax(axis=1))
            np.testing.assert_array_equal(payload, quantiser.from_symbols(symbols, labels))
    assert exact, f"no {code_name} came back bit-exactly through {spec}"
    assert isinstance(exact[0], getattr(codes, code_name))
    if spec in ("none", "softmax"):  # a float release carries more than 100 bits per row below its resolution
        assert max(code.bits for code in exact) > 100


def test_nothing_comes_back_through_argmax(tiny_raw):
    kit = _kit(tiny_raw.shape[1])
    labels = tiny_raw.argmax(axis=1)
    codes = [c for kind in ("logits", "probabilities") for c in kit.candidates(kind)]
    for code in codes:
        quantiser = kit.quantiser(tiny_raw, code.radices)
        coded = code.encode(tiny_raw, quantiser.symbols(tiny_raw, labels))
        release, kind = _release("argmax", coded)
        assert code.decode(release, kind) is None, code.name
    for code in kit.candidates("labels"):  # the label trade is read as the label only
        code.fit(tiny_raw)
        release, kind = _release("argmax", code.encode(tiny_raw, np.ones((len(tiny_raw), 1), dtype=np.int64)))
        assert code.decode(release, kind) is None
        traded = np.mean(release != labels)
        assert 0 < traded <= code.fraction + 1.0 / len(labels)  # only the unsure rows change label


def test_bench_rung_four_on_a_tiny_model(tiny_threats, fmnist_test_small):
    grid = "none;softmax;softmax>top_k:1;softmax>round:1;softmax>label_confidence:4;gaussian:1;argmax"
    settings = BenchSettings(eval_size=120, attack_size=300, attack_epochs=0, attacker="knn", repeats=3)
    settings = BenchSettings(**{**settings.__dict__, "repeat_counts": (), "seed": 2})
    vicious = tiny_threats["vicious"]
    report = run_bench(vicious["classifier"], vicious["decoder"], fmnist_test_small, grid, settings, progress=False)
    rows = {row.filter: row for row in report.rows}
    base = report.label_only["psnr"]
    for name, row in rows.items():
        assert row.codes_status == "run", (name, row.codes_status)
        # the code keeps accuracy (within 0.5 points of the model, checked on the attacker's images)
        assert math.isfinite(row.codes_psnr) and 0.0 <= row.codes_accuracy <= 1.0, name
        # bits carried never exceed the capacity bound of a bounded release
        assert row.codes_bits_carried <= row.capacity_bits + 1e-9, (name, row.codes_bits_carried, row.capacity_bits)
    # through a float release every row's payload comes back exactly
    softmax = rows["softmax"]
    assert softmax.codes_bits_carried == softmax.codes_payload_bits > 50
    assert softmax.codes_psnr - base > 0.5 and softmax.worst_rung in ("codes", "server", "adaptive")
    assert softmax.worst_psnr_gain_db >= softmax.codes_psnr - base - 1e-9  # rung 4 enters the worst case
    # through argmax nothing is read back: at most one bit on the traded rows, no gain worth the name
    argmax = rows["argmax"]
    assert argmax.codes_bits_carried <= 1.0 and argmax.codes_psnr - base < 0.5
    assert "rungs 1-2 and 4" in report.rungs_run()
    assert "Rung 4 (hand-built codes, no training) breaks" in report.codes_statement()
    assert "### Rung 4: hand-built codes" in report.to_markdown()
    assert "rung 1 / 2 / 3 / 4 gain" in report.readme_fragment()
