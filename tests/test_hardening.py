"""Hostile files and inputs (issue 13): one regression test per defect found by the fuzzing campaign.

Every public entry point either works or raises an EdgeguardError subclass; no file outside
the model's folder is read; sizes are checked before allocating; the CLI never exits 1 on a
crash. Models are built with onnx.helper (milliseconds); nothing here trains.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from _vet_models import full_report
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeguard import (
    ClippedLaplace,
    DataError,
    EdgeguardError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
    ModelRefusedError,
    OutputFilter,
    PrivacyBudgetExceededError,
    Round,
    SafeModel,
    Softmax,
    UnsafeModelError,
    model_sha256,
)
from edgeguard.cli import main
from edgeguard.data import load_idx, load_image_folder, load_npz
from edgeguard.model import load_model
from edgeguard.vetting import static_audit
from tools.fuzz.hostile import idx_header, loop_node, plant_external_trap, png_header, runtime_sized_nodes

SHAPE = (1, 4, 4)
CLASSES = ("a", "b", "c")
BIAS = np.array([0.5, -1.0, 2.0], dtype=np.float32)  # what the folder's data file holds
CANARY = np.array([111.0, 222.0, 333.0], dtype=np.float32)  # what the working directory's file holds


def _props(**overrides: str) -> dict[str, str]:
    props = {
        "task_type": "multiclass",
        "class_names": json.dumps(list(CLASSES)),
        "input_shape": json.dumps(list(SHAPE)),
        "pixel_range": "[0.0, 1.0]",
        "output_kind": "logits",
    }
    props.update(overrides)
    return props


def _model(nodes, initializers=(), *, sparse=(), functions=(), props=None, outputs=None, out_dim=3, opset=17):
    """image (N, 1, 4, 4) -> Flatten -> MatMul W (16 x 3) -> ... -> scores (N, 3)."""
    weight = numpy_helper.from_array(np.full((16, 3), 0.01, dtype=np.float32), "W")
    base = [
        helper.make_node("Flatten", ["image"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    graph = helper.make_graph(
        base + list(nodes),
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SHAPE])],
        outputs or [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", out_dim])],
        [weight, *initializers],
        sparse_initializer=list(sparse),
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    helper.set_model_props(model, _props() if props is None else props)
    return model


def _linear(**kwargs):
    bias = numpy_helper.from_array(BIAS, "B")
    return _model([helper.make_node("Add", ["logits", "B"], ["scores"])], [bias], **kwargs)


def _save(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _external(name: str, dims, location: str, *, dtype=TensorProto.FLOAT, offset="0", length=None):
    tensor = TensorProto(name=name, data_type=dtype, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    itemsize = 8 if dtype == TensorProto.INT64 else 4
    entries = [("location", location), ("offset", offset)]
    entries.append(("length", str(int(np.prod(dims)) * itemsize) if length is None else length))
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


# -- one builder per tensor-bearing field, each naming "bias.bin" as external data ------------------


def _initializer():
    return _model([helper.make_node("Add", ["logits", "B"], ["scores"])], [_external("B", [3], "bias.bin")])


def _sparse_values():
    values = _external("B", [3], "bias.bin")  # a sparse tensor is named by its values
    indices = numpy_helper.from_array(np.arange(3, dtype=np.int64), "B_indices")
    sparse = helper.make_sparse_tensor(values, indices, [3])
    return _model([helper.make_node("Add", ["logits", "B"], ["scores"])], sparse=[sparse])


def _sparse_indices():
    # indices external: the file holds int64 indices 0, 1, 2 (24 bytes)
    values = numpy_helper.from_array(BIAS, "B")
    indices = _external("B_indices", [3], "bias.bin", dtype=TensorProto.INT64)
    sparse = helper.make_sparse_tensor(values, indices, [3])
    return _model([helper.make_node("Add", ["logits", "B"], ["scores"])], sparse=[sparse])


def _constant_value():
    constant = helper.make_node("Constant", [], ["B"], value=_external("c", [3], "bias.bin"))
    return _model([constant, helper.make_node("Add", ["logits", "B"], ["scores"])])


def _constant_sparse_value():
    values = _external("c_values", [3], "bias.bin")
    indices = numpy_helper.from_array(np.arange(3, dtype=np.int64), "c_indices")
    constant = helper.make_node("Constant", [], ["B"], sparse_value=helper.make_sparse_tensor(values, indices, [3]))
    return _model([constant, helper.make_node("Add", ["logits", "B"], ["scores"])])


def _subgraph():
    def branch(name, tensor):
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [3])
        return helper.make_graph([helper.make_node("Constant", [], [f"{name}_out"], value=tensor)], name, [], [out])

    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node(
        "If",
        ["cond"],
        ["B"],
        then_branch=branch("then", _external("t", [3], "bias.bin")),
        else_branch=branch("else", numpy_helper.from_array(np.zeros(3, np.float32), "e")),
    )
    return _model([node, helper.make_node("Add", ["logits", "B"], ["scores"])], [cond])


def _function():
    body = [
        helper.make_node("Constant", [], ["b"], value=_external("fb", [3], "bias.bin")),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    function = helper.make_function("local", "AddBias", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    return _model([helper.make_node("AddBias", ["logits"], ["scores"], domain="local")], functions=[function])


FIELDS = {
    "initializer": _initializer,
    "sparse-values": _sparse_values,
    "sparse-indices": _sparse_indices,
    "constant-value": _constant_value,
    "constant-sparse-value": _constant_sparse_value,
    "if-subgraph": _subgraph,
    "model-local-function": _function,
}


def _data_for(field: str, values: np.ndarray) -> bytes:
    return np.arange(3, dtype=np.int64).tobytes() if field == "sparse-indices" else values.tobytes()


@pytest.mark.parametrize("field", list(FIELDS), ids=list(FIELDS))
def test_external_data_is_read_from_the_models_folder_only(tmp_path, monkeypatch, field):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "bias.bin"  # in the working directory, where onnxruntime used to look
    canary.write_bytes(_data_for(field, CANARY) if field != "sparse-indices" else np.full(3, 7, np.int64).tobytes())
    path = _save(FIELDS[field](), tmp_path / "model" / "m.onnx")
    dynamic = field == "if-subgraph"

    # the folder lacks the file: a clean error, never the canary's bytes
    with pytest.raises(ModelLoadError, match="bias.bin"):
        SafeModel(path, allow_dynamic_ops=dynamic)
    assert {f.code for f in static_audit(path) if f.severity == "critical"} == {"onnx-invalid"}

    # the folder has it: the model runs on the folder's bytes, and the digest covers them
    (tmp_path / "model" / "bias.bin").write_bytes(_data_for(field, BIAS))
    model = SafeModel(path, allow_unsafe_raw_outputs=True, allow_dynamic_ops=dynamic)
    raw = model.predict_unfiltered_unsafe(np.zeros(SHAPE, np.float32))
    np.testing.assert_allclose(raw, BIAS)
    loaded = load_model(path, allow_dynamic_ops=dynamic)
    assert loaded.external_files == ("bias.bin",) and b"bias.bin" not in loaded.serialized
    before = model.model_sha256
    changed = np.array([2, 1, 0], np.int64).tobytes() if field == "sparse-indices" else (BIAS * 2).tobytes()
    (tmp_path / "model" / "bias.bin").write_bytes(changed)
    assert model_sha256(path) != before


def test_a_verdict_does_not_cover_changed_external_data(tmp_path):
    path = _save(_initializer(), tmp_path / "m.onnx")
    (tmp_path / "bias.bin").write_bytes(BIAS.tobytes())
    verdict = full_report(path, "honest")
    SafeModel(path, verdict=verdict)
    (tmp_path / "bias.bin").write_bytes(CANARY.tobytes())
    with pytest.raises(ModelRefusedError, match="changed since it was vetted"):
        SafeModel(path, verdict=verdict, on_vicious="refuse")


# -- external-data tricks --------------------------------------------------------------------------


def _trap(location: str):
    """Plant the fuzzer's trap named ``location`` (a secret lies next to the model's folder)."""

    def plant(folder: Path) -> str:
        secret = folder.parent / "secret.bin"
        secret.write_bytes(CANARY.tobytes())
        plant_external_trap(folder, location, secret)
        return location

    return plant


def _trick_model(tmp_path: Path, location: str, **entries: str) -> Path:
    model = _model([helper.make_node("Add", ["logits", "B"], ["scores"])], [_external("B", [3], location, **entries)])
    return _save(model, tmp_path / "model" / "m.onnx")


TRICKS = {
    "fifo": (_trap("fifo.bin"), {}, UnsafeModelError),
    "dev-zero-symlink": (_trap("link-zero.bin"), {}, UnsafeModelError),
    "dev-zero-absolute": (lambda folder: "/dev/zero", {}, UnsafeModelError),
    "symlink-outside": (_trap("link-outside.bin"), {}, UnsafeModelError),
    "hard-link": (_trap("hard.bin"), {}, UnsafeModelError),
    "directory": (_trap("dir.bin"), {}, UnsafeModelError),
    "symlinked-directory": (_trap("link-dir/secret.bin"), {}, UnsafeModelError),
    "nul-byte": (lambda folder: "bias.bin\0../../etc/passwd", {}, UnsafeModelError),
    "long-component": (lambda folder: "x" * 300, {}, UnsafeModelError),
    "offset-past-end": (lambda folder: "bias.bin", {"offset": "100"}, ModelLoadError),
    "length-past-end": (lambda folder: "bias.bin", {"length": "400"}, ModelLoadError),
    "negative-offset": (lambda folder: "bias.bin", {"offset": "-4"}, ModelLoadError),
    "non-numeric-offset": (lambda folder: "bias.bin", {"offset": "12abc"}, ModelLoadError),
    "truncated-file": (
        lambda folder: (folder / "short.bin").write_bytes(b"\0" * 5) and "short.bin",
        {},
        ModelLoadError,
    ),
}


@pytest.mark.parametrize("trick", list(TRICKS), ids=list(TRICKS))
def test_external_data_tricks_are_refused_cleanly(tmp_path, trick):
    make, entries, error = TRICKS[trick]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "bias.bin").write_bytes(BIAS.tobytes())
    path = _trick_model(tmp_path, make(folder), **entries)
    with pytest.raises(error):
        SafeModel(path)
    with pytest.raises(EdgeguardError):
        model_sha256(path)
    critical = {f.code for f in static_audit(path) if f.severity == "critical"}
    assert critical in ({"external-data-escape"}, {"onnx-invalid"}), critical


# -- declared sizes and metadata -------------------------------------------------------------------


def _duplicate_output():
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    return _linear(outputs=[out, out])


def _padded_conv():
    """A consistent graph (onnxruntime would run it) whose Conv output is 3 x 32772^2 floats per sample."""
    weight = numpy_helper.from_array(np.ones((3, 1, 1, 1), np.float32), "K")
    nodes = [
        helper.make_node("Conv", ["image", "K"], ["c"], pads=[1 << 14] * 4),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, _props())
    return model


BAD_DECLARATIONS = {
    "conv-padded-2^14": _padded_conv,
    "output-dim-2^31": lambda: _linear(out_dim=1 << 31, props={}),
    "output-dim-0": lambda: _linear(out_dim=0, props={}),
    "input-shape-short": lambda: _linear(props=_props(input_shape="[1, 4]")),
    "input-shape-overflow": lambda: _linear(props=_props(input_shape="[1e999, 4, 4]")),
    "input-shape-huge": lambda: _linear(props=_props(input_shape="[1, 100000, 100000]")),
    "nested-json": lambda: _linear(props=_props(class_names="[" * 100_000 + "]" * 100_000)),
    "class-names-object": lambda: _linear(props=_props(class_names='{"a": 1}')),
    "duplicate-output": _duplicate_output,
    "huge-initializer-dims": lambda: _model([], [TensorProto(name="big", data_type=1, dims=[1 << 20, 1 << 20])]),
    "negative-dims": lambda: _model([], [TensorProto(name="neg", data_type=1, dims=[-1, 3])]),
}


@pytest.mark.parametrize("case", list(BAD_DECLARATIONS), ids=list(BAD_DECLARATIONS))
def test_bad_declarations_raise_model_load_error(tmp_path, case):
    path = _save(BAD_DECLARATIONS[case](), tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="expected"):
        SafeModel(path)


# -- control flow and run-time sizes -----------------------------------------------------------------


def _loop(trip_count: int = 1 << 62):
    count = numpy_helper.from_array(np.array(trip_count, dtype=np.int64), "M")
    cond = numpy_helper.from_array(np.array(True), "C")
    return _model([loop_node("M", "C", "logits", "scores")], [count, cond])


def _runtime_sized(op: str):
    shape = [helper.make_node("Shape", ["logits"], ["s"])]
    if op == "Resize":
        nodes = [helper.make_node("Resize", ["logits", "", "", "s"], ["scores"])]
    else:
        nodes = runtime_sized_nodes(op, "logits", "s", "scores")
    consts = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    return _model(shape + nodes, consts, opset=18)


DYNAMIC = {
    "loop-huge-trip-count": _loop,
    **{op: (lambda op=op: _runtime_sized(op)) for op in ("ConstantOfShape", "Expand", "Tile", "Range", "Resize")},
}


@pytest.mark.parametrize("case", list(DYNAMIC), ids=list(DYNAMIC))
def test_unbounded_ops_are_refused_by_default(tmp_path, case):
    path = _save(DYNAMIC[case](), tmp_path / "m.onnx")
    op = "Loop" if case.startswith("loop") else case
    with pytest.raises(UnsafeModelError, match=f"{op}.*allow_dynamic_ops=True"):
        SafeModel(path)
    assert "unbounded-op" in {f.code for f in static_audit(path) if f.severity == "critical"}


def test_a_huge_loop_allowed_by_the_flag_stops_at_the_deadline(tmp_path):
    path = _save(_loop(), tmp_path / "m.onnx")
    model = SafeModel(path, allow_dynamic_ops=True, run_deadline_s=0.3)
    assert model.run_deadline_s == 0.3
    with pytest.raises(InferenceError, match="deadline"):
        model.predict(np.zeros(SHAPE, np.float32))


def test_small_constant_shapes_are_allowed(tmp_path):
    shape = numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "shape")
    model = _model([helper.make_node("Expand", ["logits", "shape"], ["scores"])], [shape])
    assert SafeModel(_save(model, tmp_path / "m.onnx")).run_deadline_s is None


# -- inputs ----------------------------------------------------------------------------------------


def test_masked_arrays_are_refused(tmp_path):
    model = SafeModel(_save(_linear(), tmp_path / "m.onnx"))
    x = np.ma.masked_array(np.zeros((1, *SHAPE), np.float32), mask=False)
    x[0, 0, 0, 0] = 1000.0
    x[0, 0, 0, 0] = np.ma.masked
    with pytest.raises(InvalidInputError, match="masked"):
        model.predict(x)


class _Leaky(OutputFilter):
    name = "leaky"

    def apply(self, outputs, rng, *, user_id=None):
        raise PrivacyBudgetExceededError(f"spent; outputs were {outputs[0, 0]:.6f}")


def test_budget_errors_never_quote_outputs(tmp_path):
    model = SafeModel(_save(_linear(), tmp_path / "m.onnx"), filters=[_Leaky()])
    with pytest.raises(PrivacyBudgetExceededError) as caught:
        model.predict(np.zeros(SHAPE, np.float32))
    assert "0.500000" not in str(caught.value) and "leaky" in str(caught.value)
    budgeted = SafeModel(tmp_path / "m.onnx", filters=[ClippedLaplace(clip=5.0, epsilon=1.0, budget=1.0)])
    budgeted.predict(np.zeros(SHAPE, np.float32))
    with pytest.raises(PrivacyBudgetExceededError, match="epsilon"):  # edgeguard's own message is kept
        budgeted.predict(np.zeros(SHAPE, np.float32))


# -- readers ---------------------------------------------------------------------------------------


def _idx(dims, data: bytes, code: int = 0x08) -> bytes:
    return idx_header(code, dims) + data


def test_idx_gzip_bomb_is_capped(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGUARD_MAX_DATA_BYTES", str(1 << 20))
    images = tmp_path / "images.gz"
    with gzip.open(images, "wb") as handle:  # 16 MiB of zeros in a few KiB, header says 4 MiB
        handle.write(_idx([4, 1024, 1024], b""))
        for _ in range(16):
            handle.write(b"\0" * (1 << 20))
    labels = tmp_path / "labels.gz"
    labels.write_bytes(gzip.compress(_idx([4], bytes(4))))
    with pytest.raises(DataError, match="at most"):
        load_idx(images, labels)


def test_idx_header_dimensions_do_not_overflow(tmp_path):
    images = tmp_path / "images"
    images.write_bytes(_idx([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b"\0" * 64))
    labels = tmp_path / "labels"
    labels.write_bytes(_idx([1], b"\0"))
    with pytest.raises(DataError, match="data bytes"):
        load_idx(images, labels)


@pytest.mark.parametrize("side", [20000, 5000], ids=["pil-bomb", "over-edgeguard-cap"])
def test_huge_images_in_a_probe_folder_are_data_errors(tmp_path, side):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.png").write_bytes(png_header(side, side))
    with pytest.raises(DataError, match="pixels"):
        load_image_folder(tmp_path)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _truncate(path: Path, size: int) -> Path:
    path.write_bytes(path.read_bytes()[:size])
    return path


def _unclosed_npy_header(path: Path) -> Path:
    """An .npz whose x.npy header never closes its shape tuple (numpy raises tokenize.TokenError)."""
    import zipfile

    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4, \n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 32)
        archive.writestr("y.npy", b"")
    return path


BAD_NPZ = {
    "empty": lambda p: _truncate(_npz(p, x=np.zeros(1)), 0),
    "truncated": lambda p: _truncate(_npz(p, x=np.zeros((10, 4, 4), np.uint8), y=np.zeros(10, int)), 300),
    "string-labels": lambda p: _npz(p, x=np.zeros((2, 4, 4), np.uint8), y=np.array(["cat", "dog"])),
    "float-labels": lambda p: _npz(p, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0.0, 2.5])),
    "nan-pixels": lambda p: _npz(p, x=np.full((2, 4, 4), np.nan, np.float32), y=np.array([0, 1])),
    # found by benchmarks/fuzz.py: a corrupt npy header (numpy raised tokenize.TokenError)
    "npy-header-unclosed": _unclosed_npy_header,
    # found by benchmarks/fuzz.py: labels beyond the class names gave an IndexError in the vet
    "class-names-short": lambda p: _npz(
        p, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 9]), class_names=np.array(["a"])
    ),
}


@pytest.mark.parametrize("case", list(BAD_NPZ), ids=list(BAD_NPZ))
def test_bad_npz_probe_sets_are_data_errors(tmp_path, case):
    path = BAD_NPZ[case](tmp_path / "probe.npz")
    with pytest.raises(DataError, match="expected"):
        load_npz(path)


def test_whole_number_float_labels_are_accepted(tmp_path):
    data = load_npz(_npz(tmp_path / "p.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0.0, 2.0])))
    assert data.y.dtype == np.int64 and list(data.y) == [0, 2]


# -- CLI -------------------------------------------------------------------------------------------


def _probe(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return _npz(tmp_path / "probe.npz", x=rng.integers(0, 255, (30, 4, 4), dtype=np.uint8), y=np.arange(30) % 3)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_cli_maps_a_crash_to_exit_2_with_one_line(tmp_path, monkeypatch, debug):
    def crash(*args, **kwargs):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr("edgeguard.model.load_model", crash)
    model = _save(_linear(), tmp_path / "m.onnx")
    args = (["--debug"] if debug else []) + ["vet", str(model), "-p", str(_probe(tmp_path)), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "unexpected ZeroDivisionError: boom second line" in result.stderr
    assert ("Traceback" in result.stderr) is debug


@pytest.mark.parametrize("case", ["duplicate-output", "input-shape-short", "nested-json"], ids=str)
def test_cli_vet_of_malformed_models_exits_2(tmp_path, case):
    model = _save(BAD_DECLARATIONS[case](), tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["vet", str(model), "-p", str(_probe(tmp_path)), "-q"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# -- issue 10, item 4: external data vetted from another working directory ----------------------------


def test_external_data_model_vetted_from_another_directory_passes_the_checker(tmp_path, monkeypatch):
    folder = tmp_path / "export"
    folder.mkdir()
    model = _linear()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((16, 3), 0.01, np.float32), "W"))
    # the layout torch's dynamo exporter writes: m.onnx + m.onnx.data, locations relative to the model
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = {f.code: f.severity for f in static_audit(folder / "m.onnx")}
    assert "checker-failed" not in found and found.get("external-data") == "info", found
    assert SafeModel(folder / "m.onnx").predict(np.zeros(SHAPE, np.float32)) == 2


# -- the two escapes the fuzzing campaign left (issue 21) --------------------------------------------


@pytest.mark.parametrize("name", [b"image", b"scores", b"Flatten", b"multiclass"], ids=lambda n: n.decode())
def test_a_name_that_is_not_utf8_is_a_model_load_error(tmp_path, name):
    """A flipped bit in a name: protobuf hands it over as bytes, onnx.helper raised UnicodeDecodeError."""
    data = _linear().SerializeToString()
    assert name in data
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(name, b"\xff" + name[1:]))
    for filters in (None, [Softmax(), Round(2)]):  # the fused release builds nodes from the graph's names
        with pytest.raises(ModelLoadError, match="UTF-8"):
            SafeModel(path, filters=filters)
    with pytest.raises(ModelLoadError, match="UTF-8"):
        load_model(path)
    assert {f.code for f in static_audit(path) if f.severity == "critical"} == {"onnx-invalid"}


class _Secret(BaseException):
    """A filter's own BaseException subclass."""


class _Picky(BaseException):
    """One whose constructor wants two arguments."""

    def __init__(self, text, value):
        super().__init__(text, value)


class _Blurts(OutputFilter):
    name = "blurts"

    def __init__(self, kind):
        self.kind = kind

    def apply(self, outputs, rng, *, user_id=None):
        text = f"outputs were {outputs[0, 0]:.6f}"
        raise self.kind(text, outputs[0, 0]) if self.kind is _Picky else self.kind(text)


@pytest.mark.parametrize("kind", [_Secret, _Picky, SystemExit, KeyboardInterrupt], ids=lambda k: k.__name__)
def test_a_filters_base_exception_keeps_its_type_and_loses_its_values(tmp_path, kind):
    model = SafeModel(_save(_linear(), tmp_path / "m.onnx"), filters=[_Blurts(kind)])
    with pytest.raises(kind) as caught:
        model.predict(np.zeros(SHAPE, np.float32))  # the raw outputs are BIAS: 0.5, -1, 2
    error = caught.value
    shown = " ".join(map(str, (error, *error.args, getattr(error, "code", ""))))
    assert "0.5" not in shown and "blurts" in shown and "withheld" in shown
    assert error.__context__ is None and error.__cause__ is None
