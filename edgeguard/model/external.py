"""External data: locations inside the model's folder, regular files read once, bytes hashed and copied in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeguard.errors import ModelLoadError, ModelTooLargeError, UnsafeModelError
from edgeguard.model.files import open_regular, read_all
from edgeguard.model.limits import EXTERNAL_KEYS, MAX_COMPONENT_BYTES, MAX_LOCATION_CHARS

__all__ = ["Reference", "external_reference", "load_external"]


@dataclass
class Reference:
    tensor: Any
    location: str  # normalised, relative, '/'-separated
    offset: int
    length: int | None


def external_reference(tensor: Any, expected: int | None) -> Reference:
    what = f"tensor {tensor.name!r}"
    if tensor.data_location != 1:
        raise ModelLoadError(f"expected external_data entries only on EXTERNAL tensors, got them on {what}")
    if expected is None:
        raise ModelLoadError(f"expected external data only for numeric tensors, got it for {what}")
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in EXTERNAL_KEYS:
            raise ModelLoadError(
                f"expected external_data keys among {sorted(EXTERNAL_KEYS)}, got {entry.key[:40]!r} for {what}"
            )
        if entry.key in entries:
            raise ModelLoadError(f"expected each external_data key once, got {entry.key!r} twice for {what}")
        entries[entry.key] = entry.value
    location = _normalise_location(entries.get("location", ""), what)
    offset = _non_negative(entries.get("offset", "0"), "offset", what)
    length = _non_negative(entries["length"], "length", what) if "length" in entries else None
    if length is not None and length != expected:
        raise ModelLoadError(
            f"expected external length {expected} for {what} (dims {list(tensor.dims)}), got {length}; "
            "the file is corrupt"
        )
    return Reference(tensor, location, offset, expected if length is None else length)


def _non_negative(text: str, key: str, what: str) -> int:
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise ModelLoadError(
            f"expected a non-negative integer external-data {key} for {what}, got {text[:40]!r}; the file is corrupt"
        )
    return int(text)


def _normalise_location(location: str, what: str) -> str:
    if not location:
        raise ModelLoadError(f"expected an external-data location for {what}, got none; the file is corrupt")
    shown = location[:80]
    if "\0" in location or len(location) > MAX_LOCATION_CHARS:
        raise UnsafeModelError(
            f"expected an external-data location without NUL bytes and under {MAX_LOCATION_CHARS} characters, got "
            f"{shown!r} for {what}; refusing to load it"
        )
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise UnsafeModelError(
            f"expected external data inside the model's folder, got absolute location {shown!r} for {what}; "
            "refusing to load a file that reads outside its folder"
        )
    parts = [part for part in location.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeModelError(
            f"expected external data inside the model's folder, got location {shown!r} for {what}; "
            "refusing to load a file that reads outside its folder"
        )
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES for part in parts):
        raise UnsafeModelError(
            f"expected location components of at most {MAX_COMPONENT_BYTES} bytes, got {shown!r}... for {what}"
        )
    return str(PurePosixPath(*parts))


def _resolve_inside(folder: Path, location: str) -> Path:
    """The data file's real path, refused when it (or a symlink on the way) leaves the folder."""
    real_folder = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(folder.joinpath(*location.split("/"))))
    if not target.is_relative_to(real_folder) or target == real_folder:
        raise UnsafeModelError(
            f"expected external data inside the model's folder {folder}, got {location!r} resolving to {target}; "
            "refusing to load a file that reads outside its folder"
        )
    return target


def load_external(references: list[Reference], folder: Path, digest: Any, max_total_bytes: int) -> list[str]:
    """Read each external file once (sorted by location), hash it, and copy the tensors' bytes in."""
    by_location: dict[str, list[Reference]] = {}
    for reference in references:
        by_location.setdefault(reference.location, []).append(reference)
    # every location is checked (path and file type, without reading) before any is read
    targets = {location: _resolve_inside(folder, location) for location in sorted(by_location)}
    total = 0
    for location in sorted(by_location):
        target = targets[location]
        fd, info = open_regular(target, f"the external data file {location!r}", single_link=True)
        try:
            size = info.st_size
            total += size
            if total > max_total_bytes:
                raise ModelTooLargeError(
                    f"expected at most {max_total_bytes} bytes of external data, got {total}; "
                    "raise max_total_bytes only if the model is legitimately that large"
                )
            for reference in by_location[location]:
                end = reference.offset + (reference.length or 0)
                if end > size:
                    raise ModelLoadError(
                        f"expected tensor {reference.tensor.name!r} inside {location!r} (bytes {reference.offset}.."
                        f"{end}), got a file of {size} bytes; the data file is truncated or does not belong to it"
                    )
            data = read_all(fd, size, target)
        finally:
            os.close(fd)
        digest.update(b"\0" + location.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(data)
        view = memoryview(data)
        for reference in by_location[location]:
            tensor = reference.tensor
            for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                tensor.ClearField(name)
            tensor.raw_data = bytes(view[reference.offset : reference.offset + (reference.length or 0)])
            del tensor.external_data[:]
            tensor.data_location = 0
        del view, data
    return sorted(by_location)
