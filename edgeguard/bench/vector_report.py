"""The vector bench's results: one :class:`VectorBenchRow` per filter spec, in a :class:`VectorBenchReport`.

Every leakage figure names its attacker (:data:`edgeguard.bench.vector_attacks.VECTOR_ATTACKERS`);
a row's worst case is the largest gain over the attackers that ran, with that attacker's name.
What the image bench measures and this one does not is listed in ``skipped`` with the reason.
Writers: Markdown, JSON and CSV (no plots: they are pictures of images).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.bench.results import UnknownFilterError
from edgeguard.bench.vector_attacks import AttackerScore

__all__ = ["VectorBenchRow", "VectorBenchReport", "VECTOR_CSV_COLUMNS"]

VECTOR_CSV_COLUMNS = (
    "filter",
    "release",
    "capacity_bits",
    "random",
    "accuracy",
    "accuracy_drop_points",
    "latency_us",
    "raw_latency_us",
    "worst_attacker",
    "worst_gain_db",
    "worst_mean_r2",
)


@dataclass
class VectorBenchRow:
    """Accuracy, latency and leakage of one filter spec against every attacker that ran."""

    filter: str
    release: str  # logits | probabilities | scores | labels (index) | labels (one-hot)
    capacity_bits: float  # upper bound per released row (inf = unbounded)
    random: bool
    accuracy: float
    accuracy_drop_points: float
    latency_us: float
    raw_latency_us: float
    attackers: dict[str, AttackerScore] = field(default_factory=dict)

    @property
    def worst_attacker(self) -> str:
        """The attacker with the largest gain over label-only (ties: the first that ran)."""
        return max(self.attackers, key=lambda name: self.attackers[name].gain_db)

    @property
    def worst_gain_db(self) -> float:
        return self.attackers[self.worst_attacker].gain_db

    @property
    def worst_mean_r2(self) -> float:
        return self.attackers[self.worst_attacker].mean_r2

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": self.filter,
            "release": self.release,
            "capacity_bits": _json_number(self.capacity_bits),
            "random": self.random,
            "accuracy": self.accuracy,
            "accuracy_drop_points": self.accuracy_drop_points,
            "latency_us": _json_number(self.latency_us),
            "raw_latency_us": _json_number(self.raw_latency_us),
            "worst_attacker": self.worst_attacker,
            "worst_gain_db": self.worst_gain_db,
            "worst_mean_r2": _json_number(self.worst_mean_r2),
            "attackers": {name: value.to_dict() for name, value in self.attackers.items()},
        }


def _json_number(value: float) -> Any:
    """JSON has no inf or NaN: inf -> "inf", NaN -> None."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return _json_number(value)


def _cell(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "unbounded"
    return f"{value:.{digits}f}"


@dataclass
class VectorBenchReport:
    """What ``edgeguard bench`` measured on a vector model (see :mod:`edgeguard.bench.vector_run`)."""

    rows: list[VectorBenchRow]
    raw_accuracy: float
    label_only_mean_r2: float
    label_only_r2_per_feature: list[float | None]
    feature_names: list[str]
    attackers: dict[str, str]  # name -> what it is
    skipped: dict[str, str]  # what was not measured -> why
    settings: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def row(self, spec: str) -> VectorBenchRow:
        for row in self.rows:
            if row.filter == spec:
                return row
        raise UnknownFilterError(
            f"expected one of the benchmarked filters {[r.filter for r in self.rows]}, got {spec!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "vector",
            "raw_accuracy": self.raw_accuracy,
            "label_only": {
                "mean_r2": _json_number(self.label_only_mean_r2),
                "r2_per_feature": self.label_only_r2_per_feature,
            },
            "feature_names": self.feature_names,
            "attackers": self.attackers,
            "skipped": self.skipped,
            "rows": [row.to_dict() for row in self.rows],
            "settings": self.settings,
            "machine": self.machine,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        names = list(self.attackers)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*VECTOR_CSV_COLUMNS, *(f"{n}_gain_db" for n in names), *(f"{n}_mean_r2" for n in names)])
            for row in self.rows:
                data = row.to_dict()
                cells = [data[column] for column in VECTOR_CSV_COLUMNS]
                cells += [row.attackers[n].gain_db if n in row.attackers else "" for n in names]
                cells += [row.attackers[n].mean_r2 if n in row.attackers else "" for n in names]
                writer.writerow(cells)
        return path

    def to_markdown(self, title: str = "Leakage of edgeguard's output filters on a vector model") -> str:
        s = self.settings
        names = list(self.attackers)
        lines = [
            f"# {title}",
            "",
            f"Model `{s['model']}` ({s['input_kind']} input {tuple(s['input_shape'])}, {s['num_classes']} classes, "
            f"{s['output_kind']}); data `{s['data']}`: {s['eval_size']} evaluation rows, {s['attack_size']} attacker "
            f"rows (seed {s['seed']}). Raw accuracy {100 * self.raw_accuracy:.2f}%.",
            "",
            "Leakage is the MSE gain over the label-only baseline in dB on standardised features (> 0: the release "
            "tells more than the label the user shares anyway) and the mean R^2 over features; label-only: "
            f"{s['label_only']} (mean R^2 {_cell(self.label_only_mean_r2, 3)}). Each attacker is fitted on the "
            "attacker's rows released through the same filter spec. The worst case is the largest gain over the "
            "attackers that ran, named next to it; it is measured, not a bound: the capacity column is the only "
            "guarantee that holds against every decoder.",
            "",
            "Attackers: " + "; ".join(f"*{name}*: {text}" for name, text in self.attackers.items()) + ".",
            "",
            "| filter | release | capacity (bits/row) | accuracy | drop (points) | latency (us) | "
            + " | ".join(f"{n} gain (dB)" for n in names)
            + " | worst gain (dB) | worst attacker | worst mean R^2 |",
            "|" + "---|" * (9 + len(names)),
        ]
        for row in self.rows:
            gains = [_cell(row.attackers[n].gain_db) if n in row.attackers else "-" for n in names]
            lines.append(
                f"| `{row.filter}` | {row.release} | {_cell(row.capacity_bits)} | {100 * row.accuracy:.2f}% | "
                f"{row.accuracy_drop_points:.2f} | {_cell(row.latency_us, 1)} | "
                + " | ".join(gains)
                + f" | {row.worst_gain_db:.2f} | {row.worst_attacker} | {_cell(row.worst_mean_r2, 3)} |"
            )
        lines += ["", "## R^2 per feature: the worst attacker on the raw-most release vs label-only", ""]
        top = max(self.rows, key=lambda r: (r.capacity_bits, r.worst_gain_db))
        lines += [
            f"Release `{top.filter}`, attacker *{top.worst_attacker}*.",
            "",
            "| feature | attacker R^2 | label-only R^2 |",
            "|---|---|---|",
        ]
        per_feature = top.attackers[top.worst_attacker].r2_per_feature
        for name, value, base in zip(self.feature_names, per_feature, self.label_only_r2_per_feature):
            lines.append(f"| {name} | {_cell(value, 3)} | {_cell(base, 3)} |")
        lines += ["", "## Not measured on vectors", ""]
        lines += [f"- *{name}*: {reason}." for name, reason in self.skipped.items()]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        lines += [
            "",
            f"Machine: {self.machine.get('cpu')}, {self.machine.get('logical_cpus')} logical CPUs, threads "
            f"{self.machine.get('threads')}, load average before {self.machine.get('load_average_before')}. "
            f"Command: `{s['command']}`. Wall time {s['wall_time_s']:.1f} s.",
        ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
        """Write OUT/STEM.md, .json and .csv; returns kind -> path."""
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": folder / f"{stem}.md", "json": folder / f"{stem}.json"}
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        paths["json"].write_text(self.to_json(), encoding="utf-8")
        paths["csv"] = self.write_csv(folder / f"{stem}.csv")
        return paths
