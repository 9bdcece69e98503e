"""The assets bundled with edgeguard for the demo, and where the demo's data comes from.

``edgeguard/assets`` holds an honest and a vicious Fashion-MNIST classifier (ONNX, logits
setting) with their decoders, the first images of the Fashion-MNIST test set as a uint8
``.npz`` (with the dataset's MIT licence next to it) and ``manifest.json``, which says how
every file was made (``python -m converters demo-assets``) and its SHA-256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeguard.data import FASHION_MNIST_ENV, Dataset, fashion_mnist_dir, load_fashion_mnist, load_npz
from edgeguard.errors import DataError, DataNotFoundError
from edgeguard.model.hashing import file_sha256

__all__ = [
    "ASSET_DIR",
    "MANIFEST_FILE",
    "SUBSET_FILE",
    "LICENSE_FILE",
    "MODEL_FILES",
    "load_manifest",
    "verify_assets",
    "model_paths",
    "load_bundled_subset",
    "load_demo_data",
]

#: The package's asset folder.
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
MANIFEST_FILE = "manifest.json"
SUBSET_FILE = "fashion_mnist_test_subset.npz"
LICENSE_FILE = "FASHION_MNIST_LICENSE.txt"
#: model -> (classifier file, decoder file). The honest model's decoder was fitted post hoc on its outputs.
MODEL_FILES = {
    "honest": ("honest.onnx", "honest_decoder.onnx"),
    "vicious": ("vicious.onnx", "vicious_decoder.onnx"),
}
_REGENERATE = "reinstall edgeguard, or regenerate the assets with `python -m converters demo-assets`"


def _folder(directory: str | os.PathLike | None) -> Path:
    return Path(directory) if directory is not None else ASSET_DIR


def load_manifest(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parsed ``manifest.json`` of the asset folder (the package's by default)."""
    path = _folder(directory) / MANIFEST_FILE
    if not path.is_file():
        raise DataNotFoundError(f"expected the demo's asset manifest at {path}, but there is none; {_REGENERATE}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"expected JSON in {path}, got an error: {error}; {_REGENERATE}") from None


def verify_assets(directory: str | os.PathLike | None = None) -> dict[str, str]:
    """Check every file the manifest lists against its SHA-256; returns ``{file: sha256}``.

    Raises :class:`DataNotFoundError` for a missing file and :class:`DataError` for a
    file whose digest differs (the demo never runs a model it cannot vouch for).
    """
    folder = _folder(directory)
    manifest = load_manifest(folder)
    files = manifest.get("files", {})
    needed = [name for pair in MODEL_FILES.values() for name in pair] + [SUBSET_FILE, LICENSE_FILE]
    missing_entries = [name for name in needed if name not in files]
    if missing_entries:
        raise DataError(f"expected manifest entries for {needed}, got none for {missing_entries}; {_REGENERATE}")
    digests = {}
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise DataNotFoundError(f"expected the demo asset {path}, but there is none; {_REGENERATE}")
        digest = file_sha256(path)
        if digest != entry.get("sha256"):
            raise DataError(
                f"expected {name} to have sha256 {entry.get('sha256')} (manifest), got {digest}; the file was "
                f"changed after it was generated: {_REGENERATE}"
            )
        digests[name] = digest
    return digests


def model_paths(directory: str | os.PathLike | None = None) -> dict[str, tuple[Path, Path]]:
    """``{"honest": (classifier, decoder), "vicious": (classifier, decoder)}`` paths in the asset folder."""
    folder = _folder(directory)
    return {name: (folder / classifier, folder / decoder) for name, (classifier, decoder) in MODEL_FILES.items()}


def load_bundled_subset(directory: str | os.PathLike | None = None) -> Dataset:
    """The bundled Fashion-MNIST test subset (the first test images, never trained on)."""
    return load_npz(_folder(directory) / SUBSET_FILE)


def load_demo_data(
    limit: int | None = None, directory: str | os.PathLike | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """The demo's images: the Fashion-MNIST test set when installed, else the bundled subset.

    The test set is read from ``$EDGEGUARD_FASHION_MNIST_DIR`` or Debian's path
    (``apt-get install dataset-fashion-mnist``). Returns the first ``limit`` images and a
    description of where they came from.
    """
    try:
        data = load_fashion_mnist("test", limit=limit)
        source = {
            "kind": "fashion-mnist",
            "description": f"Fashion-MNIST test set from {fashion_mnist_dir()}",
            "path": str(fashion_mnist_dir()),
        }
    except (DataNotFoundError, DataError) as error:
        data = load_bundled_subset(directory).head(limit)
        source = {
            "kind": "bundled",
            "description": f"the bundled Fashion-MNIST test subset, {SUBSET_FILE}",
            "path": str(_folder(directory) / SUBSET_FILE),
            "why": str(error).split(";")[0]
            + f"; to use the full test set: apt-get install dataset-fashion-mnist, or set ${FASHION_MNIST_ENV}",
        }
    source["images"] = len(data)
    return data, source
