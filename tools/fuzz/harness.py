"""The forked child: SafeModel load + predict, vet, and `edgeguard vet` through click on one mutant."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tools.fuzz.corpus import ALLOC_MARKERS
from tools.fuzz.mutators import byte_mutate
from tools.fuzz.sandbox import Mutant

# -- the child ---------------------------------------------------------------------------------------


def classify(error: BaseException) -> tuple[str, str]:
    from edgeguard.errors import EdgeguardError

    message = " ".join(str(error).split())[:300]
    lowered = message.lower()
    if isinstance(error, MemoryError) or any(marker in lowered for marker in ALLOC_MARKERS):
        return "memory", f"{type(error).__name__}: {message}"
    if isinstance(error, EdgeguardError):
        return "clean", f"{type(error).__name__}: {message[:160]}"
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return "non-edgeguard-exception", f"{type(error).__name__}{place}: {message}"


def _step(outcome: dict[str, Any], name: str, function: Callable[[], Any]) -> Any:
    try:
        value = function()
    except CliDefect as defect:
        outcome["steps"][name] = {"result": defect.kind, "detail": defect.detail}
        return None
    except BaseException as error:  # noqa: B036 - the fuzzer records everything
        kind, detail = classify(error)
        outcome["steps"][name] = {"result": kind, "detail": detail}
        return None
    outcome["steps"][name] = {"result": "ok"}
    return value


def run_child(mutant: Mutant, model: Path, probe: Path, cwd: Path, cli: bool, leakage: bool) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")
    os.chdir(cwd)
    outcome: dict[str, Any] = {"steps": {}}
    if mutant.kind == "selftest":  # a deliberate defect: the detectors must see it
        _step(outcome, "selftest", lambda: SELFTESTS[mutant.mutator](cwd))
        return outcome
    from edgeguard import SafeModel
    from edgeguard.data import load_dataset
    from edgeguard.vetting import vet

    if mutant.kind == "probe":
        _step(outcome, "data", lambda: load_dataset(probe, image_size=(28, 28)))
    else:

        def load_and_predict() -> Any:
            safe = SafeModel(model, providers=["CPUExecutionProvider"], threads=1)
            shape = safe.info.input_shape
            if np.prod(shape) <= 1 << 20:
                low, high = safe.info.pixel_range
                safe.predict(np.full(shape, low, dtype=np.float32))
                batch = np.random.default_rng(0).uniform(low, high, (3, *shape)).astype(np.float32)
                safe.predict(batch)
            return safe

        safe = _step(outcome, "safemodel", load_and_predict)
        if safe is not None:
            rng = random.Random(mutant.index)
            _step(outcome, "hostile-input", lambda: _expect_refusal(safe, _hostile_input(rng, safe.info.input_shape)))
            _step(outcome, "filter-spec", lambda: _filter_spec_run(model, safe, rng))
    knobs: dict[str, Any] = {"tests": ()}
    if leakage:
        knobs = {
            "tests": ("leakage",),
            "leakage_min_samples": 40,
            "leakage_max_fit": 80,
            "leakage_bootstrap": 20,
            "twin": False,  # the hostile graph's twin would be trained on every mutant: the audit itself is the target
        }
    _step(outcome, "vet", lambda: vet(model, probe, min_per_class=1, probe_limit=60, **knobs))
    if cli:
        from click.testing import CliRunner

        from edgeguard.cli import main

        def run_cli() -> None:
            result = CliRunner().invoke(
                main,
                [
                    "vet",
                    str(model),
                    "-p",
                    str(probe),
                    "--format",
                    "json",
                    "-q",
                    "--tests",
                    "leakage",
                    "--probe-limit",
                    "60",
                ],
            )
            text = (result.stdout or "") + (result.stderr or "")
            code = result.exit_code
            if "Traceback" in text:
                raise CliDefect("traceback", f"exit {code}: {text[-200:]}")
            if code == 1:
                try:
                    verdict = json.loads(result.stdout).get("verdict")
                except Exception:
                    verdict = None
                if verdict != "vicious":
                    raise CliDefect("exit-code-1-on-crash", text[-200:])
            elif code not in (0, 2, 3):
                raise CliDefect("bad-exit-code", f"exit {code}: {text[-200:]}")

        try:
            run_cli()
            outcome["steps"]["cli"] = {"result": "ok"}
        except CliDefect as defect:
            outcome["steps"]["cli"] = {"result": defect.kind, "detail": defect.detail}
        except BaseException as error:  # noqa: B036
            kind, detail = classify(error)
            outcome["steps"]["cli"] = {"result": kind, "detail": detail}
    return outcome


def _selftest_memory(cwd: Path) -> None:
    # 4 GiB of address space: refused at once under the RLIMIT_AS (it is larger than the margin), while
    # without the limit it would succeed lazily (overcommit) and the selftest would report "not seen"
    block = np.empty(4 << 30, dtype=np.uint8)
    block[:: 1 << 20] = 1


SELFTESTS: dict[str, Callable[[Path], Any]] = {
    "read-outside-folder": lambda cwd: (cwd / "canary.bin").read_bytes(),
    "non-edgeguard-exception": lambda cwd: {}["missing"],
    "hang": lambda cwd: time.sleep(1e6),
    "signal": lambda cwd: os.kill(os.getpid(), signal.SIGSEGV),
    "memory": _selftest_memory,
}


def _hostile_input(rng: random.Random, shape: tuple[int, ...]) -> Any:
    """An input predict must refuse (InvalidInputError), never release or crash on."""
    good = np.zeros((2, *shape), dtype=np.float32)
    masked = np.ma.masked_array(good.copy(), mask=np.zeros(good.shape, bool))
    masked[0, 0, 0, 0] = 1000.0
    masked[0, 0, 0, 0] = np.ma.masked
    choices = [
        lambda: masked,
        lambda: np.full_like(good, np.nan),
        lambda: np.full_like(good, np.inf),
        lambda: good.astype(np.float16),
        lambda: good.astype(object),
        lambda: good.astype(np.complex64),
        lambda: np.zeros((0, *shape), np.float32),
        lambda: np.zeros(shape[1:], np.float32),
        lambda: good.tolist(),
        lambda: np.zeros((2, *shape[:-1], shape[-1] + 1), np.float32),
        lambda: np.full_like(good, 1e30),
        lambda: np.full_like(good, -0.5),
        lambda: np.asfortranarray(good)[..., ::-1] + 2.0,
        lambda: "not an array",
        lambda: np.broadcast_to(np.float32(7.0), good.shape),
        lambda: good.astype(np.float64) + 3.0,
        lambda: good.astype(np.uint8) + 200,
    ]
    return rng.choice(choices)()


_SPEC_PARTS = (
    "softmax",
    "sigmoid",
    "round:2",
    "round:-1",
    "round:99",
    "truncate:3",
    "top_k:0",
    "top_k:3",
    "top_k:1e9",
    "argmax",
    "gaussian:0",
    "gaussian:nan",
    "laplace:1",
    "label_preserving:3",
    "clipped_laplace:c=5,eps=1",
    "clipped_laplace:c=-1,eps=inf",
    "rounded",
    "high_confidence",
    "reverse_sigmoid",
    "class_labels",
    "label_confidence:4",
    "none",
    "",
    ">",
    "bogus:1",
    "round:",
    "softmax>softmax",
    "round:2:3",
    "top_k:3,k=4",
)


def _filter_spec_run(model: Path, safe: Any, rng: random.Random) -> None:
    """A random filter-spec string: parse it, build SafeModel with it, predict (or a clean refusal)."""
    from edgeguard import SafeModel
    from edgeguard.filters import default_filter_specs, parse_filter_spec

    if rng.random() < 0.5:  # a spec the bench uses (valid), so the release path itself runs
        text = rng.choice([spec.text for spec in default_filter_specs(safe.info.output_kind)])
    else:
        text = ">".join(rng.choice(_SPEC_PARTS) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.15:
        text, _ = byte_mutate(text.encode(), rng)
        text = text.decode("latin-1")
    spec = parse_filter_spec(text)
    if spec.is_raw:
        return
    filtered = SafeModel(model, filters=spec.build(), providers=["CPUExecutionProvider"], threads=1)
    low, high = filtered.info.pixel_range
    released = filtered.predict(
        np.random.default_rng(1).uniform(low, high, (2, *filtered.info.input_shape)).astype(np.float32)
    )
    if isinstance(released, np.ndarray) and released.dtype.kind == "f" and not np.isfinite(released).all():
        raise CliDefect("released-invalid-input", f"filters {text!r} released non-finite values")


def _expect_refusal(safe: Any, x: Any) -> None:
    """The refusal (InvalidInputError) is the expected outcome ("ok"); a release is a defect."""
    from edgeguard.errors import InvalidInputError

    try:
        safe.predict(x)
    except InvalidInputError:
        return
    raise CliDefect("released-invalid-input", f"predict accepted a hostile input ({type(x).__name__})")


class CliDefect(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, " ".join(detail.split())[:300]
