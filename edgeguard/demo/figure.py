"""The demo's picture: private inputs against what an attacker rebuilds from the shared outputs (pillow only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.errors import DataError

__all__ = ["FigureRow", "attack_figure"]

_TONES = {"neutral": (30, 30, 30), "danger": (180, 20, 20), "safe": (20, 120, 40), "muted": (90, 90, 90)}


@dataclass(frozen=True)
class FigureRow:
    """One labelled strip of images: ``title`` (bold line), ``caption`` (numbers), ``tone`` (colour of the title)."""

    title: str
    caption: str
    images: np.ndarray  # (N, C, H, W) in [0, 1]
    tone: str = "neutral"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _tile(image: np.ndarray, scale: int) -> Any:
    from PIL import Image

    pixels = (np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    tile = (
        Image.fromarray(pixels[0]).convert("RGB")
        if pixels.shape[0] == 1
        else Image.fromarray(pixels[:3].transpose(1, 2, 0))
    )
    return tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words, line = paragraph.split(), ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def attack_figure(
    path: str | os.PathLike,
    rows: list[FigureRow],
    *,
    title: str,
    subtitle: str = "",
    footer: str = "",
    scale: int = 3,
) -> Path:
    """Write a PNG with one labelled strip of images per row (the first row is usually the originals)."""
    from PIL import Image, ImageDraw

    if not rows:
        raise DataError("expected at least one row of images, got none; pass the rows to draw")
    count = max(len(row.images) for row in rows)
    _, _, height, width = np.asarray(rows[0].images).shape
    cell_w, cell_h, gap = width * scale, height * scale, 4
    label_w, margin = 360, 16
    canvas_w = margin + label_w + count * (cell_w + gap) + margin
    title_font, text_font, small_font = _font(22), _font(15), _font(13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    subtitle_lines = _wrap(measure, subtitle, small_font, canvas_w - 2 * margin) if subtitle else []
    footer_lines = _wrap(measure, footer, small_font, canvas_w - 2 * margin) if footer else []
    header_h = margin + 30 + 18 * len(subtitle_lines) + 10
    row_h = cell_h + 14
    canvas_h = header_h + len(rows) * row_h + 18 * len(footer_lines) + margin + 4
    canvas = Image.new("RGB", (canvas_w, canvas_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, margin), title, fill=_TONES["neutral"], font=title_font)
    for i, line in enumerate(subtitle_lines):
        draw.text((margin, margin + 32 + 18 * i), line, fill=_TONES["muted"], font=small_font)
    for index, row in enumerate(rows):
        top = header_h + index * row_h
        if index:
            draw.line((margin, top - 7, canvas_w - margin, top - 7), fill=(225, 225, 225), width=1)
        title_lines = _wrap(draw, row.title, text_font, label_w - 12)
        caption_lines = _wrap(draw, row.caption, small_font, label_w - 12) if row.caption else []
        text_h = 19 * len(title_lines) + 16 * len(caption_lines)
        y = top + max(0, (cell_h - text_h) // 2)
        for line in title_lines:
            draw.text((margin, y), line, fill=_TONES.get(row.tone, _TONES["neutral"]), font=text_font)
            y += 19
        for line in caption_lines:
            draw.text((margin, y), line, fill=_TONES["muted"], font=small_font)
            y += 16
        for i, image in enumerate(np.asarray(row.images)[:count]):
            canvas.paste(_tile(image, scale), (margin + label_w + i * (cell_w + gap), top))
    y = header_h + len(rows) * row_h
    for line in footer_lines:
        draw.text((margin, y), line, fill=_TONES["muted"], font=small_font)
        y += 18
    path = Path(path)
    canvas.save(path, format="PNG", optimize=True)
    return path
