"""``BenchReport``: the bench's results (:mod:`edgeguard.bench.results`) with their Markdown and pictures.

Writers: CSV and JSON (:mod:`edgeguard.bench.results`), Markdown (:mod:`edgeguard.bench.markdown`),
a PNG plot of leakage against accuracy and latency and the utility frontier (matplotlib, Agg
backend: the ``bench`` extra) and PNG grids of originals against reconstructions (pillow;
:mod:`edgeguard.bench.plots`).
"""

from __future__ import annotations

import os
from pathlib import Path

import edgeguard.bench.markdown as markdown
import edgeguard.bench.plots as plots
from edgeguard.bench.results import (
    CSV_COLUMNS,
    RUNG_NAMES,
    TARGET_ACCURACY_DROP,
    TARGET_GAIN_DB,
    TARGET_RISK,
    BenchResults,
    BenchRow,
)

__all__ = [
    "BenchRow",
    "BenchReport",
    "CSV_COLUMNS",
    "TARGET_ACCURACY_DROP",
    "TARGET_GAIN_DB",
    "TARGET_RISK",
    "RUNG_NAMES",
]


class BenchReport(BenchResults):
    """Everything one bench run measured, with its Markdown page, README fragment, plots and grids."""

    def to_markdown(self, title: str = "Latency versus leakage of edgeguard's output filters") -> str:
        return markdown.render(self, title)

    def readme_fragment(self) -> str:
        """A short Markdown table (worst-case leakage by filter, attacker named) for the README generator."""
        return markdown.readme_fragment(self)

    def plot(self, path: str | os.PathLike) -> Path:
        return plots.plot(self, path)

    def frontier(self, path: str | os.PathLike) -> Path:
        return plots.frontier(self, path)

    def reconstruction_grid(self, path: str | os.PathLike, scale: int = 2) -> Path:
        return plots.reconstruction_grid(self, path, scale)

    def worst_case_grid(self, path: str | os.PathLike, scale: int = 2) -> Path:
        return plots.worst_case_grid(self, path, scale)

    def write(self, out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
        """Write ``stem``.csv/.md/.json, ``stem``.png (plot), ``stem``_frontier.png (needs matplotlib),
        ``stem``_reconstructions.png and ``stem``_worst_case.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.write_csv(out / f"{stem}.csv")}
        if plots.matplotlib_available():
            paths["plot"] = self.plot(out / f"{stem}.png")
            paths["frontier"] = self.frontier(out / f"{stem}_frontier.png")
        else:
            self.notes.append("matplotlib is not installed (pip install 'edgeguard[bench]'): no plot was written.")
        if self.originals is not None:
            paths["reconstructions"] = self.reconstruction_grid(out / f"{stem}_reconstructions.png")
            paths["worst_case"] = self.worst_case_grid(out / f"{stem}_worst_case.png")
        md = out / f"{stem}.md"
        md.write_text(self.to_markdown())
        paths["markdown"] = md
        js = out / f"{stem}.json"
        js.write_text(self.to_json())
        paths["json"] = js
        return paths
