"""Dataset readers shared by the client (probe sets) and the server-side converters.

Every reader returns a :class:`Dataset`: images as float32 ``(N, C, H, W)`` with pixels in
``[0, 1]``, and labels as int64 ``(N,)`` (one class per image) or as 0/1 float32 ``(N, K)``
(binary attributes). Supported sources:

- an IDX pair (MNIST format, optionally gzipped): ``load_idx``;
- Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package: ``load_fashion_mnist``;
- an ``.npz`` file holding ``x`` and ``y`` (optionally ``class_names``): ``load_npz``;
- a folder with one subfolder of images per class: ``load_image_folder``;
- any of the above, by looking at the path: ``load_dataset``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeguard.errors import DataError, DataNotFoundError

__all__ = [
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "DEFAULT_FASHION_MNIST_DIR",
    "load_idx",
    "load_fashion_mnist",
    "load_npz",
    "load_image_folder",
    "load_dataset",
    "fashion_mnist_dir",
    "validation_split",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Environment variable that overrides where Fashion-MNIST is read from.
FASHION_MNIST_ENV = "EDGEGUARD_FASHION_MNIST_DIR"
#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` (N, C, H, W) float32 in [0, 1] and labels ``y``.

    ``y`` is int64 ``(N,)`` for a categorical task, or float32 ``(N, K)`` of 0/1 for
    binary attributes (``multilabel`` is then True).
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"expected images of shape (N, C, H, W), got shape {self.x.shape}")
        if len(self.y) != len(self.x):
            raise DataError(
                f"expected one label per image, got {len(self.x)} images and {len(self.y)} labels; "
                "check that the images and labels files belong together"
            )

    @property
    def multilabel(self) -> bool:
        return self.y.ndim == 2

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        if self.multilabel:
            return int(self.y.shape[1])
        return int(self.y.max()) + 1 if len(self.y) else 0

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: np.ndarray | slice | Sequence[int]) -> "Dataset":
        """A new Dataset with the rows selected by ``index``."""
        return Dataset(self.x[index], self.y[index], self.class_names)

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` rows (all of them when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))


def validation_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train, validation) indices, as in the paper (10%)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"expected a validation fraction in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"expected an IDX file at {path}, but there is none") from None
    except (OSError, EOFError) as error:
        raise DataError(f"expected a readable IDX file at {path}, got an error: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"expected an IDX file (magic 0x0000TTDD) at {path}, got bytes {raw[:4]!r}; "
            "is this really an MNIST-format file?"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"expected {expected} data bytes for dimensions {dims} in {path}, got {len(raw) - header}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _images_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) or (N, C, H, W) to float32 (N, C, H, W) in [0, 1]."""
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4:
        raise DataError(f"expected images of shape (N, H, W) or (N, C, H, W), got {images.shape}")
    if np.issubdtype(images.dtype, np.integer):
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(images, dtype=np.float32)


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, class_names: Sequence[str] = ()
) -> Dataset:
    """Read an MNIST-format IDX pair (``.gz`` or plain) into a :class:`Dataset`."""
    images = _read_idx(Path(images_path))
    labels = _read_idx(Path(labels_path)).astype(np.int64)
    return Dataset(_images_to_float(images), labels, tuple(class_names))


def _find_idx_pair(root: Path, split: str) -> tuple[Path, Path] | None:
    prefix = {"train": "train", "test": "t10k"}[split]
    for suffix in (".gz", ""):
        images = root / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    return None


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST folder: ``root``, else ``$EDGEGUARD_FASHION_MNIST_DIR``, else Debian's path."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_DIR)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None, limit: int | None = None
) -> Dataset:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as 1x28x28 images in [0, 1].

    Any folder of MNIST-format IDX files (``train-images-idx3-ubyte[.gz]`` ...) works
    the same way, so MNIST itself can be read with ``root=``.
    """
    if split not in ("train", "test"):
        raise DataError(f"expected split 'train' or 'test', got {split!r}")
    folder = fashion_mnist_dir(root)
    pair = _find_idx_pair(folder, split)
    if pair is None:
        raise DataNotFoundError(
            f"expected Fashion-MNIST IDX files ({split}-images-idx3-ubyte[.gz] and labels) in {folder}, "
            "found none; install them with `apt-get install dataset-fashion-mnist` (Debian), "
            f"or point --data / ${FASHION_MNIST_ENV} at a folder of MNIST-format IDX files"
        )
    data = load_idx(*pair, class_names=FASHION_MNIST_CLASSES)
    return data.head(limit)


def load_npz(path: str | os.PathLike) -> Dataset:
    """An ``.npz`` with ``x`` (N, C, H, W) or (N, H, W) and ``y``; optional ``class_names``."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"expected an .npz file at {path}, but there is none")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise DataError(
                    f"expected arrays 'x' and 'y' in {path}, got {sorted(keys)}; "
                    "save with np.savez(path, x=images, y=labels)"
                )
            x, y = archive["x"], archive["y"]
            names = tuple(str(n) for n in archive["class_names"]) if "class_names" in keys else ()
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"expected a readable .npz file at {path}, got an error: {error}") from None
    x = _images_to_float(x)
    if np.issubdtype(x.dtype, np.floating) and x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"expected pixels in [0, 1] in {path}, got values in [{x.min():.3g}, {x.max():.3g}]; "
            "store uint8 images or floats divided by 255"
        )
    y = y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)
    return Dataset(x, y, names)


def load_image_folder(
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
) -> Dataset:
    """A folder with one subfolder of images per class.

    Subfolders are matched to ``class_names`` by name; when a subfolder name is not a
    class name but an integer, it is taken as the class index. Without ``class_names``
    the sorted subfolder names are the classes. Images are converted to ``channels``
    (1 = grayscale, 3 = RGB) and resized to ``image_size`` (H, W) when given.
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(f"expected a folder of class subfolders at {root}, but there is none")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"expected one subfolder per class in {root}, got no subfolders")
    names = list(class_names) if class_names else [f.name for f in folders]
    lookup = {name: i for i, name in enumerate(names)}
    lookup.update({_safe_folder_name(name): i for i, name in enumerate(names)})
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for folder in folders:
        if folder.name in lookup:
            label = lookup[folder.name]
        elif folder.name.isdigit() and int(folder.name) < len(names):
            label = int(folder.name)
        else:
            raise DataError(
                f"expected subfolders named after the classes {names} (or their indices), "
                f"got {folder.name!r} in {root}; rename it or pass the class names"
            )
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    image = image.convert(mode)
                    if image_size is not None and image.size != (image_size[1], image_size[0]):
                        image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except OSError as error:
                raise DataError(f"expected a readable image at {file}, got an error: {error}") from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"expected image files ({', '.join(_IMAGE_SUFFIXES)}) under {root}, found none")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(
            f"expected images of one size, got sizes {sorted(shapes)} in {root}; pass image_size to resize"
        )
    x = np.stack(images).astype(np.float32) / np.float32(255.0)
    return Dataset(x, np.asarray(labels, dtype=np.int64), tuple(names))


def _safe_folder_name(name: str) -> str:
    """Class names such as 'T-shirt/top' cannot be folder names; '/' becomes '_'."""
    return name.replace("/", "_").replace("\\", "_")


def load_dataset(
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    split: str = "test",
) -> Dataset:
    """Load a labelled image set from ``path``, whatever its form.

    ``path`` may be an ``.npz``; a folder with an IDX pair (``split`` picks train or
    t10k files); or a folder with one subfolder per class.
    """
    path = Path(path)
    if path.suffix == ".npz":
        data = load_npz(path)
    elif path.is_dir():
        other = "train" if split == "test" else "test"
        pair = _find_idx_pair(path, split) or _find_idx_pair(path, other)
        if pair is None:
            return load_image_folder(path, class_names, image_size, channels)
        data = load_idx(*pair)
    elif not path.exists():
        raise DataNotFoundError(
            f"expected a dataset at {path} (an .npz, a folder of IDX files, or a folder of class "
            "subfolders), but nothing is there"
        )
    else:
        raise DataError(
            f"expected an .npz file or a folder, got {path}; see `edgeguard vet --help` for the probe formats"
        )
    if class_names and not data.class_names:
        data = Dataset(data.x, data.y, tuple(class_names))
    return data
