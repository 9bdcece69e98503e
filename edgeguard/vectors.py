"""Probe sets for vector and sequence classifiers (tabular features, sensor windows).

Readers return a :class:`VectorSet`: float32 features ``x`` of shape ``(N, F)`` or
``(N, T, F)`` (any finite values, no scaling) and labels ``y`` (int64 class indices, or
0/1 float32 ``(N, K)`` for multi-label tasks). Supported files:

- ``.npz`` with arrays ``x`` and ``y`` (optionally ``class_names``, ``feature_names``);
- ``.csv`` with a header row: every column is a float feature except the label column
  (``label_column``, default ``"label"``), whose values are class indices or class names;
- ``.parquet`` (needs ``pyarrow``, installed with ``edgeguard[parquet]``), same columns.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import DataError, DataNotFoundError

__all__ = ["VectorSet", "load_vectors", "VECTOR_SUFFIXES", "DEFAULT_LABEL_COLUMN"]

VECTOR_SUFFIXES = (".npz", ".csv", ".parquet")
DEFAULT_LABEL_COLUMN = "label"
_MAX_BYTES_ENV = "EDGEGUARD_MAX_DATA_BYTES"
_DEFAULT_MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class VectorSet:
    """Features ``x`` (N, F) or (N, T, F) float32, labels ``y`` (N,) int64 or (N, K) float32."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] = field(default=())
    feature_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.x.ndim not in (2, 3):
            raise DataError(f"expected features of shape (N, F) or (N, T, F), got shape {self.x.shape}")
        if len(self.y) != len(self.x):
            raise DataError(f"expected one label per row, got {len(self.x)} rows and {len(self.y)} labels")

    @property
    def multilabel(self) -> bool:
        return self.y.ndim == 2

    def __len__(self) -> int:
        return len(self.x)


def _max_bytes() -> int:
    try:
        return int(os.environ.get(_MAX_BYTES_ENV, _DEFAULT_MAX_BYTES))
    except ValueError:
        return _DEFAULT_MAX_BYTES


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataNotFoundError(f"expected a probe file at {path}, but there is none; check the path")
    if not path.is_file():
        raise DataError(f"expected a regular file at {path}, got something else")
    size = path.stat().st_size
    if size > _max_bytes():
        raise DataError(f"expected at most {_max_bytes()} bytes in {path}, got {size}; set {_MAX_BYTES_ENV} to raise the cap")


def _labels(values: Sequence[Any] | np.ndarray, class_names: Sequence[str] | None, where: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices from integer labels or class names (matched to ``class_names`` when given)."""
    values = np.asarray(values)
    if values.ndim == 2:
        if not np.isin(values, (0, 1)).all():
            raise DataError(f"expected 0/1 multi-label targets in {where}, got other values")
        return values.astype(np.float32), tuple(class_names or ())
    text = [str(v.decode() if isinstance(v, bytes) else v).strip() for v in values.reshape(-1)]
    names = tuple(str(n) for n in class_names) if class_names else ()
    if names and all(t in names for t in text):
        lookup = {name: i for i, name in enumerate(names)}
        return np.array([lookup[t] for t in text], dtype=np.int64), names
    try:
        numbers = np.array([float(t) for t in text], dtype=np.float64)
    except ValueError:
        if names:
            unknown = sorted({t for t in text if t not in names})[:5]
            raise DataError(
                f"expected labels among the model's classes {list(names)[:10]} in {where}, got unknown {unknown}"
            ) from None
        found = tuple(sorted(set(text)))
        lookup = {name: i for i, name in enumerate(found)}
        return np.array([lookup[t] for t in text], dtype=np.int64), found
    if not np.all(numbers == np.round(numbers)) or (len(numbers) and numbers.min() < 0):
        raise DataError(f"expected class indices (non-negative integers) or class names as labels in {where}")
    labels = numbers.astype(np.int64)
    if names and len(labels) and labels.max() >= len(names):
        raise DataError(f"expected labels in [0, {len(names) - 1}] for {len(names)} classes in {where}, got {labels.max()}")
    return labels, names


def _features(columns: dict[str, Any], label_column: str, where: Any) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    if label_column not in columns:
        raise DataError(
            f"expected a label column {label_column!r} in {where}, got columns {list(columns)[:12]}; "
            "name it with label_column=... (CLI --label-column)"
        )
    labels = columns.pop(label_column)
    names = tuple(columns)
    if not names:
        raise DataError(f"expected at least one feature column besides {label_column!r} in {where}")
    try:
        x = np.stack([np.asarray(columns[name], dtype=np.float32) for name in names], axis=1)
    except (ValueError, TypeError):
        bad = next(n for n in names if not _numeric(columns[n]))
        raise DataError(
            f"expected numeric feature columns in {where}, got non-numbers in {bad!r}; encode it as numbers first"
        ) from None
    return x, labels, names


def _numeric(values: Any) -> bool:
    try:
        np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        return False
    return True


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DataError(f"expected a header row and at least one data row in {path}, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise DataError(f"expected distinct column names in {path}, got duplicates in {header[:12]}")
    body = rows[1:]
    widths = {len(r) for r in body if r}
    if widths != {len(header)}:
        raise DataError(f"expected {len(header)} values on every row of {path}, got rows of {sorted(widths)[:5]} values")
    columns = {name: [r[i] for r in body if r] for i, name in enumerate(header)}
    return _features(columns, label_column, path)


def _read_parquet(path: Path, label_column: str) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"expected pyarrow to read {path}, got it missing; pip install 'edgeguard[parquet]' (or save the probe "
            "as .csv or .npz)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises its own types
        raise DataError(f"expected a readable parquet file at {path}, got {type(error).__name__}: {str(error)[:200]}") from None
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return _features(columns, label_column, path)


def _read_npz(path: Path) -> tuple[np.ndarray, Any, tuple[str, ...], tuple[str, ...]]:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(member.file_size for member in archive.infolist())
        if declared > _max_bytes():
            raise DataError(f"expected at most {_max_bytes()} bytes of arrays in {path}, got {declared} declared")
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"expected arrays 'x' and 'y' in {path}, got {sorted(keys)[:10]}; save with np.savez(path, x=x, y=y)")
            x, y = archive["x"], archive["y"]
            classes = tuple(str(n) for n in archive["class_names"].reshape(-1)) if "class_names" in keys else ()
            features = tuple(str(n) for n in archive["feature_names"].reshape(-1)) if "feature_names" in keys else ()
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"expected a readable .npz file at {path}, got {type(error).__name__}: {str(error)[:200]}") from None
    if x.dtype.kind not in "biuf":
        raise DataError(f"expected numeric features in {path}, got dtype {x.dtype}")
    return x.astype(np.float32), y, classes, features


def load_vectors(
    path: str | os.PathLike,
    *,
    label_column: str = DEFAULT_LABEL_COLUMN,
    class_names: Sequence[str] | None = None,
) -> VectorSet:
    """Read a vector probe set from an ``.npz``, ``.csv`` or ``.parquet`` file (see the module docstring).

    ``class_names`` (the model's) map label names to indices; without them, integer
    labels are indices and text labels are numbered in sorted order.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y, stored, features = _read_npz(path)
        y, names = _labels(y, class_names or stored or None, path)
        names = names or stored
    elif suffix == ".csv":
        x, y, features = _read_csv(path, label_column)
        y, names = _labels(y, class_names, path)
    elif suffix == ".parquet":
        x, y, features = _read_parquet(path, label_column)
        y, names = _labels(y, class_names, path)
    else:
        raise DataError(f"expected a vector probe file ending in {VECTOR_SUFFIXES}, got {path.name!r}")
    if x.size and not np.isfinite(x).all():
        raise DataError(f"expected finite feature values in {path}, got NaN or infinity; impute or drop those rows first")
    return VectorSet(np.ascontiguousarray(x), y, tuple(names), tuple(features))
