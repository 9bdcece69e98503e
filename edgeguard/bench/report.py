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

__all__ = [
    "BenchRow",
    "BenchReport",
    "CSV_COLUMNS",
    "TARGET_ACCURACY_DROP",
    "TARGET_GAIN_DB",
    "TARGET_RISK",
    "RUNG_NAMES",
]

#: The issue's target: accuracy within this many points of raw ...
TARGET_ACCURACY_DROP = 0.5
#: ... while the worst-case measured PSNR gain over the label-only baseline (max over the ladder) is at most this.
TARGET_GAIN_DB = 0.1
#: The earlier target on the adaptive attacker's R (reported, no longer the criterion: R barely moves on FMNIST).
TARGET_RISK = 1.05
_NAN = float("nan")

#: The attacker behind each rung of the ladder (named next to every number).
RUNG_NAMES = {
    "server": "rung 1: the server's decoder as trained",
    "adaptive": "rung 2: decoder refitted on filtered outputs",
    "through": "rung 3: classifier + decoder trained through the filter",
}


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
    # (c) rung 3: a classifier + decoder trained through the filter (edgeguard.bench.ladder)
    through_status: str = "not run"  # "run" | "cached" | "not run: why"
    through_accuracy: float = _NAN  # accuracy of the release of the model trained through the filter
    through_psnr: float = _NAN
    through_ssim: float = _NAN
    through_risk: float = _NAN
    through_seconds: float = _NAN  # training time of the rung-3 job (when it was computed)
    # the worst case over the rungs that ran, against the label-only baseline
    worst_rung: str = "adaptive"  # "server" | "adaptive" | "through": the rung with the highest PSNR
    worst_psnr_gain_db: float = _NAN
    worst_ssim_gain: float = _NAN  # max SSIM over the rungs minus the label-only SSIM
    worst_risk_vs_label_only: float = _NAN  # max R over the rungs / label-only R
    # task utility of the release
    top3_accuracy: float = _NAN  # true class among the release's 3 highest values (label releases: top-1)
    confidence_auroc: float = _NAN  # AUROC of the released top-1 value for right vs wrong (labels: 0.5)
    server_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    adaptive_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    through_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    worst_examples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_examples")}

    def meets(self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB) -> bool:
        """Accuracy within ``max_accuracy_drop`` points of raw and worst-case PSNR gain <= ``max_gain_db``."""
        gain = self.worst_psnr_gain_db
        return self.accuracy_drop_points <= max_accuracy_drop + 1e-9 and math.isfinite(gain) and gain <= max_gain_db


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
    repeats: list[Any] = field(default_factory=list)  # edgeguard.bench.repeats.RepeatRow

    # --- queries ------------------------------------------------------------------------
    def row(self, spec: str) -> BenchRow:
        """The row of filter ``spec`` (its canonical text)."""
        for row in self.rows:
            if row.filter == spec:
                return row
        raise KeyError(f"expected one of {[r.filter for r in self.rows]}, got {spec!r}")

    def meeting_target(
        self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB
    ) -> list[BenchRow]:
        """Filters (not the raw output) that keep accuracy and hold the worst-case PSNR gain to ``max_gain_db``."""
        return [row for row in self.rows if row.filter != "none" and row.meets(max_accuracy_drop, max_gain_db)]

    def rungs_run(self) -> str:
        """Which rungs of the ladder the worst case is taken over."""
        ran = any(row.through_status in ("run", "cached") for row in self.rows)
        return "rungs 1-3" if ran else "rungs 1-2 (rung 3 did not run)"

    def target_statement(
        self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB
    ) -> str:
        """A sentence, computed from the rows, on which filters meet the target (or that none does)."""
        met = self.meeting_target(max_accuracy_drop, max_gain_db)
        goal = (
            f"accuracy within {max_accuracy_drop:g} points of raw and worst-case measured PSNR gain over the "
            f"label-only baseline <= {max_gain_db:g} dB, worst case over {self.rungs_run()}"
        )
        total = len(self.rows) - self._has_raw()
        if met:
            fast = min(met, key=lambda r: (r.latency_ratio, r.worst_psnr_gain_db))
            useful = max(met, key=lambda r: (_score(r.confidence_auroc), _score(r.top3_accuracy), -r.capacity_bits))
            text = (
                f"Target ({goal}): met by {len(met)} of {total} filters: "
                + ", ".join(
                    f"`{r.filter}` (acc {100 * r.accuracy:.2f}%, worst gain {r.worst_psnr_gain_db:+.2f} dB, "
                    f"{_number(r.capacity_bits, 1)} bits{self._caveats(r)})"
                    for r in met
                )
                + f". Fastest of them: `{fast.filter}` (latency x{fast.latency_ratio:.2f}); most useful (confidence "
                f"AUROC, then top-3 accuracy): `{useful.filter}` (AUROC {_number(useful.confidence_auroc)}, top-3 "
                f"{_percent(useful.top3_accuracy)})."
            )
            solid = [r for r in met if not self._caveats(r)]
            if solid:
                text += (
                    " With a finite capacity bound, measured on every rung and (if random) not broken by averaging "
                    "repeats: " + ", ".join(f"`{r.filter}` ({_number(r.capacity_bits, 1)} bits)" for r in solid) + "."
                )
            else:
                text += " None of them has a finite capacity bound, a rung-3 measurement and no repeats caveat."
        else:
            keep = [r for r in self.rows if r.filter != "none" and r.accuracy_drop_points <= max_accuracy_drop + 1e-9]
            text = f"Target ({goal}): met by none of the {total} filters."
            if keep:
                best = min(keep, key=lambda r: _finite_or_inf(r.worst_psnr_gain_db))
                text += (
                    f" Of the {len(keep)} filters that keep accuracy, the lowest worst-case gain is "
                    f"{best.worst_psnr_gain_db:+.2f} dB (`{best.filter}`)."
                )
        return text

    def _caveats(self, row: BenchRow) -> str:
        """What weakens a row's "meets the target": no rung 3, no capacity bound, averaging repeats breaks it."""
        notes = []
        if self.rungs_run() == "rungs 1-3" and row.through_status not in ("run", "cached"):
            notes.append("rung 3 not run: rungs 1-2 only")
        if math.isinf(row.capacity_bits):
            notes.append("no capacity bound")
        fresh = [r for r in self.repeats if r.filter == row.filter and r.noise == "fresh"]
        if fresh:
            most = max(fresh, key=lambda r: r.repeats)
            if most.repeats > 1 and most.psnr_gain_db > TARGET_GAIN_DB:
                notes.append(f"averaging {most.repeats} repeats: {most.psnr_gain_db:+.2f} dB")
        return "; " + "; ".join(notes) if notes else ""

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
                "max_worst_case_psnr_gain_db": TARGET_GAIN_DB,
                "worst_case_over": self.rungs_run(),
                "met_by": [r.filter for r in self.meeting_target()],
                "statement": self.target_statement(),
            },
            "repeats": [row.to_dict() for row in self.repeats],
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "BenchReport":
        """A report back from :meth:`to_dict` / the JSON file (without the example images of the grids)."""
        from edgeguard.bench.repeats import RepeatRow

        names = {f.name for f in fields(BenchRow)}
        keep_none = ("attack_best_epoch", "projection_rank")
        rows = [
            BenchRow(**{k: (v if k in keep_none else _from_json(v)) for k, v in row.items() if k in names})
            for row in document["rows"]
        ]
        repeats = [RepeatRow(**row) for row in document.get("repeats", [])]
        return cls(
            rows=rows,
            raw_accuracy=document["raw_accuracy"],
            label_only=dict(document["label_only"]),
            settings=dict(document["settings"]),
            machine=dict(document["machine"]),
            notes=list(document.get("notes", [])),
            repeats=repeats,
        )

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
            "### The attacker ladder",
            "",
            "PSNR (dB) / SSIM / R of each rung on the evaluation images; *worst case* = the rung with the highest "
            "PSNR, as a gain over the label-only baseline (dB / SSIM difference / R ratio). "
            f"{RUNG_NAMES['server']}; {RUNG_NAMES['adaptive']} (winner in *r2 by*); "
            f"{RUNG_NAMES['through']} ({self.settings.get('through', {}).get('budget', 'not run')}), with the "
            "accuracy of that model's release (*r3 acc*).",
            "",
            "| filter | capacity bits | acc % | drop pts | ratio | rung 1 | rung 2 | r2 by | rung 3 | r3 acc % "
            "| worst case: gain dB / dSSIM / R ratio | worst rung | top-3 % | conf. AUROC |",
            "|---|---:|---:|---:|---:|---|---|---|---|---:|---|---|---:|---:|",
        ]
        for r in self.rows:
            through = (
                f"{r.through_psnr:.2f} / {r.through_ssim:.3f} / {r.through_risk:.3f}"
                if r.through_status in ("run", "cached")
                else "not run"
            )
            lines.append(
                f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | {100 * r.accuracy:.2f} "
                f"| {r.accuracy_drop_points:.2f} | {r.latency_ratio:.3f} "
                f"| {r.server_psnr:.2f} / {r.server_ssim:.3f} / {r.server_risk:.3f} "
                f"| {r.adaptive_psnr:.2f} / {r.adaptive_ssim:.3f} / {r.adaptive_risk:.3f} | {r.attack_decoder} "
                f"| {through} | {_percent(r.through_accuracy)} "
                f"| **{r.worst_psnr_gain_db:+.2f}** / {r.worst_ssim_gain:+.3f} / {r.worst_risk_vs_label_only:.3f} "
                f"| {r.worst_rung} | {_percent(r.top3_accuracy)} | {_number(r.confidence_auroc)} |"
            )
        lines += ["", self.target_statement(), ""]
        lines += [
            "### Latency",
            "",
            "| filter | latency us | raw us | ratio |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| `{r.filter}` | {r.latency_us:.1f} | {r.raw_latency_us:.1f} | {r.latency_ratio:.3f} |" for r in self.rows
        ]
        lines += ["", *self._repeats_markdown(), *self._through_failures(), "## How to read it", ""]
        lines += [
            "- *rung 1*: the server's decoder as trained, run by onnxruntime on the release mapped to its input "
            "(column `decoder_input` of the CSV). *rung 2*: an attacker who knows the filter and refits the decoder "
            "on filtered outputs (see Setup); *r2 by*: the candidate that won on held-out attacker data (`finetuned` "
            "decoder, `server` decoder as trained, `knn`, `label_only`; the CSV also has the fine-tuning epoch kept "
            "and the projection rank for R). *rung 3*: a classifier and decoder trained through the filter (the "
            "strongest attacker measured here); *r3 acc*: the accuracy of that model's release. *worst case*: "
            "the rung with the highest PSNR, as gain over the label-only baseline. *top-3*: the true class among "
            "the release's 3 highest values (a label release: its top-1 accuracy). *conf. AUROC*: how well the "
            "released top-1 value tells right from wrong top-1 labels (0.5 = no confidence information).",
            "- The capacity bound (bits per release) holds for every attacker; every other number is measured and "
            "holds only for the attackers named. `clipped_laplace` draws its noise with OpenDP's sampler, which "
            "cannot be seeded: its rows are not reproducible bit for bit.",
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

    def _repeats_markdown(self) -> list[str]:
        if not self.repeats:
            return []
        counts = sorted({row.repeats for row in self.repeats})
        s = self.settings.get("repeats_experiment", {})
        lines = [
            "### Repeated queries",
            "",
            f"PSNR gain (dB) over the label-only baseline when the receiver averages R releases of the same input, "
            f"on {s.get('eval_size', '?')} evaluation images; attacker: the better (on held-out attacker data) of "
            f"rung 1 and rung 2 fine-tuned for {s.get('epochs', '?')} epoch(s) on R-averaged releases of "
            f"{s.get('train_size', '?')} of its own images. *consistent*: the same spec with `consistent=true` "
            "(noise keyed by an HMAC of the input; = marks R releases that were byte-identical).",
            "",
            "| filter | noise | " + " | ".join(f"R = {c}" for c in counts) + " |",
            "|---|---|" + "---:|" * len(counts),
        ]
        table: dict[tuple[str, str], dict[int, Any]] = {}
        for row in self.repeats:
            table.setdefault((row.filter, row.noise), {})[row.repeats] = row
        for (name, noise), cells in table.items():
            values = []
            for c in counts:
                row = cells.get(c)
                values.append(
                    "–" if row is None else f"{row.psnr_gain_db:+.2f}{' =' if c > 1 and row.identical else ''}"
                )
            lines.append(f"| `{name}` | {noise} | " + " | ".join(values) + " |")
        statement = self.repeats_statement()
        return [*lines, "", *([statement, ""] if statement else [])]

    def _through_failures(self) -> list[str]:
        missing = [r for r in self.rows if r.through_status not in ("run", "cached")]
        if not missing:
            return []
        reasons: dict[str, list[str]] = {}
        for r in missing:
            reasons.setdefault(r.through_status, []).append(r.filter)
        lines = ["### Rung 3 not run", ""]
        for reason, names in reasons.items():
            lines.append(f"- {reason}: " + ", ".join(f"`{n}`" for n in names))
        return [*lines, ""]

    def readme_fragment(self) -> str:
        """A short Markdown table (worst-case leakage by filter, attacker named) for the README generator."""
        lines = [
            "| release | capacity (bits) | accuracy % | worst-case PSNR gain over label-only (dB) | by | "
            "rung 1 / rung 2 / rung 3 gain (dB) |",
            "|---|---:|---:|---:|---|---|",
        ]
        base = self.label_only.get("psnr", _NAN)
        for r in self.rows:
            through = f"{r.through_psnr - base:+.2f}" if r.through_status in ("run", "cached") else "not run"
            lines.append(
                f"| `{r.filter}` | {_number(r.capacity_bits, 1)} | {100 * r.accuracy:.2f} | "
                f"{r.worst_psnr_gain_db:+.2f} | {r.worst_rung} | {r.server_psnr - base:+.2f} / "
                f"{r.adaptive_psnr_gain_db:+.2f} / {through} |"
            )
        s = self.settings
        lines += [
            "",
            f"Attackers: {RUNG_NAMES['server']}; {RUNG_NAMES['adaptive']} (fine-tuned {s.get('attack_epochs')} "
            f"epochs on {s.get('attack_train')} images); {RUNG_NAMES['through']} "
            f"({s.get('through', {}).get('budget', 'not run')}). Worst case = max over {self.rungs_run()}; the "
            "capacity bound is the only figure that holds for every attacker.",
            self.target_statement(),
        ]
        repeats = self.repeats_statement()
        if repeats:
            lines.append(repeats)
        return "\n".join(lines) + "\n"

    def repeats_statement(self) -> str:
        """One sentence, computed from the repeats rows: what averaging does to fresh and to consistent noise."""
        fresh: dict[str, dict[int, Any]] = {}
        consistent: dict[str, dict[int, Any]] = {}
        for row in self.repeats:
            (fresh if row.noise == "fresh" else consistent).setdefault(row.filter, {})[row.repeats] = row
        counts = sorted({row.repeats for row in self.repeats})
        if len(counts) < 2 or not fresh:
            return ""
        low, high = counts[0], counts[-1]
        rises = {
            name: cells[high].psnr_gain_db - cells[low].psnr_gain_db
            for name, cells in fresh.items()
            if low in cells and high in cells
        }
        worst = max(rises, key=rises.get)
        text = (
            f"Repeated queries (best of rungs 1-2 on the average of R releases of one input): fresh noise averages "
            f"away (largest rise: `{worst}`, {fresh[worst][low].psnr_gain_db:+.2f} dB at R = {low} to "
            f"{fresh[worst][high].psnr_gain_db:+.2f} dB at R = {high})"
        )
        identical = [cells for cells in consistent.values() if high in cells and cells[high].identical]
        if consistent:
            text += (
                f"; consistent noise (`consistent=true`) gave byte-identical releases for {len(identical)} of "
                f"{len(consistent)} filters at R = {high}, so its gain stays at the R = {low} value"
            )
        return text + "."

    # --- files --------------------------------------------------------------------------
    def write(self, out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
        """Write ``stem``.csv/.md/.json, ``stem``.png (plot), ``stem``_frontier.png (needs matplotlib),
        ``stem``_reconstructions.png and ``stem``_worst_case.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.write_csv(out / f"{stem}.csv")}
        plot = out / f"{stem}.png"
        if _matplotlib_available():
            paths["plot"] = self.plot(plot)
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

    def plot(self, path: str | os.PathLike) -> Path:
        """Adaptive R and PSNR gain against accuracy and against the latency ratio (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(2, 2, figsize=(13, 10))
        accuracy = [100 * r.accuracy for r in self.rows]
        ratio = [r.latency_ratio for r in self.rows]
        metrics = [
            ("worst_risk_vs_label_only", "worst-case R / label-only R"),
            ("worst_psnr_gain_db", "worst-case PSNR gain (dB)"),
        ]
        for row_index, (key, label) in enumerate(metrics):
            values = [getattr(r, key) for r in self.rows]
            baseline = 1.0 if key == "worst_risk_vs_label_only" else 0.0
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
                if key == "worst_psnr_gain_db":
                    axis.axhline(
                        TARGET_GAIN_DB, color="tab:green", linestyle=":", linewidth=1, label=f"+{TARGET_GAIN_DB} dB"
                    )
                if column == 0:
                    axis.axvline(
                        100 * self.raw_accuracy, color="tab:red", linestyle=":", linewidth=1, label="raw accuracy"
                    )
                axis.set_xlabel(xlabel)
                axis.set_ylabel(label)
                axis.grid(alpha=0.3)
                axis.legend(fontsize=7, loc="best")
        figure.suptitle(f"edgeguard output filters: worst-case leakage ({self.rungs_run()}) vs accuracy and latency")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return Path(path)

    def frontier(self, path: str | os.PathLike) -> Path:
        """Task utility against worst-case measured leakage, one point per filter labelled with its capacity bits.

        Panels: accuracy (all filters); accuracy zoomed on the filters within 3 points of raw and 1.5 dB of the
        label-only baseline; the usefulness of the released confidence (AUROC).
        """
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 3, figsize=(21, 7))
        raw = 100 * self.raw_accuracy
        panels = [
            ("accuracy", "accuracy of the release (%)", 100.0, None),
            ("accuracy", "accuracy (%), zoom: within 3 points of raw and 1.5 dB", 100.0, (raw - 3.0, 1.5)),
            ("confidence_auroc", "usefulness: AUROC of the released confidence (right vs wrong top-1)", 1.0, None),
        ]
        for axis, (key, label, factor, zoom) in zip(axes, panels):
            rows = self.rows
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
            axis.set_xlabel(f"worst-case measured PSNR gain over label-only (dB; max over {self.rungs_run()})")
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

    def reconstruction_grid(self, path: str | os.PathLike, scale: int = 2) -> Path:
        """Originals, the label-only baseline, then per filter: rung 1 | rung 2 | rung 3 reconstructions (pillow)."""
        strip = [
            ("original", [self.originals] * 3),
            ("label-only", [self.label_only_examples] * 3),
        ]
        strip += [(r.filter, [r.server_examples, r.adaptive_examples, r.through_examples]) for r in self.rows]
        titles = [
            "rung 1: server decoder as trained",
            "rung 2: refitted on filtered outputs",
            "rung 3: trained through",
        ]
        return self._grid(path, strip, titles, scale)

    def worst_case_grid(self, path: str | os.PathLike, scale: int = 2) -> Path:
        """Originals against the worst-case reconstruction of every filter (the rung with the highest PSNR)."""
        strip = [("original", [self.originals]), ("label-only", [self.label_only_examples])]
        strip += [(f"{r.filter} ({r.worst_rung})", [r.worst_examples]) for r in self.rows]
        return self._grid(path, strip, [f"worst case over {self.rungs_run()}"], scale)

    def _grid(self, path: str | os.PathLike, strip: list[tuple[str, list[Any]]], titles: list[str], scale: int) -> Path:
        from PIL import Image, ImageDraw, ImageFont

        originals = np.asarray(self.originals)
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


def _score(value: float) -> float:
    return value if isinstance(value, float | int) and math.isfinite(value) else -math.inf


def _finite_or_inf(value: float) -> float:
    return value if isinstance(value, float | int) and math.isfinite(value) else math.inf


def _percent(value: float) -> str:
    return "–" if not isinstance(value, float | int) or not math.isfinite(value) else f"{100 * value:.2f}"


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


def _from_json(value: Any) -> Any:
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return math.nan if value is None else value


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
