"""Forked workers under a memory limit and a timeout: start, reap, kill."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tools.fuzz.harness import run_child
from tools.fuzz.sandbox import Mutant, make_mutant, materialise
from tools.fuzz.watch import Watch


def memory_limit(extra_bytes: int) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024 + extra_bytes
    except OSError:
        pass
    return 4 << 30


def start(
    index, seed, seeds, probe_base, probe_npz, root, limit, cli_every, leakage_every
) -> dict[int, dict[str, Any]]:
    sandbox = root / f"m{index}"
    mutant = make_mutant(index, seed, seeds, probe_base, probe_npz, sandbox)
    return spawn(mutant, sandbox, limit, index % cli_every == 0, index % leakage_every == 0)


def spawn(mutant: Mutant, sandbox: Path, limit: int, cli: bool, leakage: bool) -> dict[int, dict[str, Any]]:
    model, probe = materialise(mutant, sandbox)
    watch = Watch([sandbox / "cwd", sandbox / "outside", sandbox / "outside" / "secret.bin"])
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(reader)
            os.setpgid(0, 0)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            outcome = run_child(mutant, model, probe, sandbox / "cwd", cli, leakage)
            payload = json.dumps(outcome).encode()[:60000]
            os.write(writer, payload)
        except BaseException:  # noqa: B036
            code = 70
        finally:
            os._exit(code)
    os.close(writer)
    return {
        pid: {
            "mutant": mutant,
            "sandbox": sandbox,
            "watch": watch,
            "reader": reader,
            "start": time.monotonic(),
            "pid": pid,
            "cli": cli,
        }
    }


def reap(running: dict[int, dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    finished = []
    for pid, job in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            if time.monotonic() - job["start"] > timeout_s:
                kill(job)
                job["hang"] = True
                finished.append(running.pop(pid))
            continue
        job["status"] = status
        finished.append(running.pop(pid))
    for job in finished:
        try:
            job["output"] = read_pipe(job["reader"])
        finally:
            os.close(job["reader"])
        job["opened"] = job["watch"].events()
        job["watch"].close()
        shutil.rmtree(job["sandbox"], ignore_errors=True)
    return finished


def read_pipe(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def kill(job: dict[str, Any]) -> None:
    try:
        os.killpg(job["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(job["pid"], 0)
    except ChildProcessError:
        pass
