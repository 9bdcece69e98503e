"""The content-addressed job cache: keys, atomic commits, look-ups and the sweep of dead temp dirs.

Layout under ``cache_dir``::

    <key[:2]>/<key>/job.json        function, params, salt (what was run)
    <key[:2]>/<key>/artifacts/      files the job wrote
    <key[:2]>/<key>/result.json     {"result": ..., "seconds": ..., ...}, written LAST
    .tmp/<key>.<host>.<pid>.<rand>/ an entry being built (renamed into place when done)

An entry is committed by ``os.replace`` of its whole temp directory, so a reader sees
either no entry or a complete one; a worker killed mid-job leaves only a temp dir,
which a later run removes once its process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

#: Bumped when the cache layout or the meaning of a key changes (old entries are then ignored).
CACHE_VERSION = "edgeguard-jobs-1"
RESULT_FILE = "result.json"
JOB_FILE = "job.json"
ARTIFACTS_DIR = "artifacts"
TMP_DIR = ".tmp"


def canonical_json(value: Any, *, allow_nan: bool = False) -> str:
    """Canonical JSON: sorted keys, no spaces, no NaN unless ``allow_nan`` (TypeError/ValueError otherwise)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)


def job_key(function: str, params: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the function, its params and :data:`CACHE_VERSION`."""
    text = canonical_json({"function": function, "params": params, "salt": CACHE_VERSION})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / key


def read_entry(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The committed record of ``key`` (``{"result", "seconds", ...}``), or None when there is none."""
    path = entry_dir(cache_dir, key) / RESULT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError):  # pragma: no cover - only a hand-edited entry gets here
        return None
    return record if isinstance(record, dict) and "result" in record else None


def new_temp_dir(cache_dir: Path, key: str) -> Path:
    """A fresh, private temp directory for building the entry of ``key`` (with an artifacts/ folder)."""
    tmp = Path(cache_dir) / TMP_DIR / f"{key}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    (tmp / ARTIFACTS_DIR).mkdir(parents=True)
    return tmp


def commit(cache_dir: Path, key: str, tmp: Path, job: dict[str, Any], record: dict[str, Any]) -> Path:
    """Write job.json then result.json (last) into ``tmp`` and rename it into place atomically.

    If another worker committed the same key first, its entry wins and ``tmp`` is removed
    (both ran the same function on the same params).
    """
    (tmp / JOB_FILE).write_text(canonical_json(job) + "\n", encoding="utf-8")
    result_tmp = tmp / (RESULT_FILE + ".part")
    with open(result_tmp, "w", encoding="utf-8") as handle:
        handle.write(canonical_json(record, allow_nan=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(result_tmp, tmp / RESULT_FILE)
    final = entry_dir(cache_dir, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and read_entry(cache_dir, key) is None:
        shutil.rmtree(final, ignore_errors=True)  # pragma: no cover - an entry without result.json
    try:
        os.replace(tmp, final)
    except OSError:
        if read_entry(cache_dir, key) is None:  # pragma: no cover - a real I/O failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def sweep(cache_dir: Path) -> int:
    """Remove temp dirs left by dead processes of this host; returns how many were removed."""
    root = Path(cache_dir) / TMP_DIR
    if not root.is_dir():
        return 0
    removed = 0
    host = _host()
    for path in root.iterdir():
        parts = path.name.split(".")
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
            continue
        if not _alive(int(parts[2])):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True
