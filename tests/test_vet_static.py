"""edgeguard.vetting static audit: every bad-file path gives its finding (or error), clean files give none."""

from __future__ import annotations

import onnx
import pytest
from _vet_models import (
    control_flow_classifier,
    custom_domain_classifier,
    external_data_classifier,
    huge_constant_classifier,
    integer_cast_classifier,
    linear_classifier,
    rounding_classifier,
    save,
    shape_cast_classifier,
    write_probe,
)

from edgeguard.errors import ModelLoadError, UnsafeModelError
from edgeguard.model import load_proto
from edgeguard.vetting import static_audit, vet


def codes(findings, min_severity: str = "low") -> dict[str, str]:
    order = ("info", "low", "medium", "high", "critical")
    return {f.code: f.severity for f in findings if order.index(f.severity) >= order.index(min_severity)}


def test_clean_model_has_no_findings_above_info(tmp_path):
    findings = static_audit(save(linear_classifier(), tmp_path / "m.onnx"))
    assert codes(findings) == {}
    assert "model-size" in codes(findings, "info")


def test_missing_file_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="expected an ONNX file"):
        static_audit(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError):
        vet(tmp_path / "nope.onnx", write_probe(tmp_path / "p.npz", 30))


def test_garbage_bytes_are_a_critical_finding(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    findings = static_audit(path)
    assert codes(findings) == {"onnx-invalid": "critical"}
    report = vet(path, write_probe(tmp_path / "p.npz", 30))
    assert report.exit_code == 2 and report.verdict == "inconclusive" and report.tests == {}
    assert len(report.model_sha256) == 64


def test_empty_file_is_a_critical_finding(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert codes(static_audit(path)) == {"onnx-invalid": "critical"}


@pytest.mark.parametrize(
    "location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"], ids=["dotdot", "absolute", "nested"]
)
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 2000)
    path = external_data_classifier(folder, location)
    with pytest.raises(UnsafeModelError):
        load_proto(path)
    findings = static_audit(path)
    assert codes(findings) == {"external-data-escape": "critical"}
    report = vet(path, write_probe(tmp_path / "p.npz", 30))
    assert report.exit_code == 2 and report.critical
    assert report.to_dict()["findings"][0]["code"] == "external-data-escape"


def test_external_data_inside_the_folder_is_info(tmp_path):
    import numpy as np
    from _vet_models import PIXELS, templates

    folder = tmp_path / "model"
    folder.mkdir()
    weights = (templates().reshape(3, -1) * 0.25).astype(np.float32)
    assert weights.size == 3 * PIXELS
    (folder / "weights.bin").write_bytes(weights.tobytes())
    path = external_data_classifier(folder, "weights.bin")
    found = codes(static_audit(path), "info")
    assert found.get("external-data") == "info" and "external-data-escape" not in found


@pytest.mark.parametrize(
    ("builder", "code", "severity"),
    [
        (custom_domain_classifier, "custom-domain", "high"),
        (control_flow_classifier, "control-flow", "high"),
        (rounding_classifier, "non-differentiable-op", "high"),
        (integer_cast_classifier, "non-differentiable-op", "high"),
        (huge_constant_classifier, "tensor-too-large", "critical"),
    ],
    ids=["custom-domain", "control-flow", "round", "cast-int", "huge-constant"],
)
def test_bad_graph_findings(tmp_path, builder, code, severity):
    findings = static_audit(save(builder(), tmp_path / "m.onnx"))
    assert codes(findings).get(code) == severity, codes(findings, "info")


def test_control_flow_condition_is_also_a_comparison(tmp_path):
    found = codes(static_audit(save(control_flow_classifier(), tmp_path / "m.onnx")))
    assert found.get("comparison-op") == "low"


def test_cast_on_a_shape_path_is_not_flagged(tmp_path):
    found = codes(static_audit(save(shape_cast_classifier(), tmp_path / "m.onnx")))
    assert "non-differentiable-op" not in found, found


def test_huge_initializer_is_refused_before_loading(tmp_path):
    model = linear_classifier()
    big = onnx.TensorProto(name="big", data_type=onnx.TensorProto.FLOAT, dims=[1 << 16, 1 << 15])
    model.graph.initializer.append(big)  # declares 8 GiB, stores nothing
    findings = static_audit(save(model, tmp_path / "m.onnx"))
    assert codes(findings).get("tensor-too-large") == "critical"
    assert codes(static_audit(tmp_path / "m.onnx", max_tensor_bytes=1 << 34)).get("tensor-too-large") is None


def test_interface_findings(tmp_path):
    no_meta = codes(static_audit(save(linear_classifier(props=False), tmp_path / "a.onnx")))
    assert no_meta == {"no-metadata": "low"}
    model = linear_classifier()
    for entry in model.metadata_props:
        if entry.key == "output_kind":
            entry.value = "probabilities"  # declared, but the graph ends with Identity
    assert codes(static_audit(save(model, tmp_path / "b.onnx")))["probabilities-without-softmax"] == "medium"
    softmax = codes(static_audit(save(linear_classifier("probabilities"), tmp_path / "c.onnx")))
    assert softmax == {}


def test_checker_failure_is_high(tmp_path):
    model = linear_classifier()
    model.graph.node[1].input[1] = "missing_weight"  # an input nobody produces
    found = codes(static_audit(save(model, tmp_path / "m.onnx")))
    assert found.get("checker-failed") == "high"


def test_findings_are_sorted_most_severe_first(tmp_path):
    findings = static_audit(save(control_flow_classifier(), tmp_path / "m.onnx"))
    ranks = [f.rank for f in findings]
    assert ranks == sorted(ranks, reverse=True)
    assert all(f.fix for f in findings if f.severity in ("high", "critical"))


# -- value flow from the input's shape into the outputs (issue 10) ---------------------------------------


def _batch_size_switch() -> onnx.ModelProto:
    """Where(Equal(Shape(input)[0], 1), -logits, logits)."""
    import numpy as np
    from onnx import helper, numpy_helper

    extra = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Equal", ["n", "one"], ["single"]),
        helper.make_node("Neg", ["logits"], ["flipped"]),
        helper.make_node("Where", ["single", "flipped", "logits"], ["back"]),
    ]
    return linear_classifier(extra_nodes=extra, tail="back")


def _switch_in_a_local_function() -> onnx.ModelProto:
    """The same switch hidden in a model-local function ``evil.Switch(x, logits)``."""
    import numpy as np
    from onnx import helper, numpy_helper

    body = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Equal", ["n", "one"], ["single"]),
        helper.make_node("Neg", ["logits"], ["flipped"]),
        helper.make_node("Where", ["single", "flipped", "logits"], ["y"]),
    ]
    function = helper.make_function(
        "evil", "Switch", ["x", "logits"], ["y"], body, [helper.make_opsetid("", 17)]
    )
    model = linear_classifier(extra_nodes=[helper.make_node("Switch", ["input", "logits"], ["back"], domain="evil")], tail="back")
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("evil", 1))
    return model


@pytest.mark.parametrize("build", [_batch_size_switch, _switch_in_a_local_function], ids=["graph", "local-function"])
def test_shape_value_flow_into_the_output_is_high(tmp_path, build):
    findings = static_audit(save(build(), tmp_path / "m.onnx"))
    assert codes(findings, "high").get("shape-value-flow") == "high"


def test_shape_arguments_of_reshape_are_not_value_flow(tmp_path):
    findings = static_audit(save(shape_cast_classifier(), tmp_path / "m.onnx"))
    assert "shape-value-flow" not in codes(findings, "info")


def test_the_vet_reads_the_model_file_once(tmp_path, monkeypatch):
    """The static audit's load is the one the tests run on (issue 21: vet loaded the model twice)."""
    from _vet_models import linear_classifier, save, write_probe

    import edgeguard.model
    from edgeguard.vetting import vet

    path = save(linear_classifier(), tmp_path / "m.onnx")
    probe = write_probe(tmp_path / "probe.npz", 60)
    calls = []
    real = edgeguard.model.load_model
    monkeypatch.setattr(edgeguard.model, "load_model", lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    report = vet(path, probe, tests=["consistency"], min_per_class=5)
    assert report.model_sha256 == real(path, allow_dynamic_ops=True, require_info=False).sha256
    assert len(calls) == 1
