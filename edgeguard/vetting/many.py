"""Vet many models: expand paths / folders / globs, vet each as a job, write reports and a summary.

``vet_many(["zoo/", "extra/*.onnx"], "probe/", output_dir="reports")`` vets every model
(one :mod:`edgeguard.jobs` job each: a local process pool with ``jobs=N`` or Ray with
``ray="auto"``), writes one report per model and returns a :class:`VetSummary` whose
``exit_code`` is the worst of the models' codes in this order (most severe first):

    2 error (a model could not be vetted, or a critical finding: the file was refused)
    1 flagged (a model was judged vicious)
    3 inconclusive
    0 every model passed (honest)

so a CI job gating on it fails on any non-zero code and an error is never hidden by a
milder outcome elsewhere in the batch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard._version import __version__
from edgeguard.errors import ConfigError, DataNotFoundError, EdgeguardError
from edgeguard.model.hashing import file_sha256
from edgeguard.verdicts import EXIT_PRIORITY, worst_exit_code

__all__ = [
    "EXIT_PRIORITY",
    "REPORT_SUFFIXES",
    "VetSummary",
    "VetSummaryRow",
    "expand_model_paths",
    "vet_job",
    "vet_many",
    "worst_exit_code",
]

#: Report file suffix per output format.
REPORT_SUFFIXES = {"json": ".json", "text": ".txt", "sarif": ".sarif"}
_REPORT_FILES = {"json": "report.json", "text": "report.txt", "sarif": "report.sarif"}
_JOB_FUNCTION = "edgeguard.vetting.many:vet_job"


def expand_model_paths(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """ONNX files from paths: a file as is, a folder's ``*.onnx`` (recursively, sorted), a glob's matches.

    Duplicates are dropped (first occurrence kept). Raises DataNotFoundError for a spec that
    names no ONNX file.
    """
    found: list[Path] = []
    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*.onnx") if p.is_file())
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            matches = [p for p in matches if p.suffix.lower() == ".onnx"] or matches
        else:
            matches = []
        if not matches:
            what = (
                "folder has no .onnx file"
                if path.is_dir()
                else "glob matches no file"
                if glob.has_magic(text)
                else "file does not exist"
            )
            raise DataNotFoundError(
                f"expected an ONNX file, a folder with .onnx files or a glob, got {text!r} ({what}); check the path"
            )
        found += matches
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


@dataclass
class VetSummaryRow:
    """One model of a many-model vet: its verdict and exit code, or the error that stopped it."""

    model_path: str
    exit_code: int
    verdict: str | None = None  # None when the model could not be vetted
    likelihood: float | None = None
    findings: dict[str, int] = field(default_factory=dict)  # severity -> count
    model_sha256: str = ""
    error: str = ""
    report_file: str | None = None
    seconds: float = 0.0
    cached: bool = False
    report: dict[str, Any] | None = None  # the full report (in to_dict() only when no report file was written)

    @property
    def outcome(self) -> str:
        if self.verdict is None:
            return "error"
        return "refused" if self.exit_code == 2 else self.verdict  # a critical finding: the file was refused

    def to_dict(self) -> dict[str, Any]:
        data = {
            "model_path": self.model_path,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "likelihood": self.likelihood,
            "findings": dict(self.findings),
            "model_sha256": self.model_sha256,
            "error": self.error,
            "report_file": self.report_file,
            "seconds": self.seconds,
            "cached": self.cached,
        }
        if self.report is not None and self.report_file is None:
            data["report"] = self.report
        return data


@dataclass
class VetSummary:
    """The result of :func:`vet_many`: one row per model and the worst exit code."""

    rows: list[VetSummaryRow]

    @property
    def exit_code(self) -> int:
        return worst_exit_code([row.exit_code for row in self.rows])

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.outcome] = counts.get(row.outcome, 0) + 1
        return counts

    def reports(self) -> list[dict[str, Any]]:
        return [row.report for row in self.rows if row.report is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "exit_priority": list(EXIT_PRIORITY),
            "models": len(self.rows),
            "counts": self.counts(),
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_text(self) -> str:
        header = f"{'model':<40} {'outcome':<20} {'exit':>4} {'likelihood':>10} {'crit/high/med':>13} {'time':>7}"
        lines = [header, "-" * len(header)]
        for row in self.rows:
            f = row.findings
            severe = f"{f.get('critical', 0)}/{f.get('high', 0)}/{f.get('medium', 0)}" if row.verdict else "-"
            likelihood = f"{row.likelihood:.3f}" if isinstance(row.likelihood, (int, float)) else "-"
            name = row.model_path if len(row.model_path) <= 40 else "..." + row.model_path[-37:]
            lines.append(
                f"{name:<40} {row.outcome:<20} {row.exit_code:>4} {likelihood:>10} {severe:>13} {row.seconds:>6.1f}s"
            )
            if row.error:
                lines.append(f"    error: {row.error}")
        counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.counts().items()))
        lines.append(f"{len(self.rows)} model(s): {counts}; exit code {self.exit_code} (worst first: 2 > 1 > 3 > 0)")
        return "\n".join(lines) + "\n"


def vet_job(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Job function: vet ``params["model"]`` on ``params["probe"]`` with the knobs ``params["vet"]``.

    Writes report.json, report.txt and report.sarif into ``artifacts``. Returns the summary
    fields and the full report; an edgeguard error (bad file, bad probe set) becomes
    ``{"status": "error", "exit_code": 2, "error": ...}`` rather than failing the batch.
    """
    from edgeguard.vetting.api import vet
    from edgeguard.vetting.sarif import sarif_json

    model = params["model"]
    try:
        report = vet(model, params["probe"], **params.get("vet", {}))
    except (EdgeguardError, OSError) as error:
        return {"status": "error", "model_path": model, "exit_code": 2, "error": str(error)}
    data = report.to_dict()
    (artifacts / _REPORT_FILES["json"]).write_text(report.to_json() + "\n", encoding="utf-8")
    (artifacts / _REPORT_FILES["text"]).write_text(report.to_text(), encoding="utf-8")
    (artifacts / _REPORT_FILES["sarif"]).write_text(sarif_json([data]), encoding="utf-8")
    counts: dict[str, int] = {}
    for finding in report.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return {
        "status": "ok",
        "model_path": model,
        "exit_code": report.exit_code,
        "verdict": report.verdict,
        "likelihood": data["likelihood"],
        "findings": counts,
        "model_sha256": report.model_sha256,
        "report": data,
    }


def vet_many(
    models: Sequence[str | os.PathLike],
    probe_data: str | os.PathLike,
    *,
    output_dir: str | os.PathLike | None = None,
    output_format: str = "json",
    jobs: int = 1,
    ray: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **vet_knobs: Any,
) -> VetSummary:
    """Vet every model in ``models`` (files, folders, globs) against ``probe_data``.

    ``vet_knobs`` are :func:`edgeguard.vet`'s keyword arguments (JSON values; no ``progress``).
    With ``output_dir`` one report per model is written there in ``output_format``
    ("json", "text" or "sarif"), named after its path below the models' common folder.
    ``jobs`` / ``ray`` pick the executor (see :mod:`edgeguard.jobs`); ``cache_dir`` keeps
    finished vets (keyed by model and probe contents, knobs and edgeguard version) for
    re-runs; without it a temporary cache is used and removed.
    """
    from edgeguard.jobs import Job, executor_options, run_jobs

    if output_format not in REPORT_SUFFIXES:
        raise ConfigError(f"expected an output format in {sorted(REPORT_SUFFIXES)}, got {output_format!r}")
    paths = expand_model_paths(models)
    probe = Path(probe_data)
    knobs = {key: _jsonable(value) for key, value in vet_knobs.items() if value is not None}
    knobs.update({key: _absolute(value) for key, value in knobs.items() if _names_files(key)})
    shared = {
        "probe": str(probe.resolve()),
        "probe_fingerprint": _fingerprint(probe),
        "vet": knobs,  # files named in the knobs (thresholds, references) are keyed by their contents too:
        "inputs_fingerprint": {key: _fingerprints(value) for key, value in knobs.items() if _names_files(key)},
        "edgeguard_version": __version__,
    }
    job_list = []
    folders: dict[Path, str] = {}  # external data lives next to the model: its folder is part of the key
    for path in paths:
        folder = path.resolve().parent
        if folder not in folders:
            folders[folder] = _fingerprint(folder)
        params = dict(shared, model=str(path.resolve()), model_sha256=_fingerprint(path), folder=folders[folder])
        job_list.append(Job(_JOB_FUNCTION, params))
    temporary = cache_dir is None
    cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="edgeguard-vet-"))
    try:
        done = run_jobs(job_list, cache_dir=cache, progress=progress, description="vet", **executor_options(jobs, ray))
        names = _report_names(paths)
        rows = []
        out = Path(output_dir) if output_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        for path, name, finished in zip(paths, names, done):
            result = finished.result
            row = VetSummaryRow(
                model_path=str(path),
                exit_code=int(result["exit_code"]),
                verdict=result.get("verdict"),
                likelihood=result.get("likelihood"),
                findings=dict(result.get("findings", {})),
                model_sha256=str(result.get("model_sha256", "")),
                error=str(result.get("error", "")),
                seconds=finished.seconds,
                cached=finished.cached,
            )
            if result.get("status") == "ok":
                report = dict(result["report"], model_path=str(path))
                if out is not None:
                    target = out / (name + REPORT_SUFFIXES[output_format])
                    source = finished.artifacts / _REPORT_FILES[output_format]
                    if output_format == "json":
                        target.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
                    elif output_format == "sarif":
                        from edgeguard.vetting.sarif import sarif_json

                        target.write_text(sarif_json([report]), encoding="utf-8")
                    else:
                        shutil.copyfile(source, target)
                    row.report_file = str(target)
                row.report = report
            rows.append(row)
    finally:
        if temporary:
            shutil.rmtree(cache, ignore_errors=True)
    return VetSummary(rows)


# -- helpers -------------------------------------------------------------------------------


def _report_names(paths: Sequence[Path]) -> list[str]:
    """Report file stems: each path below the models' common folder, '/' -> '__', without .onnx."""
    resolved = [p.resolve() for p in paths]
    if len(resolved) == 1:
        return [resolved[0].stem]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    names = []
    for path in resolved:
        relative = path.relative_to(common).with_suffix("")
        names.append("__".join(relative.parts))
    return names


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) < 4096 and os.path.exists(value)


def _names_files(knob: str) -> bool:
    """Whether a vet knob names files (thresholds, reference models or data)."""
    return knob == "thresholds" or knob.endswith(("_data", "_file", "_path", "_dir", "_model", "_models"))


def _absolute(value: Any) -> Any:
    """Existing paths (alone or in a list) made absolute, so a worker with another cwd finds them."""
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return str(Path(value).resolve()) if _is_path(value) else value


def _fingerprints(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [_fingerprint(Path(v)) for v in values if _is_path(v)]


def _fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's (relative path, size, mtime) list; "missing" if absent."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.relative_to(path).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return "dir:" + digest.hexdigest()
    return "missing"




def run_vet_command(
    models: Sequence[str],
    probe: str,
    knobs: dict[str, Any],
    *,
    output_format: str = "text",
    output_file: str | None = None,
    output_dir: str | None = None,
    jobs: int = 1,
    ray: str | None = None,
    cache_dir: str | None = None,
    quiet: bool = False,
) -> int:
    """The body of ``edgeguard vet``: returns the exit code (data to stdout or ``output_file``, logs to stderr).

    One model file with no --output-dir/--jobs/--ray/--cache-dir vets in this process with
    progress lines and prints its report; anything else goes through :func:`vet_many`.
    """
    import click

    def say(message: str) -> None:
        if not quiet:
            click.echo(f"[vet] {message}", err=True)

    def emit(text: str) -> None:
        if output_file:
            Path(output_file).write_text(text, encoding="utf-8")
            say(f"{'report' if single else 'summary'} written to {output_file}")
        else:
            click.echo(text, nl=False)

    single = (
        len(models) == 1
        and not glob.has_magic(models[0])
        and not Path(models[0]).is_dir()
        and output_dir is None
        and jobs == 1
        and ray is None
        and cache_dir is None
    )
    if single:
        from edgeguard.vetting.api import vet

        report = vet(models[0], probe, progress=say, **knobs)
        if output_format == "sarif":
            from edgeguard.vetting.sarif import sarif_json

            emit(sarif_json([report]))
        else:
            emit(report.to_json() + "\n" if output_format == "json" else report.to_text())
        say(f"verdict: {report.verdict} (exit code {report.exit_code})")
        return report.exit_code
    summary = vet_many(
        models,
        probe,
        output_dir=output_dir,
        output_format=output_format,
        jobs=jobs,
        ray=ray,
        cache_dir=cache_dir,
        progress=not quiet,
        **knobs,
    )
    if output_format == "json":
        emit(summary.to_json())
    elif output_format == "sarif":
        from edgeguard.vetting.sarif import sarif_json

        reports = [row.report for row in summary.rows if row.report is not None]
        errors = [(r.model_path, r.error) for r in summary.rows if r.verdict is None]
        emit(sarif_json(reports, errors=errors))
        if not quiet:
            click.echo(summary.to_text(), err=True, nl=False)
    else:
        emit(summary.to_text())
    return summary.exit_code
