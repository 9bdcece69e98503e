"""A mutant and its sandbox: cwd/ with canaries, outside/ with a secret, model/ and the probe set."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.fuzz.corpus import CANARY_NAMES
from tools.fuzz.hostile import EXTERNAL_TRAPS, plant_external_trap
from tools.fuzz.mutators import MODEL_MUTATORS, Setup, byte_mutate
from tools.fuzz.probes import PROBE_MUTATORS

# -- mutants -------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    index: int
    kind: str  # "model" or "probe"
    mutator: str
    seed_model: str
    description: str
    model_bytes: bytes
    setup: Setup
    probe: tuple[str, Any]  # (format, payload)


def make_mutant(
    index: int, seed: int, seeds: dict[str, Any], probe_base: Any, probe_npz: bytes, sandbox: Path | None = None
) -> Mutant:
    """Mutant number ``index`` of the campaign ``seed`` (deterministic but for the sandbox path)."""
    import onnx

    rng = random.Random(f"{seed}:{index}")
    good_probe = ("npz", probe_npz)
    if rng.random() < 0.2:  # a probe-set mutant against a good model
        name = rng.choice(sorted(PROBE_MUTATORS))
        try:
            fmt, payload, what = PROBE_MUTATORS[name](rng, probe_base)
        except Exception as error:  # a mutator bug: fall back to corrupted bytes of the good probe
            data, steps = byte_mutate(probe_npz, rng)
            fmt, payload, what = "npz", data, f"{name} failed ({type(error).__name__}); npz bytes {steps}"
        model_name = rng.choice(["honest", "tiny-linear"])
        return Mutant(
            index, "probe", name, model_name, what, seeds[model_name].SerializeToString(), Setup(), (fmt, payload)
        )
    model_name = rng.choice(sorted(seeds))
    proto = onnx.ModelProto()
    proto.CopyFrom(seeds[model_name])
    setup = Setup(secret=str((sandbox or Path("/nonexistent")) / "outside" / "secret.bin"))
    if model_name == "tiny-external":
        m_external_ok(proto, setup)
    if rng.random() < 0.25:  # byte-level
        data, steps = byte_mutate(proto.SerializeToString(), rng)
        return Mutant(index, "model", "bytes", model_name, steps, data, setup, good_probe)
    names = [rng.choice(sorted(MODEL_MUTATORS)) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    descriptions = []
    for name in names:
        try:
            descriptions.append(MODEL_MUTATORS[name](proto, rng, setup))
        except Exception as error:  # a mutator that cannot apply to this seed: keep what it did
            descriptions.append(f"{name} failed: {type(error).__name__}")
    try:
        data = proto.SerializeToString()
    except Exception:
        data, _ = byte_mutate(seeds[model_name].SerializeToString(), rng)
    return Mutant(index, "model", "+".join(names), model_name, "; ".join(descriptions), data, setup, good_probe)


def m_external_ok(proto: Any, setup: Setup) -> None:
    """Move every initializer of the tiny-external seed to m.onnx.data (the dynamo exporter's layout)."""
    offset = 0
    blob = b""
    for tensor in proto.graph.initializer:
        data = tensor.raw_data
        if not data:
            from onnx import numpy_helper

            data = numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = 1
        for key, value in (("location", "m.onnx.data"), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        blob += data
        offset += len(data)
    setup.files.append(("m.onnx.data", "raw", blob))


def materialise(mutant: Mutant, sandbox: Path) -> tuple[Path, Path]:
    cwd, outside, model_dir = sandbox / "cwd", sandbox / "outside", sandbox / "model"
    for folder in (cwd, outside, model_dir):
        folder.mkdir(parents=True)
    secret = outside / "secret.bin"
    secret.write_bytes(b"SECRET" * 1000)
    for name in CANARY_NAMES:
        (cwd / name).write_bytes(b"CANARY" * 1000)
    model = model_dir / "m.onnx"
    model.write_bytes(mutant.model_bytes)
    for where, kind, payload in mutant.setup.files:
        if kind == "raw":
            (model_dir / where).write_bytes(payload)
            continue
        if where in ("ok", "./ok.bin"):
            (model_dir / "ok.bin").write_bytes(payload)
        elif where in EXTERNAL_TRAPS:
            plant_external_trap(model_dir, where, secret)
    fmt, payload = mutant.probe
    if fmt == "npz":
        probe = sandbox / "probe.npz"
        probe.write_bytes(payload)
    elif fmt == "idx":
        probe = sandbox / "probe"
        probe.mkdir()
        (probe / "t10k-images-idx3-ubyte.gz").write_bytes(payload[0])
        (probe / "t10k-labels-idx1-ubyte.gz").write_bytes(payload[1])
    else:
        probe = sandbox / "probe"
        for name, content in payload.items():
            path = probe / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content == "FIFO":
                os.mkfifo(path)
            elif content == "LINK-ZERO":
                os.symlink("/dev/zero", path)
            else:
                path.write_bytes(content)
    return model, probe
