"""The mutation fuzzer (tools/fuzz/, benchmarks/fuzz.py): a CI-sized campaign finds no defect.

The campaign runs in a fresh interpreter (it forks one child per mutant, which must not
happen from pytest's process with its threads), ~100 mutants on 2 workers.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tools.fuzz import DEFECT_TYPES, MODEL_MUTATORS, PROBE_MUTATORS, make_mutant
from tools.fuzz.corpus import seed_models

ROOT = Path(__file__).resolve().parents[1]


def test_ci_sized_campaign_finds_no_defect(tmp_path):
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "fuzz.py"),
        "--mutants",
        "100",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
        "--name",
        "ci",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "ci.json").read_text())
    assert data["tried"] == 100 and data["ran_fine"] + data["clean_errors"] + data["mutants_with_defects"] == 100
    assert data["by_step"]["safemodel"].get("ok", 0) > 0 and data["clean_errors"] > 0  # both outcomes are reached
    assert all(data["selftest_detected"].values()), data["selftest_detected"]  # every detector sees its defect
    assert data["read_outside_detection"] == "inotify"
    assert data["defect_total"] == 0, json.dumps(data["examples"], indent=1)[:4000]
    assert set(data["defects"]) == set(DEFECT_TYPES)
    assert "Defects by type" in (tmp_path / "ci.md").read_text()


@pytest.mark.parametrize("name", sorted(MODEL_MUTATORS), ids=str)
def test_every_model_mutator_changes_the_model(name):
    import onnx

    from tools.fuzz.mutators import Setup

    seeds = seed_models()
    changed = 0
    for index in range(5):
        proto = onnx.ModelProto()
        proto.CopyFrom(seeds["tiny-linear"])
        MODEL_MUTATORS[name](proto, random.Random(index), Setup())
        changed += proto.SerializeToString() != seeds["tiny-linear"].SerializeToString()
    assert changed >= 3


def test_mutants_are_deterministic_and_cover_probe_sets():
    import numpy as np

    from tools.fuzz.corpus import probe_arrays
    from tools.fuzz.hostile import npz_bytes

    seeds, base = seed_models(), probe_arrays(60)
    npz = npz_bytes(x=base[0], y=base[1], class_names=base[2])
    first = [make_mutant(i, 3, seeds, base, npz) for i in range(40)]
    again = [make_mutant(i, 3, seeds, base, npz) for i in range(40)]
    assert [m.model_bytes for m in first] == [m.model_bytes for m in again]
    assert {m.kind for m in first} == {"model", "probe"}
    assert {m.mutator for m in first if m.kind == "probe"} <= set(PROBE_MUTATORS)
    assert np.mean([m.kind == "model" for m in first]) > 0.5
