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
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        if self.class_names and self.y.ndim == 1 and len(self.y) and self.y.dtype.kind in "iu":
            if int(self.y.max()) >= len(self.class_names) or int(self.y.min()) < 0:
                raise DataError(
                    f"expected labels in [0, {len(self.class_names) - 1}] for the {len(self.class_names)} class names, "
                    f"got labels in [{int(self.y.min())}, {int(self.y.max())}]; store one class name per class"
                )
        if self.class_names and self.y.ndim == 2 and self.y.shape[1] != len(self.class_names):
            raise DataError(
                f"expected {len(self.class_names)} attribute columns for the class names, got labels {self.y.shape}"
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


#: Largest decompressed IDX file read (bytes); a gzip bomb stops here. Override with EDGEGUARD_MAX_DATA_BYTES.
MAX_DATA_BYTES = 1 << 31
#: Largest image (pixels) a probe folder may hold (PIL's decompression-bomb guard uses the same idea).
MAX_IMAGE_PIXELS = 1 << 24


def _max_data_bytes() -> int:
    try:
        return int(os.environ.get("EDGEGUARD_MAX_DATA_BYTES", MAX_DATA_BYTES))
    except ValueError:
        return MAX_DATA_BYTES


def _read_capped(handle: Any, cap: int, path: Path) -> bytes:
    """Read at most ``cap`` bytes, streaming (DataError when there is more)."""
    chunks, size = [], 0
    while True:
        chunk = handle.read(min(1 << 20, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise DataError(
                f"expected at most {cap} data bytes (decompressed) at {path}, got more; the file is corrupt or "
                "has trailing data (a gzip bomb stops here too). Set EDGEGUARD_MAX_DATA_BYTES to raise the cap"
            )
    return b"".join(chunks)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    cap = _max_data_bytes()
    if not path.exists():
        raise DataNotFoundError(f"expected an IDX file at {path}, but there is none")
    if not path.is_file():
        raise DataError(f"expected an IDX file at {path}, got something that is not a regular file")
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(
                    f"expected an IDX file (magic 0x0000TTDD) at {path}, got bytes {head[:4]!r}; "
                    "is this really an MNIST-format file?"
                )
            ndim = head[3]
            if not 1 <= ndim <= 4:
                raise DataError(f"expected an IDX file with 1 to 4 dimensions at {path}, got {ndim}")
            dim_bytes = handle.read(4 * ndim)
            if len(dim_bytes) != 4 * ndim:
                raise DataError(f"expected {ndim} IDX dimensions at {path}, got a truncated header")
            dims = tuple(int.from_bytes(dim_bytes[4 * i : 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
            if expected > cap:
                raise DataError(
                    f"expected at most {cap} data bytes at {path}, got dimensions {dims} ({expected} bytes); "
                    "the header is corrupt, or set EDGEGUARD_MAX_DATA_BYTES to raise the cap"
                )
            raw = _read_capped(handle, expected, path)
    except DataError:
        raise
    except Exception as error:  # gzip.BadGzipFile (an OSError), EOFError, zlib.error, MemoryError ...
        raise DataError(f"expected a readable IDX file at {path}, got an error: {error}") from None
    if len(raw) != expected:
        raise DataError(
            f"expected {expected} data bytes for dimensions {dims} in {path}, got {len(raw)}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


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


def _labels(y: np.ndarray, where: object) -> np.ndarray:
    """Class indices (N,) as int64, or 0/1 attributes (N, K) as float32; DataError for anything else."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(
            f"expected integer class labels in {where}, got {y.dtype} labels; map class names to indices "
            "(0..K-1) and store them as integers"
        )
    if y.ndim not in (1, 2):
        raise DataError(f"expected labels of shape (N,) or (N, K) in {where}, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y.size and not np.array_equal(y, np.round(y))):
            raise DataError(
                f"expected whole-number labels in {where}, got non-integral or non-finite floats (e.g. 2.5); "
                "store class indices as integers, they are not truncated silently"
            )
    if y.ndim == 2:
        if y.size and not np.isin(y, (0, 1)).all():
            raise DataError(f"expected 0/1 attribute labels (N, K) in {where}, got other values")
        return y.astype(np.float32)
    if y.size and (y.min() < 0 or y.max() >= 1 << 20):
        raise DataError(
            f"expected class indices in [0, {1 << 20}) in {where}, got labels in [{y.min()}, {y.max()}]; "
            "labels are class indices 0..K-1"
        )
    return y.astype(np.int64)


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, class_names: Sequence[str] = ()
) -> Dataset:
    """Read an MNIST-format IDX pair (``.gz`` or plain) into a :class:`Dataset`."""
    images = _read_idx(Path(images_path))
    labels = _labels(_read_idx(Path(labels_path)), labels_path)
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
    if not path.is_file():
        raise DataError(f"expected an .npz file at {path}, got something that is not a regular file")
    cap = _max_data_bytes()
    try:
        with zipfile.ZipFile(path) as archive:  # sizes first: a small .npz can hold a huge array (a zip bomb)
            declared = sum(member.file_size for member in archive.infolist())
        if declared > cap:
            raise DataError(
                f"expected at most {cap} bytes of arrays in {path}, got {declared} declared; "
                "set EDGEGUARD_MAX_DATA_BYTES to raise the cap"
            )
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise DataError(
                    f"expected arrays 'x' and 'y' in {path}, got {sorted(keys)[:10]}; "
                    "save with np.savez(path, x=images, y=labels)"
                )
            x, y = archive["x"], archive["y"]
            names = tuple(str(n) for n in archive["class_names"].reshape(-1)) if "class_names" in keys else ()
    except DataError:
        raise
    except Exception as error:  # numpy's header parser alone raises ValueError, SyntaxError, TokenError ...
        raise DataError(
            f"expected a readable .npz file at {path}, got {type(error).__name__}: {str(error)[:200]}; "
            "save it again with np.savez(path, x=images, y=labels)"
        ) from None
    if x.dtype.kind not in "biuf":
        raise DataError(f"expected numeric images in {path}, got dtype {x.dtype}; store uint8 or float images")
    x = _images_to_float(x)
    if x.size and not np.isfinite(x).all():
        raise DataError(f"expected finite pixel values in {path}, got NaN or infinity; clean the images first")
    if np.issubdtype(x.dtype, np.floating) and x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"expected pixels in [0, 1] in {path}, got values in [{x.min():.3g}, {x.max():.3g}]; "
            "store uint8 images or floats divided by 255"
        )
    y = _labels(y, path)
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
            if not file.is_file():  # a FIFO or device named like an image would block or never end
                raise DataError(f"expected an image file at {file}, got something that is not a regular file")
            try:
                with Image.open(file) as image:
                    width, height = image.size
                    if width * height > MAX_IMAGE_PIXELS:
                        raise DataError(
                            f"expected images of at most {MAX_IMAGE_PIXELS} pixels, got {width}x{height} at {file}; "
                            "resize the probe images (they are scaled to the model's input anyway)"
                        )
                    image = image.convert(mode)
                    if image_size is not None and image.size != (image_size[1], image_size[0]):
                        image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except DataError:
                raise
            except Image.DecompressionBombError:
                raise DataError(
                    f"expected images of at most {MAX_IMAGE_PIXELS} pixels, got a larger one at {file} (PIL refused "
                    "it as a decompression bomb); resize the probe images"
                ) from None
            except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, EOFError ... on bad files
                raise DataError(
                    f"expected a readable image at {file}, got {type(error).__name__}: {str(error)[:200]}; "
                    "re-save it as PNG"
                ) from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"expected image files ({', '.join(_IMAGE_SUFFIXES)}) under {root}, found none")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(f"expected images of one size, got sizes {sorted(shapes)} in {root}; pass image_size to resize")
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
