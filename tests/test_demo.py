"""``edgeguard demo`` and its bundled assets: the quick demo end to end through CliRunner.

One quick demo runs per session, on the bundled Fashion-MNIST subset (the data variable
points at an empty folder, so the fallback path is the one exercised); the Fashion-MNIST
path is covered by checking that the bundled subset *is* the first test images, so the
quick demo sees the same images either way.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeguard.cli import main
from edgeguard.data import FASHION_MNIST_CLASSES, FASHION_MNIST_ENV
from edgeguard.demo.assets import (
    ASSET_DIR,
    LICENSE_FILE,
    MANIFEST_FILE,
    MODEL_FILES,
    SUBSET_FILE,
    load_bundled_subset,
    load_demo_data,
    load_manifest,
    verify_assets,
)
from edgeguard.demo.run import EXPECTED_VERDICTS, FILTERS, DemoSettings, run_demo
from edgeguard.errors import DataError

_MODEL_NAMES = [name for pair in MODEL_FILES.values() for name in pair]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``edgeguard demo --quick --format json`` on the bundled subset: the CliRunner result, JSON summary, folder."""
    empty = tmp_path_factory.mktemp("no-fashion-mnist")
    out = tmp_path_factory.mktemp("demo") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FASHION_MNIST_ENV, str(empty))
        result = CliRunner().invoke(
            main, ["demo", "--quick", "--out", str(out), "--format", "json", "--threads", "1", "--seed", "0"]
        )
    assert result.exit_code == 0, result.output
    return {"result": result, "summary": json.loads(result.stdout), "out": out}


# --- the demo's outputs ----------------------------------------------------------------------------


def test_quick_demo_used_the_bundled_subset_when_fashion_mnist_is_missing(quick_demo: dict) -> None:
    data = quick_demo["summary"]["data"]
    assert data["kind"] == "bundled"
    assert data["images"] == 3000
    assert FASHION_MNIST_ENV in data["why"]
    assert quick_demo["summary"]["settings"]["quick"] is True


def test_quick_demo_flags_the_vicious_model_and_passes_the_honest_one(quick_demo: dict) -> None:
    summary = quick_demo["summary"]
    assert summary["as_expected"] is True and summary["exit_code"] == 0 and summary["problems"] == []
    for name, expected in EXPECTED_VERDICTS.items():
        entry = summary["vet"][name]
        assert entry["verdict"] == expected, entry["reasons"]
        assert entry["tests"]["leakage"]["status"] == "ran"
        report = json.loads((quick_demo["out"] / f"vet_{name}.json").read_text())
        assert report["verdict"] == expected
        assert report["model_sha256"] == hashlib.sha256((ASSET_DIR / entry["file"]).read_bytes()).hexdigest()
    assert summary["vet"]["vicious"]["likelihood"] > 0.5 > summary["vet"]["honest"]["likelihood"]


def test_quick_demo_writes_a_labelled_attack_png(quick_demo: dict) -> None:
    from PIL import Image

    path = quick_demo["out"] / "attack.png"
    assert Path(quick_demo["summary"]["files"]["figure"]) == path
    assert 30_000 < path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # 6 rows of 10 tiles of 84 px (28 px at 3x) next to a label column
    assert width >= 10 * 84 + 300 and height >= 6 * 84
    assert pixels.std() > 30  # images on white, not a blank canvas


def test_quick_demo_table_has_the_promised_filters(quick_demo: dict) -> None:
    summary = quick_demo["summary"]
    rows = {(row["model"], row["filter"]): row for row in summary["filters"]}
    assert [row["filter"] for row in summary["filters"] if row["model"] == "vicious"] == list(FILTERS)
    assert ("honest", "none") in rows
    for row in summary["filters"]:
        assert 0.5 < row["accuracy"] <= 1.0
    raw, label = rows[("vicious", "none")], rows[("vicious", "argmax")]
    assert label["accuracy"] == raw["accuracy"]  # argmax keeps the top-1 class
    assert math.isclose(label["capacity_bits"], math.log2(len(FASHION_MNIST_CLASSES)), rel_tol=1e-6)
    assert raw["capacity_bits"] == "inf"
    # the attack works on the raw logits and argmax stops it (up to the label-only baseline)
    assert summary["attack"]["vicious_raw"]["psnr"] > summary["attack"]["label_only"]["psnr"] + 2.0
    assert summary["attack"]["vicious_raw"]["psnr"] > summary["attack"]["honest_raw"]["psnr"] + 2.0
    assert abs(label["adaptive_psnr_gain_db"]) < 0.5
    csv_lines = (quick_demo["out"] / "filters.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(summary["filters"]) and csv_lines[0].startswith("model,filter,")


def test_quick_demo_human_summary_and_progress(quick_demo: dict) -> None:
    text = (quick_demo["out"] / "summary.txt").read_text()
    for needle in ("1. The attack", "2. Vetting", "3. Output filters", "VICIOUS", "HONEST", *FILTERS):
        assert needle in text
    assert "NOT AS EXPECTED" not in text
    result = quick_demo["result"]
    assert "[demo]" in result.stderr and "[demo]" not in result.stdout
    assert json.loads((quick_demo["out"] / "summary.json").read_text())["vet"] == quick_demo["summary"]["vet"]


# --- the bundled assets ----------------------------------------------------------------------------


def test_manifest_sha256s_match_the_bundled_files() -> None:
    manifest = load_manifest()
    for name in [*_MODEL_NAMES, SUBSET_FILE, LICENSE_FILE]:
        entry = manifest["files"][name]
        data = (ASSET_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(data) == entry["bytes"], name
    assert verify_assets() == {name: entry["sha256"] for name, entry in manifest["files"].items()}
    total = sum(path.stat().st_size for path in ASSET_DIR.rglob("*") if path.is_file())
    assert total <= 4_200_000, f"bundled assets take {total} bytes"
    assert manifest["command"].startswith("python -m converters")
    for name in EXPECTED_VERDICTS:
        assert manifest["models"][name]["config"]["objective"] == name


def test_fashion_mnist_licence_ships_next_to_the_subset() -> None:
    text = (ASSET_DIR / LICENSE_FILE).read_text()
    assert "MIT License" in text and "Copyright (c) 2017 Zalando SE" in text
    assert (ASSET_DIR / SUBSET_FILE).parent == (ASSET_DIR / LICENSE_FILE).parent


def test_bundled_subset_is_the_first_fashion_mnist_test_images() -> None:
    subset = load_bundled_subset()
    assert subset.x.shape == (3000, 1, 28, 28) and subset.x.dtype == np.float32
    assert subset.class_names == FASHION_MNIST_CLASSES
    assert np.bincount(subset.y, minlength=10).min() >= 250  # every class well covered for the vet
    data, source = load_demo_data(limit=3000)
    if source["kind"] != "fashion-mnist":
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    np.testing.assert_array_equal(data.x, subset.x)
    np.testing.assert_array_equal(data.y, subset.y)


def test_modified_asset_is_refused(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    shutil.copytree(ASSET_DIR, assets)
    target = assets / MODEL_FILES["vicious"][0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        run_demo(tmp_path / "out", quick=True, asset_dir=assets)
    assert not (tmp_path / "out" / "attack.png").exists()


def test_missing_manifest_is_an_error_exit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=MANIFEST_FILE):
        verify_assets(tmp_path)


def test_demo_never_imports_the_converters() -> None:
    code = (
        "import sys, edgeguard.cli, edgeguard.demo.run, edgeguard.demo.assets, edgeguard.demo.figure; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'converters'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


# --- settings and the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quick", "available", "sizes"),
    [(True, 3000, (500, 1500)), (False, 10000, (1000, 4000)), (False, 3000, (1000, 2000))],
    ids=["quick", "full-fashion-mnist", "full-bundled"],
)
def test_settings_fit_the_data(quick: bool, available: int, sizes: tuple[int, int]) -> None:
    settings = DemoSettings.for_mode(quick, available)
    assert (settings.eval_size, settings.attack_size) == sizes
    assert settings.eval_size + settings.attack_size <= available
    assert settings.attack_epochs == (1 if quick else 3)


def test_help_lists_the_flags() -> None:
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    for flag in ("--out", "--quick", "--seed", "--format", "--threads"):
        assert flag in result.output


@pytest.mark.parametrize(
    "args", [["--threads", "0"], ["--format", "yaml"], ["--seed", "x"]], ids=["threads", "format", "seed"]
)
def test_bad_flags_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 4, result.output
    assert not (tmp_path / "out").exists()
