"""The ONE file-hash helper: SHA-256 of a file (read in chunks) or of a folder's files.

A *model's* digest (model bytes + its external data) is :func:`edgeguard.model.model_sha256`,
computed by the loader from the very bytes it checked; these helpers hash anything else
(reports, data sets, bundled assets, cache fingerprints).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_sha256", "tree_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (``sha256sum path``), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """A file's :func:`file_sha256`; for a folder, SHA-256 over its files sorted by relative path
    (each as ``relative/path NUL sha256(bytes)``)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(item)))
    return digest.hexdigest()
