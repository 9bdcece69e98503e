"""Job functions for tests/test_jobs.py (importable by worker processes: ``_job_functions:NAME``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def square(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Square ``params["x"]``, write it to artifacts/value.txt."""
    value = params["x"] ** 2
    (artifacts / "value.txt").write_text(str(value))
    return {"value": value, "pid": os.getpid() if params.get("report_pid") else None}


def die_once(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Half-write an artifact, then SIGKILL its own process the first time (``params["marker"]`` absent)."""
    (artifacts / "partial.bin").write_bytes(b"half")
    marker = Path(params["marker"])
    if not marker.exists():
        marker.write_text("killed once")
        time.sleep(params.get("sleep", 0.0))
        os.kill(os.getpid(), signal.SIGKILL)
    (artifacts / "partial.bin").write_bytes(b"whole")
    return {"finished": True}


def fail(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    raise RuntimeError(f"job failed on purpose: {json.dumps(params)}")


def sleep_and_report_pid(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Write this worker's pid to ``params["pid_dir"]``, then sleep ``params["sleep"]`` seconds."""
    Path(params["pid_dir"], f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(params["sleep"])
    return {"slept": params["sleep"]}
