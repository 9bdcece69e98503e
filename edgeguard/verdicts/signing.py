"""HMAC signatures of vet reports: a reviewer signs, SafeModel checks.

The signed message is the report's canonical JSON (sorted keys, no whitespace, the
``signature`` entry left out), so any edit of any field (a score, a finding, the verdict,
the model digest) breaks the signature. The key is a secret file shared by the reviewer
who runs ``edgeguard vet --sign-key FILE`` and the app that runs
``SafeModel(verdict=..., verdict_key=FILE)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeguard.errors import ConfigError, DataError

__all__ = ["read_key", "sign_record", "verify_signature", "canonical_bytes", "ALGORITHM"]

ALGORITHM = "hmac-sha256"
_MIN_KEY_BYTES = 16


def read_key(key: bytes | str | os.PathLike) -> bytes:
    """Key bytes: ``bytes`` as given, or the contents of a key file (surrounding whitespace removed)."""
    if isinstance(key, bytes):
        data = key
    else:
        path = Path(key)
        if not path.is_file():
            raise ConfigError(f"expected a signing key file at {path}, but there is none; create one with "
                              "`python -c 'import secrets; print(secrets.token_hex(32))' > FILE`")
        data = path.read_bytes().strip()
    if len(data) < _MIN_KEY_BYTES:
        raise ConfigError(f"expected a signing key of at least {_MIN_KEY_BYTES} bytes, got {len(data)}; use a random key")
    return data


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The signed message: canonical JSON of ``record`` without its ``signature``."""
    content = {key: value for key, value in record.items() if key != "signature"}
    try:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise DataError(f"expected a JSON-serialisable vet report, got an error: {error}") from None
    return text.encode("utf-8")


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"edgeguard-key-id:" + key).hexdigest()[:16]


def sign_record(record: Mapping[str, Any], key: bytes) -> dict[str, str]:
    """The ``signature`` entry for ``record`` (a report dict) under ``key``."""
    mac = hmac.new(key, canonical_bytes(json.loads(json.dumps(dict(record)))), hashlib.sha256).hexdigest()
    return {"algorithm": ALGORITHM, "key_id": _key_id(key), "mac": mac}


def verify_signature(record: Mapping[str, Any], key: bytes) -> str:
    """"" when ``record`` carries a valid signature under ``key``, else why not."""
    signature = record.get("signature")
    if not isinstance(signature, Mapping):
        return "the report is not signed"
    if signature.get("algorithm") != ALGORITHM:
        return f"expected a {ALGORITHM} signature, got {signature.get('algorithm')!r}"
    if signature.get("key_id") != _key_id(key):
        return "the report was signed with another key"
    expected = hmac.new(key, canonical_bytes(json.loads(json.dumps(dict(record)))), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(signature.get("mac", ""))):
        return "the signature does not match the report's content (the report was edited after signing)"
    return ""
