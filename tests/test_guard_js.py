"""Guarded files in JavaScript: onnxruntime-node (clients/js) and onnxruntime-web in headless Chromium
release what Python's onnxruntime releases, on 200 Fashion-MNIST test images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _guard_js import decode, node_available, run_node, run_web
from click.testing import CliRunner

from edgeguard.cli import main
from edgeguard.filters import default_filter_specs
from edgeguard.guard import guarded_feeds
from edgeguard.guard.build import refusal

HONEST = Path(__file__).resolve().parents[1] / "edgeguard" / "assets" / "honest.onnx"
IMAGES = 200
KS_C = math.sqrt(-math.log(1e-6 / 2) / 2)  # two-sample KS bound at alpha = 1e-6


def _deterministic_specs() -> list[str]:
    from edgeguard import SafeModel

    specs = []
    for spec in default_filter_specs("logits"):
        if spec.is_raw:
            continue
        pipeline = SafeModel(HONEST, filters=spec.build()).pipeline
        if not pipeline.is_random and refusal(pipeline, 10) is None:
            specs.append(spec.text)
    return specs


@pytest.fixture(scope="module")
def images(fmnist_test_small) -> np.ndarray:
    return np.ascontiguousarray(fmnist_test_small.x[:IMAGES], dtype=np.float32)


def _guard(tmp_path: Path, spec: str, *extra: str) -> Path:
    out = tmp_path / "guarded.onnx"
    result = CliRunner().invoke(main, ["guard", str(HONEST), "--filters", spec, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def _python(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, guarded_feeds(session, x))[0]


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    )


def test_the_deterministic_default_pipelines_are_covered():
    specs = _deterministic_specs()
    assert {"softmax>round:2", "argmax", "softmax>label_confidence:4", "softmax>top_k:3"} <= set(specs)


@pytest.mark.parametrize("spec", _deterministic_specs())
def test_node_releases_exactly_what_python_releases(tmp_path, images, spec):
    node_available()
    path = _guard(tmp_path, spec)
    result = run_node(path, images)
    released = decode(result, result["releases"][0][0])
    expected = _python(path, images)
    assert released.dtype == expected.dtype and released.shape == expected.shape
    assert released.tobytes() == expected.tobytes()  # bit for bit


def test_node_noise_is_fresh_across_runs_sessions_and_processes_and_matches_python(tmp_path, images):
    node_available()
    path = _guard(tmp_path, "softmax>gaussian:0.03", "--input-dither")
    first = run_node(path, images, sessions=2, runs=2)
    second = run_node(path, images)  # another process
    releases = [h for session in first["releases"] for h in session] + second["releases"][0]
    assert len(set(releases)) == len(releases) == 5
    node = decode(first, releases[0])
    python = _python(path, images)
    assert _ks(node, python) <= KS_C * math.sqrt(2.0 / node.size)


def test_web_wasm_in_headless_chromium_releases_what_python_releases(tmp_path, images):
    path = _guard(tmp_path, "softmax>round:2")
    report = run_web(path, images)
    assert "error" not in report, report.get("error")
    assert report["backend"] == "wasm"
    expected = _python(path, images)
    for hex_text in report["releases"]:
        assert decode(report, hex_text).tobytes() == expected.tobytes()


def test_web_noise_is_fresh_across_runs_and_sessions(tmp_path, images):
    path = _guard(tmp_path, "gaussian:1", "--input-dither")
    report = run_web(path, images[:16])
    assert "error" not in report, report.get("error")
    assert len(set(report["releases"])) == 4  # 2 sessions x 2 runs, all different
    web = decode(report, report["releases"][0])
    python = np.concatenate([_python(path, images[:16]) for _ in range(4)])
    assert _ks(web, python[: len(web)]) <= KS_C * math.sqrt(2.0 / web.size)
