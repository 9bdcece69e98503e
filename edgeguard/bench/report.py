"""The bench's results: one :class:`BenchRow` per filter configuration, gathered in a :class:`BenchReport`.

Writers: CSV (one row per configuration, the columns of :data:`CSV_COLUMNS`), Markdown,
JSON, a PNG plot of leakage against accuracy and latency (matplotlib, Agg backend: the
``bench`` extra) and a PNG grid of originals against reconstructions (pillow).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BenchRow", "BenchReport", "CSV_COLUMNS", "TARGET_ACCURACY_DROP", "TARGET_RISK"]

#: The issue's target: accuracy within this many points of raw ...
TARGET_ACCURACY_DROP = 0.5
#: ... while the adaptive attacker's R is at most this.
TARGET_RISK = 1.05


@dataclass
class BenchRow:
    """Accuracy, latency and leakage of one filter configuration (``filter`` is its spec text)."""

    filter: str
    stages: str  # the filters, as Python reprs
    release: str  # what is released: logits | probabilities | scores | labels (index) | labels (one-hot)
    decoder_input: str  # how the release is mapped to the decoder's input (edgeguard.bench.mapping)
    capacity_bits: float  # upper bound per released row (inf = unbounded)
    random: bool
    accuracy: float  # fraction in [0, 1], top-1 of the release on the evaluation split
    accuracy_drop_points: float  # 100 * (raw accuracy - accuracy)
    latency_us: float  # median SafeModel.predict, batch 1
    raw_latency_us: float  # median raw InferenceSession.run, interleaved with it
    latency_ratio: float
    server_psnr: float  # (a) the server's decoder as trained, on the mapped release
    server_ssim: float
    server_risk: float
    adaptive_psnr: float  # (b) the attacker who knows the filter
    adaptive_ssim: float
    adaptive_risk: float
    adaptive_psnr_gain_db: float  # adaptive PSNR minus the label-only baseline's
    adaptive_risk_vs_label_only: float  # adaptive R / label-only R
    attack_decoder: str  # "finetuned" (the server's decoder fine-tuned) | "knn" (numpy fallback, no torch)
    attack_best_epoch: int | None  # 0 = fine-tuning did not beat the decoder as trained on held-out data
    projection_rank: int | None  # principal components the attacker projected onto for R (None: no projection)
    server_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    adaptive_examples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_examples")}

    def meets(self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_risk: float = TARGET_RISK) -> bool:
        """Accuracy within ``max_accuracy_drop`` points of raw and adaptive R <= ``max_risk``."""
        return self.accuracy_drop_points <= max_accuracy_drop + 1e-9 and self.adaptive_risk <= max_risk


#: The CSV's columns, in order.
CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow) if not f.name.endswith("_examples"))


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class BenchReport:
    """Everything one bench run measured, with the settings and machine it ran on."""

    rows: list[BenchRow]
    raw_accuracy: float
    label_only: dict[str, float]  # psnr, ssim, risk of the per-class mean image (the label-only baseline)
    settings: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    originals: np.ndarray | None = field(default=None, repr=False)
    label_only_examples: np.ndarray | None = field(default=None, repr=False)

    # --- queries ------------------------------------------------------------------------
    def row(self, spec: str) -> BenchRow:
        """The row of filter ``spec`` (its canonical text)."""
        for row in self.rows:
            if row.filter == spec:
                return row
        raise KeyError(f"expected one of {[r.filter for r in self.rows]}, got {spec!r}")

    def meeting_target(
        self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_risk: float = TARGET_RISK
    ) -> list[BenchRow]:
        """Filters (not the raw output) that keep accuracy and bring the adaptive R down to ``max_risk``."""
        return [row for row in self.rows if row.filter != "none" and row.meets(max_accuracy_drop, max_risk)]

    def target_statement(self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_risk: float = TARGET_RISK) -> str:
        """A sentence, computed from the rows, on which filters meet the target (or that none does)."""
        met = self.meeting_target(max_accuracy_drop, max_risk)
        goal = f"accuracy within {max_accuracy_drop:g} points of raw and adaptive-attacker R <= {max_risk:g}"
        if met:
            quiet = min(met, key=lambda r: (r.adaptive_psnr_gain_db, r.latency_ratio))
            fast = min(met, key=lambda r: (r.latency_ratio, r.adaptive_psnr_gain_db))
            text = (
                f"Target ({goal}): met by {len(met)} of {len(self.rows) - self._has_raw()} filters: "
                + ", ".join(f"`{r.filter}` (acc {100 * r.accuracy:.2f}%, R {r.adaptive_risk:.3f})" for r in met)
                + f". Fastest of them: `{fast.filter}` (latency x{fast.latency_ratio:.2f}, adaptive PSNR gain over the "
                f"label-only baseline {fast.adaptive_psnr_gain_db:+.2f} dB); least adaptive PSNR gain: "
                f"`{quiet.filter}` ({quiet.adaptive_psnr_gain_db:+.2f} dB, latency x{quiet.latency_ratio:.2f})."
            )
        else:
            keep = [r for r in self.rows if r.filter != "none" and r.accuracy_drop_points <= max_accuracy_drop + 1e-9]
            text = f"Target ({goal}): met by none of the {len(self.rows) - self._has_raw()} filters."
            if keep:
                best = min(keep, key=lambda r: r.adaptive_risk)
                text += (
                    f" Of the {len(keep)} filters that keep accuracy, the lowest adaptive R is {best.adaptive_risk:.3f} "
                    f"(`{best.filter}`), against {self.label_only['risk']:.3f} for the label-only baseline."
                )
        raw = next((r for r in self.rows if r.filter == "none"), None)
        if raw is not None and raw.adaptive_risk <= max_risk:
            text += (
                f" Caveat: the unfiltered output itself has adaptive R = {raw.adaptive_risk:.3f} <= {max_risk:g} "
                f"(PSNR {raw.adaptive_psnr:.2f} dB, {raw.adaptive_psnr_gain_db:+.2f} dB over the label-only baseline), "
                "so on this model the R threshold does not separate leaking from non-leaking releases; compare the "
                "PSNR gain over the label-only baseline instead."
            )
        return text

    def _has_raw(self) -> int:
        return int(any(r.filter == "none" for r in self.rows))

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [row.to_dict() for row in self.rows],
            "raw_accuracy": self.raw_accuracy,
            "label_only": dict(self.label_only),
            "settings": dict(self.settings),
            "machine": dict(self.machine),
            "notes": list(self.notes),
            "target": {
                "max_accuracy_drop_points": TARGET_ACCURACY_DROP,
                "max_adaptive_risk": TARGET_RISK,
                "met_by": [r.filter for r in self.meeting_target()],
                "statement": self.target_statement(),
            },
        }

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=2) + "\n"

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})
        return path

    def to_markdown(self, title: str = "Latency versus leakage of edgeguard's output filters") -> str:
        s, m, base = self.settings, self.machine, self.label_only
        lines = [
            f"# {title}",
            "",
            f"Generated {s.get('generated', '')} by `{s.get('command', 'edgeguard.bench.run_bench')}`; one run, "
            "every figure below comes from it.",
            "",
            "## Setup",
            "",
            f"- Model `{s.get('model')}` ({s.get('output_kind')} output, {s.get('num_classes')} classes), decoder "
            f"`{s.get('decoder')}`; data `{s.get('data')}`.",
            f"- Splits (seed {s.get('seed')}): {s.get('eval_size')} evaluation images, {s.get('attack_size')} attacker "
            f"images ({s.get('attack_train')} to fine-tune, {s.get('attack_validation')} held out for model "
            "selection), disjoint.",
            f"- Adaptive attacker: {s.get('attacker_description')}; {s.get('attack_epochs')} epochs, batch "
            f"{s.get('attack_batch_size')}, Adam lr {s.get('attack_learning_rate')}.",
            f"- Latency: batch 1, {s.get('repeats')} timed (raw, SafeModel) pairs per configuration in "
            f"{s.get('rounds')} rounds (each round visits the configurations in a new random order, one block each, "
            f"{s.get('warmup')} warm-up pairs per block, call order alternating); onnxruntime CPU provider, "
            f"{s.get('threads')} intra-op thread(s); the raw call is `InferenceSession.run` on the session the "
            "SafeModel wraps. Median wall time; ratio = SafeModel.predict / raw of the same configuration; for "
            "`none` both calls are raw, so its ratio is the measurement's noise floor.",
            f"- Machine: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, shared: timings are indicative), "
            f"{m.get('platform')}, Python {m.get('python')}, numpy {m.get('numpy')}, onnxruntime "
            f"{m.get('onnxruntime')}, torch {m.get('torch')}; load average before {m.get('load_average_before')}.",
            "",
            "## Results",
            "",
            f"Raw accuracy {100 * self.raw_accuracy:.2f}%. Label-only baseline (per-class mean attacker image of the "
            f"predicted class): PSNR {base['psnr']:.2f} dB, SSIM {base['ssim']:.3f}, R {base['risk']:.3f}: an R near "
            "this means nothing beyond the label.",
            "",
            "| filter | capacity bits | acc % | drop pts | latency us | raw us | ratio | server PSNR / SSIM / R "
            "| adaptive PSNR / SSIM / R | gain dB | R / label-only | attacker | epoch | rank |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | {100 * r.accuracy:.2f} "
                f"| {r.accuracy_drop_points:.2f} | {r.latency_us:.1f} | {r.raw_latency_us:.1f} | {r.latency_ratio:.3f} "
                f"| {r.server_psnr:.2f} / {r.server_ssim:.3f} / {r.server_risk:.3f} "
                f"| {r.adaptive_psnr:.2f} / {r.adaptive_ssim:.3f} / {r.adaptive_risk:.3f} "
                f"| {r.adaptive_psnr_gain_db:+.2f} | {r.adaptive_risk_vs_label_only:.3f} | {r.attack_decoder} "
                f"| {_number(r.attack_best_epoch)} | {_number(r.projection_rank)} |"
            )
        lines += ["", self.target_statement(), "", "## How to read it", ""]
        lines += [
            "- *server*: the server's decoder as trained, run by onnxruntime on the release mapped to its input "
            "(column `decoder_input` of the CSV). *adaptive*: an attacker who knows the filter "
            "(see Setup). *gain dB*: adaptive PSNR minus the label-only baseline's PSNR. *attacker*: the "
            "candidate that won on held-out attacker data (`finetuned` decoder, `server` decoder as trained, `knn`, "
            "`label_only`). *epoch*: the fine-tuning epoch kept (0 = the adapted decoder before any step; – = no "
            "fine-tuning). *rank*: the principal components of the attacker's images the reconstruction was "
            "projected onto (– = none).",
            "- R is `edgeguard.metrics.reconstruction_risk` with the Mahalanobis reference fitted on the attacker's "
            "images (its default eigenvalue cutoff); it weighs every pixel direction by the inverse of its variance. "
            "For R the adaptive attacker may project its reconstructions onto the principal components of its "
            "images (column *rank*, chosen on held-out data; no projection is one of the choices); its PSNR and "
            "SSIM are of the unprojected reconstructions (each measure gets the attacker's best post-processing).",
            "- Releases that are not the decoder's input kind are mapped as in `edgeguard/bench/mapping.py`: "
            "probabilities to centred log-probabilities for a logits decoder, argmax labels to one-hot rows (times "
            "the class table of mean raw logits for a logits decoder).",
        ]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    # --- files --------------------------------------------------------------------------
    def write(self, out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
        """Write ``stem``.csv/.md/.json, ``stem``.png (plot; needs matplotlib) and ``stem``_reconstructions.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.write_csv(out / f"{stem}.csv")}
        plot = out / f"{stem}.png"
        if _matplotlib_available():
            paths["plot"] = self.plot(plot)
        else:
            self.notes.append("matplotlib is not installed (pip install 'edgeguard[bench]'): no plot was written.")
        if self.originals is not None:
            paths["reconstructions"] = self.reconstruction_grid(out / f"{stem}_reconstructions.png")
        md = out / f"{stem}.md"
        md.write_text(self.to_markdown())
        paths["markdown"] = md
        js = out / f"{stem}.json"
        js.write_text(self.to_json())
        paths["json"] = js
        return paths

    def plot(self, path: str | os.PathLike) -> Path:
        """Adaptive R and PSNR gain against accuracy and against the latency ratio (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(2, 2, figsize=(13, 10))
        accuracy = [100 * r.accuracy for r in self.rows]
        ratio = [r.latency_ratio for r in self.rows]
        metrics = [("adaptive_risk", "adaptive-attacker R"), ("adaptive_psnr_gain_db", "adaptive PSNR gain (dB)")]
        for row_index, (key, label) in enumerate(metrics):
            values = [getattr(r, key) for r in self.rows]
            baseline = self.label_only["risk"] if key == "adaptive_risk" else 0.0
            for column, (xs, xlabel) in enumerate(
                [(accuracy, "accuracy of the release (%)"), (ratio, "latency ratio (SafeModel / raw onnxruntime)")]
            ):
                axis = axes[row_index][column]
                colours = [
                    "tab:red" if r.filter == "none" else ("tab:green" if r.meets() else "tab:blue") for r in self.rows
                ]
                axis.scatter(xs, values, c=colours, s=22)
                for x, y, r in zip(xs, values, self.rows):
                    axis.annotate(r.filter, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
                axis.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="label-only baseline")
                if key == "adaptive_risk":
                    axis.axhline(TARGET_RISK, color="tab:green", linestyle=":", linewidth=1, label=f"R = {TARGET_RISK}")
                if column == 0:
                    axis.axvline(
                        100 * self.raw_accuracy, color="tab:red", linestyle=":", linewidth=1, label="raw accuracy"
                    )
                axis.set_xlabel(xlabel)
                axis.set_ylabel(label)
                axis.grid(alpha=0.3)
                axis.legend(fontsize=7, loc="best")
        figure.suptitle("edgeguard output filters: leakage to an adaptive attacker vs accuracy and latency")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return Path(path)

    def reconstruction_grid(self, path: str | os.PathLike, scale: int = 2) -> Path:
        """Originals, the label-only baseline, then per filter: server decoder | adaptive attacker (pillow)."""
        from PIL import Image, ImageDraw, ImageFont

        originals = np.asarray(self.originals)
        count, channels, height, width = originals.shape
        cell_h, cell_w = height * scale, width * scale
        label_w, gap, header = 190, 12, 18
        strip = [("original", originals, originals), ("label-only", self.label_only_examples, self.label_only_examples)]
        strip += [(r.filter, r.server_examples, r.adaptive_examples) for r in self.rows]
        canvas_w = label_w + 2 * count * cell_w + gap
        canvas = Image.new("RGB", (canvas_w, header + len(strip) * (cell_h + 2)), "white")
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default()
        draw.text((label_w, 2), "server decoder as trained", fill="black", font=font)
        draw.text((label_w + count * cell_w + gap, 2), "adaptive attacker", fill="black", font=font)
        for line, (name, left, right) in enumerate(strip):
            top = header + line * (cell_h + 2)
            draw.text((4, top + cell_h // 2 - 5), name[:30], fill="black", font=font)
            for block, images in enumerate((left, right)):
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


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
