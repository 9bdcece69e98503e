"""The accuracy the vet credits a model and its twin with (edgeguard.vetting.accuracy): recoverable, not claimed.

The decision raises the excess over the twin for the model's accuracy lead, so a provider would
like its model to *look* less accurate at no real cost: one Add on a class logit lowers top-1
accuracy while its server subtracts the constant again (benchmarks/redteam_hide_accuracy.py). These
tests check that the recoverable accuracy is not moved by such edits (bias, temperature), that it
never falls below top-1, and that the vet measures model and twin with it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _vet_models import linear_classifier, save, write_probe
from onnx import helper, numpy_helper

from edgeguard.vetting import vet
from edgeguard.vetting.accuracy import recoverable_accuracy, top1_accuracy

FAST = {"leakage_augmentations": 1, "leakage_max_fit": 600, "leakage_bootstrap": 50, "augment_seed": 3,
        "leakage_decoders": ("knn",)}


def _logits(n=1000, k=10, signal=2.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n // k)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += signal
    return logits, labels


def test_top1_matches_a_row_at_a_time_oracle():
    logits, labels = _logits(n=200)
    oracle = sum(int(max(range(10), key=lambda j, r=row: r[j]) == y) for row, y in zip(logits, labels)) / 200
    assert top1_accuracy(logits, labels) == pytest.approx(oracle)


@pytest.mark.parametrize(
    "edit",
    [lambda z: z + np.eye(10)[0] * 3.25, lambda z: z * 0.2, lambda z: z * 5.0 - np.arange(10) * 0.7],
    ids=["bias-on-one-class", "temperature", "affine"],
)
def test_a_per_class_bias_or_rescaling_does_not_move_it(edit):
    logits, labels = _logits()
    before = recoverable_accuracy(logits, labels, seed=1)
    after = recoverable_accuracy(edit(logits), labels, seed=1)
    assert after["accuracy"] == pytest.approx(before["accuracy"], abs=0.01)
    if after["top1"] < before["top1"] - 0.1:  # the bias did hide accuracy from top-1 ...
        assert after["accuracy"] > after["top1"] + 0.1  # ... and the probes got it back


def test_it_never_falls_below_top1_and_says_when_probes_cannot_run():
    logits, labels = _logits(n=200)
    record = recoverable_accuracy(logits, labels)
    assert record["accuracy"] >= record["top1"] and set(record) >= {"linear", "knn", "folds"}
    lonely = recoverable_accuracy(logits[:11], np.r_[labels[:10], 5])  # class 0 ten times, class 5 once
    assert lonely["accuracy"] == lonely["top1"] and "too few" in lonely["note"]
    multilabel = recoverable_accuracy(logits[:, :3], (logits[:, :3] > 0).astype(float), task_type="multilabel")
    assert multilabel["accuracy"] == 1.0 and "multilabel" in multilabel["note"]


def _bias_shift(bias: float):
    vector = np.zeros((1, 3), np.float32)
    vector[0, 0] = bias
    nodes = [helper.make_node("Constant", [], ["shift"], value=numpy_helper.from_array(vector)),
             helper.make_node("Add", ["logits", "shift"], ["shifted"])]
    return linear_classifier(extra_nodes=nodes, tail="shifted")


def test_the_vet_measures_model_and_twin_by_recoverable_accuracy(tmp_path):
    pytest.importorskip("torch")
    probe = write_probe(tmp_path / "probe.npz", 600)
    entry = {"threshold": 100.0, "scale": 0.1, "higher_is_vicious": True}
    table = {"source": "test", "tests": {"leakage": entry, "leakage_excess_twin": entry, "finetune": entry},
             "combined": {"min_probe_samples": 500, "require_twin": True}}
    details = {}
    for name, model in (("plain", linear_classifier()), ("shifted", _bias_shift(8.0))):
        report = vet(save(model, tmp_path / f"{name}.onnx"), probe, thresholds=table, **FAST)
        details[name] = report.tests["leakage"].details
    plain, shifted = details["plain"], details["shifted"]
    assert shifted["model_accuracy"] < plain["model_accuracy"] - 0.1  # the edit hides accuracy from top-1
    assert shifted["model_recoverable_accuracy"] == pytest.approx(plain["model_recoverable_accuracy"], abs=0.02)
    for d in (plain, shifted):
        assert d["accuracy_gap"] == pytest.approx(d["model_recoverable_accuracy"] - d["twin_recoverable_accuracy"])
        assert d["twin"]["recoverable_accuracy"] >= d["twin"]["accuracy"]
        assert "recoverable" in d["accuracy_measure"]


def _random_feature_mlp(features: np.ndarray, labels: np.ndarray, hidden: int = 128, seed: int = 0):
    """input -> Gemm(random W1) -> Relu -> Gemm(W2 fitted by ridge on the hidden values) -> logits."""
    import onnx

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(features.shape[1]), size=(features.shape[1], hidden)).astype(np.float32)
    h = np.maximum(features @ w1, 0.0)
    targets = np.eye(labels.max() + 1)[labels] * 2.0 - 1.0
    w2 = np.linalg.solve(h.T @ h + 1.0 * np.eye(hidden), h.T @ targets).astype(np.float32) * 4.0
    nodes = [helper.make_node("Gemm", ["input", "W1"], ["hidden_pre"]), helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
             helper.make_node("Gemm", ["hidden", "W2"], ["output"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", features.shape[1]])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", w2.shape[1]])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_head_is_the_last_dense_layer_reached_through_affine_and_normalising_ops_only():
    from converters.attacks.accuracy_edits import bias_shift, head_without_gemm, swap_unsure
    from edgeguard.vetting.accuracy import output_head

    linear = output_head(linear_classifier())
    assert linear.trusted and linear.value is None  # a linear model on the pixels: nothing learned to probe
    assert output_head(linear_classifier(output_kind="probabilities")).trusted  # Softmax is a normalisation
    rng = np.random.default_rng(0)
    mlp = _random_feature_mlp(rng.normal(size=(40, 8)).astype(np.float32), np.arange(40) % 4)
    assert output_head(mlp).to_dict() == {"value": "hidden", "trusted": True, "reason": ""}
    shifted = output_head(bias_shift(mlp, bias=2.0))  # an Add of a constant: the linear output probe undoes it
    assert shifted.trusted and shifted.value.endswith("hidden")
    # a weight passed through an Identity (a constant-only computation) is still a weight
    moved = _random_feature_mlp(rng.normal(size=(40, 8)).astype(np.float32), np.arange(40) % 4)
    moved.graph.node.insert(0, helper.make_node("Identity", ["W2"], ["W2_moved"]))
    moved.graph.node[-1].input[1] = "W2_moved"
    assert output_head(moved).value == "hidden"
    for edited in (swap_unsure(mlp, margin=1.0), head_without_gemm(mlp), head_without_gemm(mlp, weight_from_input=True),
                   _dummy_dense_after(swap_unsure(mlp, margin=1.0))):
        head = output_head(edited)
        assert not head.trusted and head.value is None and "could hide accuracy" in head.reason


def _dummy_dense_after(model):
    """``model`` with an identity Gemm appended (so a dense layer, not the edit, comes last)."""
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{out}_pre" if o == out else o for o in node.output]
    classes = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    model.graph.initializer.append(numpy_helper.from_array(np.eye(classes, dtype=np.float32), "dummy_identity"))
    model.graph.node.append(helper.make_node("Gemm", [f"{out}_pre", "dummy_identity"], [out]))
    return model


def test_residual_and_silu_layers_keep_the_measure_trusted():
    """A residual Add and x * Sigmoid(x) between two learned layers are layer ops, not edits."""
    import onnx

    from edgeguard.vetting.accuracy import output_head

    rng = np.random.default_rng(1)
    w = {n: numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), n)
         for n, shape in (("W1", (8, 8)), ("W2", (8, 8)), ("W3", (8, 3)))}
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["a"]), helper.make_node("Sigmoid", ["a"], ["gate"]),
             helper.make_node("Mul", ["a", "gate"], ["silu"]), helper.make_node("MatMul", ["silu", "W2"], ["b"]),
             helper.make_node("Add", ["b", "silu"], ["residual"]), helper.make_node("Relu", ["residual"], ["r"]),
             helper.make_node("MatMul", ["r", "W3"], ["output"])]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 3])], list(w.values()))
    head = output_head(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert head.trusted and head.value == "r"


def test_an_edit_on_top_of_the_logits_cannot_hide_accuracy_from_the_head_probe():
    """swap_unsure (the red team of the output probes): top-1 and the output probes fall by points, the
    head probe does not, and the edit makes the measure untrusted anyway."""
    from sklearn.datasets import load_digits

    from converters.attacks.accuracy_edits import hide_accuracy, swap_unsure
    from edgeguard.vetting.accuracy import output_head
    from edgeguard.vetting.running import head_inputs, session

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    fit, probe = slice(0, 800), slice(800, 1800)
    model = _random_feature_mlp(x[fit], y[fit])

    def outputs(m):
        return session(m.SerializeToString()).run(None, {"input": x[probe]})[0]

    plain = recoverable_accuracy(outputs(model), y[probe], head=head_inputs(model, output_head(model), x[probe]))
    assert plain["head"] is not None
    hidden = hide_accuracy("swap-unsure", np.asarray(outputs(model)), y[probe], plain["top1"] - 0.15)
    swapped_model = swap_unsure(model, margin=hidden["margin"])
    swapped = recoverable_accuracy(outputs(swapped_model), y[probe], head=head_inputs(model, output_head(model), x[probe]))
    assert swapped["top1"] <= plain["top1"] - 0.15  # the edit hides accuracy from top-1 ...
    assert max(swapped["linear"], swapped["knn"]) < plain["top1"] - 0.02  # ... and from the output probes ...
    assert swapped["accuracy"] >= plain["accuracy"] - 0.03  # ... but not from the head (read below the edit)
    assert not output_head(swapped_model).trusted  # and the vet does not trust the measure of the edited graph
