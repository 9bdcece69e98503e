"""Dataset readers and model metadata: formats, round trips and error messages."""

from __future__ import annotations

import gzip
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeguard.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    Dataset,
    load_dataset,
    load_fashion_mnist,
    load_idx,
    load_image_folder,
    load_npz,
    validation_split,
)
from edgeguard.errors import DataError, DataNotFoundError, EdgeguardError, ModelLoadError, UnsafeModelError
from edgeguard.model import ModelInfo, load_proto


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture()
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8), np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_idx_round_trip(tmp_path, tiny_images, compress):
    images, labels = tiny_images
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    data = load_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"train-labels-idx1-ubyte{suffix}")
    assert data.x.shape == (6, 1, 28, 28) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[:, 0] * 255, images)
    np.testing.assert_array_equal(data.y, labels)
    # The same folder read as "Fashion-MNIST" through the flag and through the environment variable.
    assert len(load_fashion_mnist("train", root=tmp_path)) == 6
    assert len(load_dataset(tmp_path)) == 6


def test_fashion_mnist_env_override(tmp_path, tiny_images, monkeypatch):
    images, labels = tiny_images
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, True)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    data = load_fashion_mnist("test", limit=4)
    assert len(data) == 4 and data.class_names == FASHION_MNIST_CLASSES


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist("train", root=tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, EdgeguardError)


@pytest.mark.parametrize(
    "payload, match",
    [(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x00", "truncated"), (b"PK\x03\x04", "IDX file")],
    ids=["truncated", "not-idx"],
)
def test_corrupt_idx_is_a_clear_error(tmp_path, payload, match):
    (tmp_path / "images").write_bytes(payload)
    (tmp_path / "labels").write_bytes(payload)
    with pytest.raises(DataError, match=match):
        load_idx(tmp_path / "images", tmp_path / "labels")


def test_npz_round_trip_and_errors(tmp_path, tiny_images):
    images, labels = tiny_images
    np.savez(tmp_path / "probe.npz", x=images, y=labels, class_names=np.array(["a", "b", "c"]))
    data = load_dataset(tmp_path / "probe.npz")
    assert data.x.shape == (6, 1, 28, 28) and data.class_names == ("a", "b", "c") and data.num_classes == 3
    np.savez(tmp_path / "multi.npz", x=images, y=np.eye(3)[labels])
    assert load_npz(tmp_path / "multi.npz").multilabel
    np.savez(tmp_path / "bad.npz", images=images)
    with pytest.raises(DataError, match="expected arrays 'x' and 'y'"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "range.npz", x=images.astype(np.float32), y=labels)
    with pytest.raises(DataError, match=r"pixels in \[0, 1\]"):
        load_npz(tmp_path / "range.npz")
    with pytest.raises(DataNotFoundError):
        load_dataset(tmp_path / "absent.npz")


def test_image_folder_matches_class_names_and_indices(tmp_path, tiny_images):
    from PIL import Image

    images, labels = tiny_images
    folders = {0: "T-shirt_top", 1: "1", 2: "Pullover"}  # a sanitised name, an index, a plain name
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / folders[int(label)]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    data = load_image_folder(tmp_path, class_names=FASHION_MNIST_CLASSES)
    order = np.argsort(data.y, kind="stable")
    assert sorted(data.y.tolist()) == sorted(labels.tolist())
    assert data.x.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(np.sort(data.x.sum(axis=(1, 2, 3))), np.sort(images.sum(axis=(1, 2)) / 255.0), rtol=1e-5)
    assert data.y[order][0] == 0
    resized = load_image_folder(tmp_path, class_names=FASHION_MNIST_CLASSES, image_size=(14, 14))
    assert resized.x.shape == (6, 1, 14, 14)
    (tmp_path / "Unknown").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "Unknown" / "x.png")
    with pytest.raises(DataError, match="'Unknown'"):
        load_image_folder(tmp_path, class_names=FASHION_MNIST_CLASSES)


def test_validation_split_is_seeded_disjoint_and_ten_percent():
    train, val = validation_split(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    again, _ = validation_split(1000, 0.1, seed=3)
    other, _ = validation_split(1000, 0.1, seed=4)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    with pytest.raises(DataError, match="fraction"):
        validation_split(10, 1.5)


def test_dataset_rejects_mismatched_labels():
    with pytest.raises(DataError, match="one label per image"):
        Dataset(np.zeros((3, 1, 2, 2), np.float32), np.zeros(2, np.int64))


def test_real_fashion_mnist_when_installed():
    try:
        data = load_fashion_mnist("test", limit=500)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    assert data.x.shape == (500, 1, 28, 28)
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert set(np.unique(data.y)) == set(range(10))


def _tiny_classifier(with_metadata: bool) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((784, 3), np.float32), "w")
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if with_metadata:
        info = ModelInfo("input", "output", (1, 28, 28), ("a", "b", "c"), "multiclass", (0.0, 1.0), "probabilities")
        helper.set_model_props(model, info.to_metadata_props())
    return model


@pytest.mark.parametrize("with_metadata", [True, False], ids=["declared", "from-graph"])
def test_model_info_reads_metadata_or_falls_back_to_graph(tmp_path, with_metadata):
    path = tmp_path / "m.onnx"
    onnx.save(_tiny_classifier(with_metadata), path)
    info = ModelInfo.from_model(load_proto(path))
    assert info.input_shape == (1, 28, 28) and info.num_classes == 3 and info.declared is with_metadata
    assert info.class_names == (("a", "b", "c") if with_metadata else ("0", "1", "2"))
    assert info.output_kind == ("probabilities" if with_metadata else "logits")
    assert json.loads(json.dumps(info.to_dict()))["input_name"] == "input"


def test_load_proto_refuses_external_data_outside_its_folder(tmp_path):
    model = _tiny_classifier(True)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "9408")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx")
    with pytest.raises(UnsafeModelError, match="outside its folder"):
        load_proto(folder / "m.onnx")


def test_load_proto_bad_files(tmp_path):
    with pytest.raises(ModelLoadError, match="there is none"):
        load_proto(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\xff\x00 not a protobuf \x12\x34" * 10)
    with pytest.raises(ModelLoadError, match="valid ONNX"):
        load_proto(tmp_path / "garbage.onnx")
