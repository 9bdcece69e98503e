"""A mutation fuzzer for edgeguard's hostile-input surface: model files and probe sets.

An attacker who read the source sends crafted files. Each *mutant* is a small sandbox::

    sandbox/cwd/       the working directory of the run, with canary files named like data files
    sandbox/outside/   a secret file next to the model's folder (target of ../, symlinks, hard links)
    sandbox/model/     the mutated model (plus its external data, FIFOs, links ...)
    sandbox/probe*     the probe set (a mutated .npz, IDX pair or PNG folder for probe mutants)

and runs in a forked child of a pre-imported parent, under a memory limit (RLIMIT_AS) and a
timeout: ``SafeModel`` load + ``predict``, ``vet`` (cheap settings) and, for some mutants,
``edgeguard vet`` through click. Opening anything under ``cwd/`` or ``outside/`` is seen by
inotify in the parent. Outcomes:

- ``ok`` (ran fine) or ``clean`` (an EdgeguardError with its message);
- defects: ``non-edgeguard-exception``, ``exit-code-1-on-crash``, ``traceback``,
  ``read-outside-folder``, ``hang``, ``memory`` (MemoryError or an allocation failure
  under the limit), ``signal`` (the child died of a signal), ``bad-exit-code``.

Mutators are structure-aware (tensor dims, attributes, external_data entries,
metadata_props, op types, graph outputs/inputs, inserted control flow and run-time
sizes, opsets) and byte-level (bit flips, chunk deletion/duplication, truncation), applied
to real exported models (``edgeguard/assets/*.onnx``) and tiny hand-built ones, and to
probe sets (.npz arrays and bytes, IDX headers and gzip streams, PNG folders).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.fuzz.corpus import probe_arrays, seed_models
from tools.fuzz.harness import SELFTESTS
from tools.fuzz.hostile import npz_bytes
from tools.fuzz.mutators import Setup
from tools.fuzz.sandbox import Mutant
from tools.fuzz.supervisor import kill, memory_limit, reap, spawn, start
from tools.fuzz.watch import Watch

DEFECT_TYPES = (
    "non-edgeguard-exception",
    "exit-code-1-on-crash",
    "traceback",
    "read-outside-folder",
    "hang",
    "memory",
    "signal",
    "bad-exit-code",
    "released-invalid-input",
)


# -- the campaign ------------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    """What a campaign found; ``to_dict()`` is what benchmarks/fuzz.py writes."""

    settings: dict[str, Any]
    tried: int = 0
    ran_fine: int = 0
    clean_errors: int = 0
    defects: Counter = field(default_factory=Counter)
    signals: Counter = field(default_factory=Counter)
    hangs: int = 0
    by_mutator: dict[str, Counter] = field(default_factory=dict)
    by_step: dict[str, Counter] = field(default_factory=dict)
    clean_error_types: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    inotify: bool = True
    selftest: dict[str, bool] = field(default_factory=dict)
    defective_mutants: int = 0
    unclear_messages: Counter = field(default_factory=Counter)  # clean errors without "expected ..., got ..."

    @property
    def defect_count(self) -> int:
        return sum(self.defects.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "tried": self.tried,
            "ran_fine": self.ran_fine,
            "clean_errors": self.clean_errors,
            "mutants_with_defects": self.defective_mutants,
            "defects": {kind: self.defects.get(kind, 0) for kind in DEFECT_TYPES},
            "defect_total": self.defect_count,
            "signals": dict(self.signals),
            "hangs": self.hangs,
            "by_mutator": {name: dict(counts) for name, counts in sorted(self.by_mutator.items())},
            "by_step": {name: dict(counts) for name, counts in sorted(self.by_step.items())},
            "clean_error_types": dict(self.clean_error_types.most_common()),
            "examples": self.examples,
            "clean_errors_without_expected_got": dict(self.unclear_messages.most_common(20)),
            "seconds": round(self.seconds, 1),
            "read_outside_detection": "inotify" if self.inotify else "unavailable",
            "selftest_detected": self.selftest,
        }


def fuzz(
    mutants: int = 1000,
    *,
    seed: int = 0,
    workers: int = 2,
    timeout_s: float = 20.0,
    memory_mb: int = 1536,
    cli_every: int = 4,
    leakage_every: int = 10,
    selftest: bool = True,
    progress: Callable[[str], None] | None = None,
) -> FuzzResult:
    """Run ``mutants`` mutants, ``workers`` forked children at a time (see the module docstring).

    Each child gets RLIMIT_AS = the parent's address space + ``memory_mb`` MiB and is
    killed after ``timeout_s`` seconds (a hang). One mutant in ``cli_every`` also runs
    ``edgeguard vet`` through click; one in ``leakage_every`` runs the leakage audit.
    ``selftest`` first runs one deliberate defect per detector (a read of a canary, a
    KeyError, a hang, a SIGSEGV, a memory blow-up) and records whether each was seen
    (``FuzzResult.selftest``); they are not counted among the mutants.
    """
    import onnxruntime  # noqa: F401
    from click.testing import CliRunner  # noqa: F401
    from PIL import Image, PngImagePlugin, TiffImagePlugin  # noqa: F401

    import edgeguard.cli  # noqa: F401 - pre-import everything the children use
    import edgeguard.vetting.api  # noqa: F401

    try:
        import sklearn.linear_model  # noqa: F401
        import sklearn.neighbors  # noqa: F401
    except ImportError:
        pass
    started = time.perf_counter()
    settings = {
        "mutants": mutants,
        "seed": seed,
        "workers": workers,
        "timeout_s": timeout_s,
        "memory_mb_above_parent": memory_mb,
        "cli_every": cli_every,
        "leakage_every": leakage_every,
        "python": sys.version.split()[0],
    }
    result = FuzzResult(settings)
    probe_watch = Watch([])
    result.inotify = probe_watch.available
    probe_watch.close()
    seeds = seed_models()
    probe_base = probe_arrays(60)
    probe_npz = npz_bytes(x=probe_base[0], y=probe_base[1], class_names=probe_base[2])
    limit = memory_limit(memory_mb << 20)
    root = Path(tempfile.mkdtemp(prefix="edgeguard-fuzz-"))
    running: dict[int, dict[str, Any]] = {}
    next_index = 0
    if selftest:
        probe = FuzzResult({})
        for offset, name in enumerate(SELFTESTS):
            mutant = Mutant(-1 - offset, "selftest", name, "-", name, b"", Setup(), ("npz", probe_npz))
            job = spawn(mutant, root / f"selftest{offset}", limit, False, False)
            while True:
                done = reap(job, min(timeout_s, 3.0))
                if done:
                    _record(probe, done[0])
                    break
                time.sleep(0.01)
        seen = {example["mutator"]: {d["type"] for d in example["defects"]} for example in probe.examples}
        result.selftest = {name: name in seen.get(name, set()) for name in SELFTESTS}
    try:
        while next_index < mutants or running:
            while next_index < mutants and len(running) < workers:
                running.update(
                    start(next_index, seed, seeds, probe_base, probe_npz, root, limit, cli_every, leakage_every)
                )
                next_index += 1
            finished = reap(running, timeout_s)
            for job in finished:
                _record(result, job)
                if progress and result.tried % 50 == 0:
                    progress(f"{result.tried}/{mutants} mutants, {result.defect_count} defect(s)")
            if not finished:
                time.sleep(0.005)
    finally:
        for job in running.values():
            kill(job)
        shutil.rmtree(root, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _record(result: FuzzResult, job: dict[str, Any]) -> None:
    mutant: Mutant = job["mutant"]
    result.tried += 1
    counts = result.by_mutator.setdefault(f"{mutant.kind}:{mutant.mutator.split('+')[0]}", Counter())
    found: list[tuple[str, str, str]] = []  # (defect type, step, detail)
    steps: dict[str, Any] = {}
    if job.get("hang"):
        result.hangs += 1
        found.append(("hang", "-", "killed after the timeout"))
    else:
        status = job["status"]
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            result.signals[name] += 1
            found.append(("signal", "-", name))
        elif os.WEXITSTATUS(status) != 0 or not job["output"]:
            found.append(("non-edgeguard-exception", "-", f"child exited {os.WEXITSTATUS(status)} without a result"))
        else:
            steps = json.loads(job["output"])["steps"]
    for step, entry in steps.items():
        kind = entry["result"]
        result.by_step.setdefault(step, Counter())[kind] += 1
        if kind == "clean":
            error_type, _, message = entry["detail"].partition(": ")
            result.clean_error_types[f"{step}: {error_type}"] += 1
            if "expected" not in message:
                result.unclear_messages[f"{step}: {entry['detail'][:120]}"] += 1
        elif kind != "ok":
            found.append((kind, step, entry.get("detail", "")))
    if job["opened"]:
        found.append(("read-outside-folder", "-", f"opened {sorted(set(job['opened']))[:5]}"))
    if found:
        for kind, _, _ in found:
            result.defects[kind] += 1
        counts["defect"] += 1
        result.defective_mutants += 1
        if len(result.examples) < 60:
            result.examples.append(
                {
                    "index": mutant.index,
                    "kind": mutant.kind,
                    "mutator": mutant.mutator,
                    "seed_model": mutant.seed_model,
                    "description": mutant.description[:300],
                    "defects": [{"type": k, "step": s, "detail": d} for k, s, d in found],
                }
            )
    elif all(entry["result"] == "ok" for entry in steps.values()):
        result.ran_fine += 1
        counts["ok"] += 1
    else:
        result.clean_errors += 1
        counts["clean"] += 1
