"""Mutators of probe sets: .npz arrays and bytes, IDX headers and gzip streams, PNG folders."""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from tools.fuzz.hostile import idx_header, npz_bytes, png_header
from tools.fuzz.mutators import byte_mutate

# -- probe mutators -----------------------------------------------------------------------------------


def p_npz(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, names = (a.copy() for a in base)
    y = y.astype(np.int64)
    choice = rng.random()
    what = ""
    if choice < 0.15:
        x = rng.choice(
            [
                x[:, None],
                x[:, None].repeat(3, 1),
                x[..., None].repeat(3, -1),
                x[:0],
                x[0],
                x.reshape(len(x), -1),
                x[:, :5],
            ]
        )
        what = f"x shape {x.shape}"
    elif choice < 0.3:
        x = rng.choice(
            [
                x.astype(np.float64) * 3,
                np.full(x.shape, np.nan, np.float32),
                x.astype(np.int64) - 300,
                x.astype(bool),
                x.astype("U1"),
                x.astype(np.float16) / 255,
                x.astype(np.complex64),
            ]
        )
        what = f"x dtype {x.dtype}"
    elif choice < 0.5:
        y = rng.choice(
            [
                y.astype(str),
                y + 0.5,
                y - 20,
                y[:, None],
                y[:-5],
                y * 10**9,
                np.zeros((len(y), 10)),
                y.astype(np.float64),
                np.full(len(y), np.nan),
            ]
        )
        what = f"y {y.dtype} {y.shape}"
    elif choice < 0.6:
        names = rng.choice([names[:3], np.array(["x"] * 10), np.arange(10), np.array([]), names.repeat(2)])
        what = f"class_names {names[:3]}"
    elif choice < 0.7:
        keys = rng.choice([{"x": x}, {"y": y}, {"images": x, "labels": y}, {}])
        return "npz", npz_bytes(**keys), f"keys {sorted(keys)}"
    else:
        data, steps = byte_mutate(npz_bytes(x=x, y=y, class_names=names), rng)
        return "npz", data, f"bytes {steps}"
    return "npz", npz_bytes(x=x, y=y, class_names=names), what


def p_idx(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, _ = base
    images = idx_header(0x08, list(x.shape)) + x.tobytes()
    labels = idx_header(0x08, [len(y)]) + y.astype(np.uint8).tobytes()
    choice = rng.random()
    if choice < 0.3:
        dims = [rng.choice([0, 1, 28, 0xFFFFFFFF, 1 << 20, len(x)]) for _ in range(rng.choice([0, 1, 3, 4, 9]))]
        images = idx_header(rng.choice([0x08, 0x0D, 0x0E, 0x07, 0x0B]), dims) + x.tobytes()
        what = f"header dims {dims[:4]}"
    elif choice < 0.45:
        bomb = gzip.compress(idx_header(0x08, [len(x), 28, 28]) + b"\0" * (64 << 20), compresslevel=1)
        return "idx", (bomb, gzip.compress(labels)), "gzip bomb (64 MiB of zeros)"
    elif choice < 0.6:
        labels = idx_header(rng.choice([0x0D, 0x0E, 0x0C]), [len(y)]) + np.full(len(y), 2.5, ">f8").tobytes()
        what = "float labels"
    else:
        images, steps = byte_mutate(gzip.compress(images), rng)
        return "idx", (images, gzip.compress(labels)), f"gzip bytes {steps}"
    return "idx", (gzip.compress(images), gzip.compress(labels)), what


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def p_png(rng: random.Random, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[str, Any, str]:
    x, y, names = base
    files: dict[str, Any] = {}
    for i in range(20):
        files[f"{int(y[i])}/img{i}.png"] = png_bytes(x[i])
    choice = rng.random()
    target = rng.choice(sorted(files))
    if choice < 0.25:
        side = rng.choice([20000, 5000, 1 << 16, 0xFFFFFFF])
        files[target] = png_header(side, rng.choice([side, 1]))
        what = f"PNG header {side}"
    elif choice < 0.35:
        files[target] = "FIFO"
        what = "FIFO named .png"
    elif choice < 0.4:
        files[target] = "LINK-ZERO"
        what = "symlink to /dev/zero named .png"
    elif choice < 0.5:
        from PIL import Image

        buffer = io.BytesIO()
        mode = rng.choice(["RGBA", "I;16", "P", "1", "CMYK", "F"])
        image = Image.new(mode if mode != "F" else "F", (28, 28))
        image.save(buffer, format="TIFF" if mode in ("CMYK", "F") else "PNG")
        files[target] = buffer.getvalue()
        what = f"mode {mode}"
    elif choice < 0.6:
        files[f"notaclass{rng.randrange(9)}/a.png"] = files[target]
        what = "unknown class folder"
    elif choice < 0.7:
        files[target.replace(".png", ".jpg")] = files.pop(target)[:50]
        what = "truncated jpg"
    else:
        files[target], steps = byte_mutate(files[target], rng)
        what = f"PNG bytes {steps}"
    return "png", files, what


PROBE_MUTATORS: dict[str, Callable[..., tuple[str, Any, str]]] = {"npz": p_npz, "idx": p_idx, "png-folder": p_png}
