"""The leakage audit's large-input path (edgeguard.vetting.large_inputs): taken only above 3x64x64 values,
stated in the report, still telling a leaky model from a blind one; the small-input path is unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeguard.vetting import large_inputs, vet
from edgeguard.vetting.audit import AuditSettings, audit_model, make_views, summarise
from edgeguard.vetting.augment import augment
from edgeguard.vetting.decoders import principal_basis
from edgeguard.vetting.targets import audit_target, thumbnail

SETTINGS = AuditSettings(decoders=("knn",), bootstrap=20, max_fit=400, augmentations=1, residues=False)


def smooth_images(n: int, shape: tuple[int, int, int], seed: int = 0, cells: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Blocky random images on the 8-bit grid (cells x cells blocks), 10 balanced classes."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    coarse = rng.uniform(size=(n, c, cells, cells)).astype(np.float32)
    x = np.kron(coarse, np.ones((1, 1, h // cells + 1, w // cells + 1), np.float32))[:, :, :h, :w]
    return (np.round(x * 255) / 255).astype(np.float32), np.arange(n) % 10


def old_views_targets(items: np.ndarray, augment_seed: int, augmentations: int) -> np.ndarray:
    """The small-input views' targets as the audit computed them before the large-input path (independent code)."""
    target = audit_target(items)
    a = augmentations + 1
    kinds = ["clean"] + ["off-grid"] * a + ["on-grid"] * a
    out = []
    for index, kind in enumerate(kinds):
        moved = items
        if kind != "clean":
            moved = augment(items, 1, np.random.default_rng([augment_seed, index]))[0]
            if kind == "on-grid":
                moved = (np.round(moved * 255.0) / 255.0).astype(np.float32)
        out.append(target.encode(moved))
    return np.stack(out)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64)])
def test_small_inputs_keep_the_exact_path(shape, monkeypatch):
    items, labels = smooth_images(200, shape)
    views = make_views(items, 5, 1)
    assert not views.large
    np.testing.assert_array_equal(views.targets, old_views_targets(items, 5, 1))
    # the small path never reaches the large-input helpers: the basis is the covariance's, as before
    if shape[0] == 3:  # the audit itself is pinned on 28x28 (the 3072-wide covariance is slow to test)
        return
    for name in ("gram_basis", "augment_rows"):
        monkeypatch.setattr(large_inputs, name, lambda *a, **k: pytest.fail(f"{name} called on a small input"))
    w = np.random.default_rng(1).normal(size=(int(np.prod(shape)), 10))
    audit = audit_model(lambda x: x.reshape(len(x), -1) @ w, views, labels, settings=SETTINGS)
    assert audit.gains() and all(np.isfinite(v) for v in audit.gains().values())


def test_the_boundary_is_three_by_sixty_four_squared():
    assert not large_inputs.is_large(np.zeros((2, 3, 64, 64), np.float32))
    assert large_inputs.is_large(np.zeros((2, 3, 64, 65), np.float32))
    assert not large_inputs.is_large(np.zeros((2, 20000), np.float32))  # vectors never take it


def test_large_views_are_deterministic_chunked_and_in_domain():
    items, _ = smooth_images(150, (3, 96, 96))
    views = make_views(items, 7, 1)
    assert views.large and not views.encoded.any()
    views.encode()
    again = make_views(items, 7, 1)
    again.encode()
    np.testing.assert_array_equal(views.targets, again.targets)
    for index, kind in enumerate(views.kinds):
        copy = views.copy(index)
        assert copy.shape == items.shape and copy.dtype == np.float32
        assert copy.min() >= 0.0 and copy.max() <= 1.0
        # the targets the chunks encoded are the thumbnails of the whole copy (the same items the model saw)
        np.testing.assert_allclose(views.targets[index], thumbnail(copy, 32).reshape(len(items), -1), atol=1e-6)
        if kind == "on-grid":
            np.testing.assert_allclose(copy * 255.0, np.round(copy * 255.0), atol=1e-3)
        elif kind == "off-grid":
            assert np.abs(copy * 255.0 - np.round(copy * 255.0)).max() > 0.1
            assert not np.array_equal(copy[:64], copy[64:128])  # each image has its own draws
            rows = np.array([3, 70, 149])  # any subset of rows is exactly what the whole copy holds there
            np.testing.assert_array_equal(views._chunk(index, rows), copy[rows])
    assert views.kinds.count("clean") == 1 and np.array_equal(views.copy(0), items)


def test_only_the_rows_the_audit_reads_are_queried_and_nothing_changes():
    items, labels = smooth_images(240, (3, 96, 96), seed=1, cells=2)
    w = np.random.default_rng(2).normal(size=(int(np.prod(items.shape[1:])), 10))
    queried = []

    def run(x):
        queried.append(len(x))
        return x.reshape(len(x), -1) @ w

    settings = AuditSettings(decoders=("knn", "krr"), bootstrap=5, max_fit=200, augmentations=1, residues=False)
    views = make_views(items, 4, 1)
    lazy = audit_model(run, views, labels, settings=settings)
    copies = len(views.kinds)
    assert 3 * len(items) <= sum(queried) < copies * len(items)  # every scored row, a draw of the fitting ones
    full = make_views(items, 4, 1)
    every = audit_model(None, full, labels, settings=settings, outputs=full.outputs(run))  # every row queried
    assert lazy.errors.keys() == every.errors.keys()
    for key in lazy.errors:
        np.testing.assert_allclose(lazy.errors[key], every.errors[key], rtol=1e-9, atol=1e-12)


def test_gram_basis_spans_the_covariance_components():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.5, 60)
    rows = rng.normal(size=(300, 60)) * scales @ np.linalg.qr(rng.normal(size=(400, 60)))[0].T  # (300, 400)
    exact, gram = principal_basis(rows, components=20), large_inputs.gram_basis(rows, components=20)
    np.testing.assert_allclose(np.abs(np.sum(exact * gram, axis=0)), 1.0, atol=1e-6)  # same directions, up to sign


def _model(shape: tuple[int, int, int], leaky: bool, path) -> str:
    """Logits = a fixed random projection of the pixels (leaky) or a constant (blind) on a (3, H, W) input."""
    values = int(np.prod(shape))
    rng = np.random.default_rng(3)
    if leaky:
        inits = [numpy_helper.from_array((rng.normal(size=(values, 10)) / np.sqrt(values)).astype(np.float32), "w"),
                 numpy_helper.from_array(np.array([-1, values], np.int64), "s")]
        nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["logits"])]
    else:
        inits = [numpy_helper.from_array(np.zeros((values, 10), np.float32), "w"),
                 numpy_helper.from_array(np.array([-1, values], np.int64), "s"),
                 numpy_helper.from_array(np.arange(10, dtype=np.float32) / 10, "b")]
        nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_a_vet_of_a_large_input_says_so_and_separates_leaky_from_blind(tmp_path):
    shape = (3, 96, 96)
    x, y = smooth_images(200, shape, seed=4, cells=2)  # 12 values per image: 10 projections tell most
    probe = tmp_path / "probe.npz"
    np.savez(probe, x=(x * 255).round().astype(np.uint8), y=y)
    knobs = dict(tests=("leakage",), twin=False, leakage_decoders=("knn",), leakage_augmentations=1,
                 leakage_max_fit=400, leakage_bootstrap=20, augment_seed=2, seed=0)
    gains = {}
    for leaky in (True, False):
        report = vet(_model(shape, leaky, tmp_path / f"{leaky}.onnx"), probe, **knobs)
        details = report.tests["leakage"].details
        assert "large input (3x96x96" in details["large_input"] and "Gram" in details["large_input"]
        assert details["target"] == "32x32 thumbnail of the 3x96x96 image"
        gains[leaky] = details["gain_db"]
    assert gains[True] > gains[False] + 1.0, gains
    assert gains[False] < 0.5, gains
