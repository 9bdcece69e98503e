"""The bench's results: one :class:`BenchRow` per filter configuration, gathered in :class:`BenchResults`.

Queries (which filters meet the target, over which rungs), the sentences computed from the rows,
and the data writers (CSV with the columns of :data:`CSV_COLUMNS`, JSON). Markdown is
:mod:`edgeguard.bench.markdown`, the plots and grids :mod:`edgeguard.bench.plots`; the
:class:`~edgeguard.bench.report.BenchReport` users get has all three.
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

from edgeguard.errors import EdgeguardError

__all__ = [
    "BenchRow",
    "BenchResults",
    "UnknownFilterError",
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
    "codes": "rung 4: hand-built code",
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
    # (d) rung 4: a hand-built code that survives the filter (edgeguard.bench.rung_codes)
    codes_status: str = "not run"  # "run" | "not run: why"
    codes_code: str = ""  # the code kept (e.g. "diff_lattice(b=14,m=9)"; "none (label only)")
    codes_payload_bits: float = _NAN  # payload bits per row when the symbols come back exactly
    codes_bits_carried: float = _NAN  # bits per row actually carried on the evaluation images
    codes_accuracy: float = _NAN  # accuracy of the coded model's release
    codes_psnr: float = _NAN
    codes_ssim: float = _NAN
    codes_risk: float = _NAN
    # the worst case over the rungs that ran, against the label-only baseline
    worst_rung: str = "adaptive"  # "server" | "adaptive" | "through" | "codes": the rung with the highest PSNR
    worst_psnr_gain_db: float = _NAN
    worst_ssim_gain: float = _NAN  # max SSIM over the rungs minus the label-only SSIM
    worst_risk_vs_label_only: float = _NAN  # max R over the rungs / label-only R
    # task utility of the release
    top3_accuracy: float = _NAN  # true class among the release's 3 highest values (label releases: top-1)
    confidence_auroc: float = _NAN  # AUROC of the released top-1 value for right vs wrong (labels: 0.5)
    server_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    adaptive_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    through_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    codes_examples: np.ndarray | None = field(default=None, repr=False, compare=False)
    worst_examples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_examples")}

    def meets(self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB) -> bool:
        """Accuracy within ``max_accuracy_drop`` points of raw and worst-case PSNR gain <= ``max_gain_db``."""
        gain = self.worst_psnr_gain_db
        return self.accuracy_drop_points <= max_accuracy_drop + 1e-9 and math.isfinite(gain) and gain <= max_gain_db

    def set_worst(self, rungs: dict[str, Any], base: tuple[float, float, float]) -> None:
        """The worst case over ``rungs`` (name -> (psnr, ssim, risk, examples)) against the label-only baseline."""
        base_psnr, base_ssim, base_risk = base
        worst = max(rungs, key=lambda name: (_finite(rungs[name][0]), -list(rungs).index(name)))
        self.worst_rung = worst
        self.worst_psnr_gain_db = rungs[worst][0] - base_psnr
        self.worst_ssim_gain = max(_finite(values[1]) for values in rungs.values()) - base_ssim
        worst_risk = max(_finite(values[2]) for values in rungs.values())
        self.worst_risk_vs_label_only = worst_risk / base_risk if base_risk else float("nan")
        self.worst_examples = rungs[worst][3]


#: The CSV's columns, in order.
CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow) if not f.name.endswith("_examples"))


class UnknownFilterError(EdgeguardError, KeyError):
    """A report has no row for the filter asked for."""


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
class BenchResults:
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
        raise UnknownFilterError(f"expected one of {[r.filter for r in self.rows]}, got {spec!r}")

    def meeting_target(
        self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB
    ) -> list[BenchRow]:
        """Filters (not the raw output) that keep accuracy and hold the worst-case PSNR gain to ``max_gain_db``."""
        return [row for row in self.rows if row.filter != "none" and row.meets(max_accuracy_drop, max_gain_db)]

    def rungs_run(self) -> str:
        """Which rungs of the ladder the worst case is taken over."""
        three, four = self._ran("through"), self._ran("codes")
        if three and four:
            return "rungs 1-4"
        if three:
            return "rungs 1-3 (rung 4 did not run)"
        return "rungs 1-2 and 4 (rung 3 did not run)" if four else "rungs 1-2 (rungs 3 and 4 did not run)"

    def _ran(self, rung: str) -> bool:
        """Whether rung 3 ("through") or rung 4 ("codes") ran for any row."""
        return any(getattr(row, f"{rung}_status") in ("run", "cached") for row in self.rows)

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
            text = (
                f"Target ({goal}): met by {len(met)} of {total} filters: "
                + ", ".join(
                    f"`{r.filter}` (acc {100 * r.accuracy:.2f}%, worst gain {r.worst_psnr_gain_db:+.2f} dB, "
                    f"{_number(r.capacity_bits, 1)} bits{self._caveats(r)})"
                    for r in met
                )
                + "."
            )
            solid = self.recommended(max_accuracy_drop, max_gain_db)
            if solid:
                fast = min(solid, key=lambda r: (r.latency_ratio, r.worst_psnr_gain_db))
                useful = max(
                    solid, key=lambda r: (_score(r.confidence_auroc), _score(r.top3_accuracy), -r.capacity_bits)
                )
                text += (
                    " Recommended (a finite capacity bound, measured on every rung that ran and, if random, not broken "
                    "by averaging repeats): "
                    + ", ".join(f"`{r.filter}` ({_number(r.capacity_bits, 1)} bits)" for r in solid)
                    + f". Fastest of them: `{fast.filter}` (latency x{fast.latency_ratio:.2f}); most useful "
                    f"(confidence AUROC, then top-3 accuracy): `{useful.filter}` (AUROC "
                    f"{_number(useful.confidence_auroc)}, top-3 {_percent(useful.top3_accuracy)})."
                )
            else:
                text += (
                    " None of them has a finite capacity bound, a measurement on every rung and no repeats caveat: "
                    "nothing is recommended."
                )
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

    def recommended(
        self, max_accuracy_drop: float = TARGET_ACCURACY_DROP, max_gain_db: float = TARGET_GAIN_DB
    ) -> list[BenchRow]:
        """Filters meeting the target with a finite capacity bound, every rung that ran, no repeats caveat."""
        return [r for r in self.meeting_target(max_accuracy_drop, max_gain_db) if not self._caveats(r)]

    def pareto(self) -> list[BenchRow]:
        """The rows no other row beats on both worst-case gain (lower) and accuracy (higher)."""
        rows = [r for r in self.rows if math.isfinite(r.worst_psnr_gain_db) and math.isfinite(r.accuracy)]
        return [
            r
            for r in rows
            if not any(
                o.worst_psnr_gain_db <= r.worst_psnr_gain_db
                and o.accuracy >= r.accuracy
                and (o.worst_psnr_gain_db < r.worst_psnr_gain_db or o.accuracy > r.accuracy)
                for o in rows
            )
        ]

    def broken_by_codes(self, max_gain_db: float = TARGET_GAIN_DB) -> list[BenchRow]:
        """Releases without a capacity bound whose rung-4 code gains more than ``max_gain_db`` over label-only."""
        base = self.label_only.get("psnr", _NAN)
        return [
            r
            for r in self.rows
            if math.isinf(r.capacity_bits) and r.codes_status == "run" and r.codes_psnr - base > max_gain_db
        ]

    def codes_statement(self, max_gain_db: float = TARGET_GAIN_DB) -> str:
        """One sentence, computed from the rows: which unbounded releases rung 4 breaks, and what it carries."""
        ran = [r for r in self.rows if r.codes_status == "run"]
        if not ran:
            return ""
        base = self.label_only.get("psnr", _NAN)
        unbounded = [r for r in ran if math.isinf(r.capacity_bits)]
        broken = self.broken_by_codes(max_gain_db)
        text = (
            f"Rung 4 (hand-built codes, no training) breaks {len(broken)} of the {len(unbounded)} releases without a "
            f"capacity bound (gain > {max_gain_db:g} dB at the stated accuracy)"
        )
        if broken:
            text += ": " + ", ".join(
                f"`{r.filter}` ({r.codes_psnr - base:+.2f} dB, {_number(r.codes_bits_carried, 1)} bits/row carried)"
                for r in broken
            )
        bounded = [r for r in ran if not math.isinf(r.capacity_bits)]
        over = [r for r in bounded if r.codes_bits_carried > r.capacity_bits + 1e-9]
        if bounded:
            text += (
                f". On the {len(bounded)} bounded releases it carries at most "
                f"{max(r.codes_bits_carried for r in bounded):.1f} bits per row"
                + (f", MORE than the bound on {len(over)} (a bug)" if over else ", never more than their bound")
            )
        return text + "."

    def _caveats(self, row: BenchRow) -> str:
        """What weakens a row's "meets the target": no rung 3, no capacity bound, averaging repeats breaks it."""
        notes = []
        if self._ran("through") and row.through_status not in ("run", "cached"):
            notes.append("rung 3 not run for it")
        if self._ran("codes") and row.codes_status != "run":
            notes.append("rung 4 not run for it")
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
    def from_dict(cls, document: dict[str, Any]) -> Any:
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


def _score(value: float) -> float:
    return value if isinstance(value, float | int) and math.isfinite(value) else -math.inf


def _finite_or_inf(value: float) -> float:
    return value if isinstance(value, float | int) and math.isfinite(value) else math.inf


def _percent(value: float) -> str:
    return "–" if not isinstance(value, float | int) or not math.isfinite(value) else f"{100 * value:.2f}"


def _finite(value: float) -> float:
    return value if isinstance(value, float | int) and np.isfinite(value) else -np.inf


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
