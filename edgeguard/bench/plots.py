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
    """Accuracy against worst-case measured leakage: the Pareto frontier and the recommended releases labelled.

    Circles: releases with a finite capacity bound; crosses: unbounded ones (no guarantee whatever they
    measure). Green: meets the target; the rest of the releases are listed in the table beside the plot.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    raw = 100 * report.raw_accuracy
    floor = raw - _ZOOM_POINTS  # rows below this accuracy go to the table only (they would squash the plot)
    rows = [
        r
        for r in report.rows
        if math.isfinite(r.worst_psnr_gain_db) and math.isfinite(r.accuracy) and 100 * r.accuracy >= floor
    ]
    frontier_rows = {r.filter for r in report.pareto()} & {r.filter for r in rows}
    recommended = {r.filter for r in report.recommended()}
    labelled = frontier_rows | (recommended & {r.filter for r in rows})
    figure = plt.figure(figsize=(17, 8.5))
    axis = figure.add_axes((0.05, 0.09, 0.52, 0.8))
    for bounded, marker, name in ((True, "o", "finite capacity bound"), (False, "X", "no capacity bound")):
        group = [r for r in rows if math.isfinite(r.capacity_bits) == bounded]
        if not group:
            continue
        colours = ["tab:green" if r.meets() else ("tab:red" if r.filter == "none" else "tab:blue") for r in group]
        axis.scatter(
            [r.worst_psnr_gain_db for r in group],
            [100 * r.accuracy for r in group],
            c=colours,
            marker=marker,
            s=60 if bounded else 70,
            edgecolors="black" if bounded else "none",
            linewidths=0.6,
            zorder=3,
        )
        axis.scatter([], [], c="white" if bounded else "dimgrey", marker=marker, edgecolors="black", label=name)
    front = sorted((r for r in rows if r.filter in frontier_rows), key=lambda r: r.worst_psnr_gain_db)
    if len(front) > 1:
        axis.plot(
            [r.worst_psnr_gain_db for r in front],
            [100 * r.accuracy for r in front],
            color="grey",
            linewidth=1,
            zorder=2,
            label="Pareto frontier",
        )
    # labels in one column of the axes (never on top of each other), each with a leader line to its point
    chosen = sorted((r for r in rows if r.filter in labelled), key=lambda r: (-r.accuracy, r.worst_psnr_gain_db))
    for index, r in enumerate(chosen):
        bits = "∞" if math.isinf(r.capacity_bits) else f"{r.capacity_bits:.3g}"
        tag = " (recommended)" if r.filter in recommended else ""
        axis.annotate(
            f"{r.filter} [{bits} b, {r.worst_psnr_gain_db:+.2f} dB]{tag}",
            (r.worst_psnr_gain_db, 100 * r.accuracy),
            xycoords="data",
            xytext=(0.42, 0.9 - index * 0.045),
            textcoords="axes fraction",
            fontsize=8,
            fontweight="bold" if tag else "normal",
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5},
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    axis.axvline(0.0, color="grey", linestyle="--", linewidth=1, label="label-only baseline")
    axis.axvline(TARGET_GAIN_DB, color="tab:green", linestyle=":", linewidth=1, label=f"+{TARGET_GAIN_DB} dB target")
    axis.axhline(raw, color="tab:red", linestyle=":", linewidth=1, label="raw accuracy")
    axis.axhline(
        raw - TARGET_ACCURACY_DROP,
        color="tab:green",
        linestyle=":",
        linewidth=1,
        label=f"raw - {TARGET_ACCURACY_DROP} pts",
    )
    axis.set_xlabel(f"worst-case measured PSNR gain over label-only (dB; max over {report.rungs_run()})")
    axis.set_ylabel(f"accuracy of the release (%); releases below {floor:.1f}% are in the table only")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("labelled: Pareto frontier and recommended releases; [b] = capacity bound in bits", fontsize=10)

    table_axis = figure.add_axes((0.6, 0.03, 0.39, 0.9))
    table_axis.axis("off")
    rest = sorted((r for r in report.rows if r.filter not in labelled), key=lambda r: _order(r.worst_psnr_gain_db))
    cells = [
        [
            r.filter,
            "∞" if math.isinf(r.capacity_bits) else f"{r.capacity_bits:.1f}",
            f"{100 * r.accuracy:.2f}",
            f"{r.worst_psnr_gain_db:+.2f}" if math.isfinite(r.worst_psnr_gain_db) else "nan",
            r.worst_rung + ("" if math.isfinite(r.capacity_bits) else " (unbounded)"),
        ]
        for r in rest
    ]
    if cells:
        table = table_axis.table(
            cellText=cells,
            colLabels=["other releases", "bits", "acc %", "gain dB", "by"],
            colWidths=[0.44, 0.1, 0.12, 0.12, 0.22],
            loc="upper center",
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1.0, 1.25)
    figure.suptitle(
        "edgeguard releases: accuracy against worst-case leakage (green: meets the target; "
        "circles: bounded, crosses: unbounded)",
        fontsize=12,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


_ZOOM_POINTS = 12.0


def _order(value: float) -> float:
    return value if math.isfinite(value) else math.inf


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
