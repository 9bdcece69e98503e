"""The bench's pictures: leakage against accuracy and latency, the utility frontier, reconstruction grids."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.bench.results import TARGET_ACCURACY_DROP, TARGET_GAIN_DB, BenchResults

__all__ = ["plot", "frontier", "reconstruction_grid", "worst_case_grid", "matplotlib_available"]


def plot(report: BenchResults, path: str | os.PathLike) -> Path:
    """Adaptive R and PSNR gain against accuracy and against the latency ratio (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 10))
    accuracy = [100 * r.accuracy for r in report.rows]
    ratio = [r.latency_ratio for r in report.rows]
    metrics = [
        ("worst_risk_vs_label_only", "worst-case R / label-only R"),
        ("worst_psnr_gain_db", "worst-case PSNR gain (dB)"),
    ]
    for row_index, (key, label) in enumerate(metrics):
        values = [getattr(r, key) for r in report.rows]
        baseline = 1.0 if key == "worst_risk_vs_label_only" else 0.0
        for column, (xs, xlabel) in enumerate(
            [(accuracy, "accuracy of the release (%)"), (ratio, "latency ratio (SafeModel / raw onnxruntime)")]
        ):
            axis = axes[row_index][column]
            colours = [
                "tab:red" if r.filter == "none" else ("tab:green" if r.meets() else "tab:blue") for r in report.rows
            ]
            axis.scatter(xs, values, c=colours, s=22)
            for x, y, r in zip(xs, values, report.rows):
                axis.annotate(r.filter, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
            axis.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="label-only baseline")
            if key == "worst_psnr_gain_db":
                axis.axhline(
                    TARGET_GAIN_DB, color="tab:green", linestyle=":", linewidth=1, label=f"+{TARGET_GAIN_DB} dB"
                )
            if column == 0:
                axis.axvline(
                    100 * report.raw_accuracy, color="tab:red", linestyle=":", linewidth=1, label="raw accuracy"
                )
            axis.set_xlabel(xlabel)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7, loc="best")
    figure.suptitle(f"edgeguard output filters: worst-case leakage ({report.rungs_run()}) vs accuracy and latency")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def frontier(report: BenchResults, path: str | os.PathLike) -> Path:
    """Task utility against worst-case measured leakage, one point per filter labelled with its capacity bits.

    Panels: accuracy (all filters); accuracy zoomed on the filters within 3 points of raw and 1.5 dB of the
    label-only baseline; the usefulness of the released confidence (AUROC).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(21, 7))
    raw = 100 * report.raw_accuracy
    panels = [
        ("accuracy", "accuracy of the release (%)", 100.0, None),
        ("accuracy", "accuracy (%), zoom: within 3 points of raw and 1.5 dB", 100.0, (raw - 3.0, 1.5)),
        ("confidence_auroc", "usefulness: AUROC of the released confidence (right vs wrong top-1)", 1.0, None),
    ]
    for axis, (key, label, factor, zoom) in zip(axes, panels):
        rows = report.rows
        if zoom is not None:
            rows = [r for r in rows if 100 * r.accuracy >= zoom[0] and r.worst_psnr_gain_db <= zoom[1]]
        gains = [r.worst_psnr_gain_db for r in rows]
        values = [factor * getattr(r, key) for r in rows]
        colours = ["tab:red" if r.filter == "none" else ("tab:green" if r.meets() else "tab:blue") for r in rows]
        axis.scatter(gains, values, c=colours, s=24)
        for index, (x, y, r) in enumerate(zip(gains, values, rows)):
            if math.isfinite(x) and math.isfinite(y):
                bits = "inf" if math.isinf(r.capacity_bits) else f"{r.capacity_bits:.3g}"
                axis.annotate(
                    f"{r.filter} [{bits} b]",
                    (x, y),
                    fontsize=5.5,
                    xytext=(3, 2 + 7 * (index % 3) - 7),
                    textcoords="offset points",
                )
        axis.axvline(0.0, color="grey", linestyle="--", linewidth=1, label="label-only baseline")
        axis.axvline(TARGET_GAIN_DB, color="tab:green", linestyle=":", linewidth=1, label=f"+{TARGET_GAIN_DB} dB")
        if key == "accuracy":
            axis.axhline(raw, color="tab:red", linestyle=":", linewidth=1, label="raw accuracy")
            axis.axhline(
                raw - TARGET_ACCURACY_DROP,
                color="tab:green",
                linestyle=":",
                linewidth=1,
                label=f"raw - {TARGET_ACCURACY_DROP} pts",
            )
        axis.set_xlabel(f"worst-case measured PSNR gain over label-only (dB; max over {report.rungs_run()})")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(
        "Utility against worst-case leakage; [b] = capacity bound in bits per release (green: meets the target)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def reconstruction_grid(report: BenchResults, path: str | os.PathLike, scale: int = 2) -> Path:
    """Originals, the label-only baseline, then per filter: rung 1 | rung 2 | rung 3 reconstructions (pillow)."""
    strip = [
        ("original", [report.originals] * 3),
        ("label-only", [report.label_only_examples] * 3),
    ]
    strip += [(r.filter, [r.server_examples, r.adaptive_examples, r.through_examples]) for r in report.rows]
    titles = [
        "rung 1: server decoder as trained",
        "rung 2: refitted on filtered outputs",
        "rung 3: trained through",
    ]
    return _grid(report, path, strip, titles, scale)


def worst_case_grid(report: BenchResults, path: str | os.PathLike, scale: int = 2) -> Path:
    """Originals against the worst-case reconstruction of every filter (the rung with the highest PSNR)."""
    strip = [("original", [report.originals]), ("label-only", [report.label_only_examples])]
    strip += [(f"{r.filter} ({r.worst_rung})", [r.worst_examples]) for r in report.rows]
    return _grid(report, path, strip, [f"worst case over {report.rungs_run()}"], scale)


def _grid(
    report: BenchResults, path: str | os.PathLike, strip: list[tuple[str, list[Any]]], titles: list[str], scale: int
) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    originals = np.asarray(report.originals)
    count, channels, height, width = originals.shape
    cell_h, cell_w = height * scale, width * scale
    label_w, gap, header = 230, 12, 18
    blocks = len(titles)
    canvas_w = label_w + blocks * count * cell_w + (blocks - 1) * gap
    canvas = Image.new("RGB", (canvas_w, header + len(strip) * (cell_h + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for block, title in enumerate(titles):
        draw.text((label_w + block * (count * cell_w + gap), 2), title, fill="black", font=font)
    for line, (name, groups) in enumerate(strip):
        top = header + line * (cell_h + 2)
        draw.text((4, top + cell_h // 2 - 5), name[:38], fill="black", font=font)
        for block, images in enumerate(groups):
            if images is None:
                continue
            for i in range(min(count, len(images))):
                tile = _tile(images[i], scale)
                canvas.paste(tile, (label_w + block * (count * cell_w + gap) + i * cell_w, top))
    canvas.save(path)
    return Path(path)


def _tile(image: np.ndarray, scale: int) -> Any:
    from PIL import Image

    pixels = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    pixels = (pixels * 255 + 0.5).astype(np.uint8)
    if pixels.shape[0] == 1:
        tile = Image.fromarray(pixels[0], mode="L").convert("RGB")
    else:
        tile = Image.fromarray(pixels[:3].transpose(1, 2, 0), mode="RGB")
    return tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
