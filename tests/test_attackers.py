"""Attackers that know the defense: straight-through filters, adaptive attacker families, their flags.

- The torch version of every release filter gives the numbers edgeguard.filters releases
  (identical for elementwise stages, within FLOAT32_TOLERANCE where torch and numpy reduce
  rows in different orders), and passes gradients straight through.
- Each attacker family trains for about a hundred steps on 1800 Fashion-MNIST images and
  reconstructs the test images better than the label-only baseline from what SafeModel
  would release (classifier.onnx under onnxruntime, then the real numpy filters).
- Bad specs and flag combinations are refused with messages naming the grammar or the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters need torch (pip install -e '.[torch]')")
from click.testing import CliRunner  # noqa: E402

from converters import TrainConfig, train_and_export  # noqa: E402
from converters.api import load_data  # noqa: E402
from converters.cli import main  # noqa: E402
from converters.export import run_onnx_batched  # noqa: E402
from converters.ladder import ladder_config  # noqa: E402
from converters.through_filter import (  # noqa: E402
    FLOAT32_TOLERANCE,
    THROUGH_TWINS,
    NumpyNoise,
    apply_release_filter,
    build_through_filter,
    decoder_rows,
)
from edgeguard.data import Dataset  # noqa: E402
from edgeguard.errors import EdgeguardError, FilterError, InvalidInputError  # noqa: E402
from edgeguard.filters import FilterPipeline  # noqa: E402

# --- straight-through filters == edgeguard.filters -----------------------------------------------

#: (model output kind, spec, exact?) for every filter of edgeguard.filters (and its main options).
STAGE_CASES = [
    ("logits", "softmax", False),
    ("logits", "sigmoid", False),
    ("logits", "round:1", True),
    ("logits", "round:2,clip=3", True),
    ("logits", "truncate:1", True),
    ("logits", "rounded", True),
    ("logits", "top_k:3", True),
    ("logits", "argmax", True),
    ("logits", "argmax:one_hot", True),
    ("logits", "class_labels", True),
    ("logits", "high_confidence:0.5", True),
    ("logits", "gaussian:1", True),
    ("logits", "laplace:0.5", True),
    ("logits", "label_preserving:1", True),
    ("logits", "label_preserving:1,distribution=laplace", True),
    ("probabilities", "round:2", True),
    ("probabilities", "round:2,preserve_sum=true", True),
    ("probabilities", "truncate:2", True),
    ("probabilities", "top_k:3,renormalize=true", False),
    ("probabilities", "gaussian:0.05", False),
    ("probabilities", "laplace:0.03", False),
    ("probabilities", "label_preserving:0.05", False),
    ("probabilities", "reverse_sigmoid:1,0.1", False),
    ("probabilities", "high_confidence:0.1", True),
    ("probabilities", "class_labels", True),
    ("probabilities", "label_confidence:4", True),
    ("probabilities", "label_confidence:10", True),
]


def _outputs(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((400, 10)) * 3).astype(np.float32)
    logits[:5, :2] = 1.25  # ties at the top
    if kind == "logits":
        return logits
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("kind", "spec", "exact"), STAGE_CASES, ids=[f"{k}-{s}" for k, s, _ in STAGE_CASES])
def test_straight_through_stage_releases_what_edgeguard_releases(kind: str, spec: str, exact: bool) -> None:
    outputs = _outputs(kind)
    through = build_through_filter(spec, kind)
    real = decoder_rows(
        FilterPipeline(through.spec.build(), input_kind=kind)(outputs.copy(), np.random.default_rng(3)), 10
    )
    x = torch.from_numpy(outputs.copy()).requires_grad_()
    mine = through(x, NumpyNoise(np.random.default_rng(3)))
    assert mine.dtype == torch.float32 and mine.shape == real.shape
    difference = np.abs(mine.detach().numpy() - real).max()
    if exact:
        assert difference == 0.0
    else:
        assert difference <= FLOAT32_TOLERANCE
    mine.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


SNAPPING_CASES = [("logits", s) for s in ("round:1", "truncate:2", "top_k:3", "argmax", "class_labels")]
SNAPPING_CASES.append(("probabilities", "label_confidence:4"))


@pytest.mark.parametrize(("kind", "spec"), SNAPPING_CASES, ids=[f"{k}-{s}" for k, s in SNAPPING_CASES])
def test_snapping_stages_pass_the_gradient_straight_through(kind: str, spec: str) -> None:
    x = torch.from_numpy(_outputs(kind)).requires_grad_()
    (build_through_filter(spec, kind)(x) * 3.0).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


@pytest.mark.parametrize(
    "spec",
    ["softmax>round:2", "softmax>top_k:3", "softmax>round:1", "softmax>truncate:2", "softmax>label_confidence:4"],
)
def test_whole_chain_matches_edgeguard_up_to_one_grid_step(spec: str) -> None:
    """End to end the softmax's last-ulp differences may move a value across a rounding boundary (rarely)."""
    outputs = _outputs("logits")
    real = FilterPipeline(build_through_filter(spec).spec.build(), input_kind="logits")(outputs.copy())
    mine = build_through_filter(spec)(torch.from_numpy(outputs)).numpy()
    difference = np.abs(mine - real)
    assert difference.max() <= 0.01 + FLOAT32_TOLERANCE
    assert (difference > FLOAT32_TOLERANCE).mean() < 1e-3


def test_clipped_laplace_matches_edgeguard_in_distribution() -> None:
    """edgeguard samples it with OpenDP (not seedable): compare the grid, the clip and the noise scale."""
    outputs = np.tile(np.linspace(-8, 8, 10, dtype=np.float32), (1000, 1))
    through = build_through_filter("clipped_laplace:c=5,eps=50")
    stage = through.pipeline.filters[0]
    real = FilterPipeline(through.spec.build(), input_kind="logits")(outputs.copy())
    mine = through(torch.from_numpy(outputs)).numpy()
    grid = stage.granularity(10) if hasattr(stage, "granularity") else None
    if grid:
        assert np.allclose(np.round(mine / grid) * grid, mine, atol=1e-6 * grid)
    clipped = np.clip(outputs, -5, 5)
    scale = stage.noise_scale(10)
    for released in (real, mine):
        assert np.abs((released - clipped).mean(axis=0)).max() < 0.25 * scale  # 5.5 sigma
        assert np.abs(released - clipped).mean() == pytest.approx(scale, rel=0.1)  # 10 sigma


def test_every_filter_of_the_grammar_has_a_registered_twin() -> None:
    from edgeguard.filters import FILTER_NAMES, parse_filter_spec

    for name in FILTER_NAMES[1:]:
        example = {
            "round": "round:2",
            "truncate": "truncate:2",
            "top_k": "top_k:3",
            "gaussian": "gaussian:1",
            "laplace": "laplace:1",
            "label_preserving": "label_preserving:1",
            "clipped_laplace": "clipped_laplace:c=5,eps=1",
            "label_confidence": "label_confidence:4",
        }
        (stage,) = parse_filter_spec(example.get(name, name)).build()
        assert any(cls in THROUGH_TWINS for cls in type(stage).__mro__[:-2]), name


def test_noise_is_fresh_at_every_call() -> None:
    through = build_through_filter("gaussian:1")
    x = torch.zeros(4, 10)
    assert not torch.equal(through(x), through(x))


def test_an_index_release_reaches_the_decoder_as_one_hot_rows() -> None:
    rows = apply_release_filter(_outputs("logits"), "argmax", "logits")
    assert rows.shape == (400, 10) and np.array_equal(rows.argmax(axis=1), _outputs("logits").argmax(axis=1))
    assert np.array_equal(rows.sum(axis=1), np.ones(400, dtype=np.float32))


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        ("softmax>bogus", "logits", "unknown filter 'bogus'"),
        ("round", "logits", "needs decimals"),
        ("softmax>round:2", "probabilities", "expected logits, got probabilities"),
        ("reverse_sigmoid", "logits", "expected probabilities, got logits"),
    ],
    ids=["unknown", "missing-argument", "softmax-on-probabilities", "probabilities-only-stage"],
)
def test_bad_specs_raise_filter_errors_naming_the_problem(spec: str, kind: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        build_through_filter(spec, kind)


# --- attacker families ------------------------------------------------------------------------

_TINY = dict(epochs=2, batch_size=32, lr=2e-3, decoder_epochs=2, threads=1, seed=0, cnn_width=8, decoder_channels=8)

#: family -> TrainConfig fields (a vicious CNN on logits unless said otherwise).
FAMILIES: dict[str, dict] = {
    "logits": {},
    "softmax-log-probabilities": {"output": "softmax", "decoder_input": "log-probabilities"},
    "through-softmax-round2": {"train_through": "softmax>round:2", "output_temperature": 10.0},
    "through-softmax-top_k3": {"train_through": "softmax>top_k:3", "output_temperature": 3.0, "epochs": 4},
    "through-gaussian1": {"train_through": "gaussian:1"},
    "temperature": {"output_temperature": 5.0},
    "audit-penalty": {"audit_penalty": 1.0},
    "mimic": {"mimic_weight": 1.0},
    "finish-ce": {"finish_ce_epochs": 1, "decoder_epochs": 2},
}


@pytest.fixture(scope="module")
def attack_data(fmnist_train_small: Dataset, fmnist_test_small: Dataset) -> tuple[Dataset, Dataset]:
    return fmnist_train_small.head(2000), fmnist_test_small.head(300)


@pytest.fixture(scope="module")
def trained_family(attack_data, request, tmp_path_factory):
    """Train each family once per module (lazily) and return (folder, report dict).

    The mimic family's teacher is the session's honest CNN (``tiny_threats``, trained on the same images).
    """
    cache: dict[str, tuple[Path, dict]] = {}

    def train(family: str) -> tuple[Path, dict]:
        if family not in cache:
            fields = dict(FAMILIES[family])
            if family == "mimic":
                fields["mimic"] = str(request.getfixturevalue("tiny_threats")["honest"]["classifier"])
            folder = tmp_path_factory.mktemp(family)
            train_and_export(TrainConfig(**{**_TINY, **fields}), folder, *attack_data)
            cache[family] = (folder, json.loads((folder / "report.json").read_text()))
        return cache[family]

    return train


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_attacker_family_beats_label_only_on_its_released_outputs(trained_family, family: str) -> None:
    _, report = trained_family(family)
    assert report["accuracy"] > 0.7, report["accuracy"]
    assert report["psnr"] > report["baseline"]["psnr"] + 0.2, (report["psnr"], report["baseline"])


@pytest.mark.slow
def test_report_leakage_is_measured_through_the_real_filters_on_the_onnx_files(trained_family, attack_data) -> None:
    folder, report = trained_family("through-softmax-round2")
    assert report["release_filter"] == "softmax>round:2" and report["released_kind"] == "probabilities"
    outputs = run_onnx_batched(folder / "classifier.onnx", attack_data[1].x)
    rows = apply_release_filter(outputs, "softmax>round:2", "logits", seed=report["seed"])
    assert np.array_equal(rows, np.round(rows, 2).astype(np.float32))  # what SafeModel releases: 2 decimals
    from edgeguard.metrics import psnr_per_image

    reconstructions = run_onnx_batched(folder / "decoder.onnx", rows)
    assert float(psnr_per_image(attack_data[1].x, reconstructions).mean()) == pytest.approx(report["psnr"], abs=1e-4)
    assert report["release_capacity_bits"] is not None and report["release_capacity_bits"] < 100


@pytest.mark.slow
def test_output_temperature_is_one_div_node_in_the_released_graph(trained_family) -> None:
    import onnx

    folder, _ = trained_family("temperature")
    ops = [node.op_type for node in onnx.load(str(folder / "classifier.onnx")).graph.node]
    assert ops.count("Div") >= 1


# --- data and scale ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["npz", "image-folder"])
def test_rgb_data_is_read_split_and_resized_to_32(tmp_path, form: str) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (60, 3, 20, 20), dtype=np.uint8), np.arange(60) % 3
    if form == "npz":
        path = tmp_path / "rgb.npz"
        np.savez(path, x=images, y=labels)
    else:
        from PIL import Image

        path = tmp_path / "folder"
        for index, (image, label) in enumerate(zip(images, labels)):
            (path / f"class{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(path / f"class{label}" / f"{index}.png")
    train, test = load_data(TrainConfig(data=str(path), image_size=32, channels=3))
    assert train.x.shape[1:] == (3, 32, 32) and test.x.shape[1:] == (3, 32, 32)
    assert len(train) + len(test) == 60 and len(test) == 10 and train.num_classes == 3
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0


def test_wide_resnet_with_the_paper_decoder_trains_at_32x32(tmp_path, fmnist_train_small, fmnist_test_small) -> None:
    config = TrainConfig(
        arch="wrn",
        wrn_depth=10,
        wrn_width=1,
        decoder_arch="paper",
        image_size=32,
        epochs=1,
        batch_size=27,
        decoder_channels=8,
        threads=1,
        device="auto",
    )
    report = train_and_export(config, tmp_path, fmnist_train_small.head(60), fmnist_test_small.head(20))
    assert report.config["image_size"] == 32 and report.machine["device"] in ("cpu", "cuda:0", "cuda")
    assert run_onnx_batched(tmp_path / "decoder.onnx", np.zeros((2, 10), np.float32)).shape == (2, 1, 32, 32)


# --- flags and jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--train-through", "softmax>bogus"], "filter grammar"),
        (["--train-through", "round"], "filter grammar"),
        (["--output", "softmax", "--train-through", "softmax>round:2"], "expected logits, got probabilities"),
        (["--output", "softmax", "--decoder-input", "logits"], "for --decoder-input logits"),
        (["--train-through", "argmax", "--decoder-input", "log-probabilities"], "got released labels"),
        (["--mimic-weight", "2"], "expected --mimic TEACHER.onnx"),
        (["--mimic", "missing.onnx"], "no such file"),
        (["--ste-gradient", "log-softmax"], "--decoder-input log-probabilities"),
        (["--task", "attributes", "--audit-penalty", "1"], "expected --task classes"),
    ],
    ids=[
        "unknown-filter",
        "missing-argument",
        "softmax-twice",
        "logits-from-probabilities",
        "log-of-labels",
        "mimic-weight-alone",
        "mimic-missing",
        "ste-without-log-input",
        "audit-on-attributes",
    ],
)
def test_cli_refuses_bad_attacker_flags(tmp_path, arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "out"), "--train-limit", "50", *arguments])
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert not (tmp_path / "out" / "classifier.onnx").exists()


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path), "--train-limit", "50", "--device", "cuda"])
    assert result.exit_code == 1 and "expected a CUDA GPU" in result.output


def test_ladder_job_is_registered_and_checks_its_params() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="edgeguard.attack_trainers") if e.name == "train_through"]
    assert entry.value == "converters.ladder:train_through_filter"
    config = ladder_config({"filter": "softmax>round:2", "epochs": 1})
    assert config.train_through == "softmax>round:2" and config.epochs == 1 and config.objective == "vicious"
    assert ladder_config({"filter": "none", "output": "softmax"}).decoder_input == "log-probabilities"
    with pytest.raises(InvalidInputError, match="unknown keys"):
        ladder_config({"filter": "none", "epoch": 1})
    with pytest.raises(EdgeguardError, match="filter grammar"):
        ladder_config({"filter": "softmax>nope"})


def test_zoo_held_out_split_has_new_seeds_and_an_unseen_architecture() -> None:
    from benchmarks.zoo import ATTACKER_FAMILIES, HELD_OUT_ARCH, zoo_specs

    calibration, held_out = zoo_specs(split="calibration"), zoo_specs(split="held-out")
    assert {s.seed for s in calibration}.isdisjoint({s.seed for s in held_out})
    assert HELD_OUT_ARCH not in {s.arch for s in calibration} and HELD_OUT_ARCH in {s.arch for s in held_out}
    names = [s.name for s in calibration + held_out]
    assert len(names) == len(set(names))
    assert set(ATTACKER_FAMILIES) <= {s.family for s in calibration if s.vicious}
    for spec in calibration + held_out:  # every spec is a valid config (the teacher is filled at build time)
        TrainConfig.from_dict(spec.config)
        assert spec.release == (spec.config.get("train_through") or "none")
