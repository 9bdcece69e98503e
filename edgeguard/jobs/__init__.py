"""Run independent work (train a zoo model, vet a model, run an attacker rung) as cached jobs.

A :class:`Job` names a function ("package.module:function") and its JSON params; the
function is ``def f(params: dict, artifacts: pathlib.Path) -> dict``. :func:`run_jobs`
runs jobs on a local process pool (``executor="local"``, ``workers=N``) or on Ray
(``executor="ray"``, the ``edgeguard[ray]`` extra), and stores each result and its
artifacts in a content-addressed cache (key: sha256 of the canonical JSON of function +
params), committed atomically, so a re-run reuses finished jobs and a killed worker
leaves no half-written entry::

    from edgeguard.jobs import Job, run_jobs

    jobs = [Job("converters.ladder:train_through_filter", {"filter": f, "epochs": 1}) for f in ("none", "argmax")]
    for done in run_jobs(jobs, cache_dir="benchmarks/.cache/jobs", workers=2):  # or executor="ray"
        print(done.key[:12], done.cached, done.seconds, done.result["psnr"], done.artifacts)

Command lines add ``--jobs N`` / ``--ray auto|ADDRESS`` / ``--cache-dir`` with
:func:`add_job_arguments` and pass :func:`executor_options` (``**``) to :func:`run_jobs`.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeguard.errors import ConfigError
from edgeguard.jobs._cache import CACHE_VERSION
from edgeguard.jobs.runner import EXECUTORS, Job, JobError, JobResult, RayNotInstalledError, job_key, run_jobs

__all__ = [
    "Job",
    "JobResult",
    "JobError",
    "RayNotInstalledError",
    "run_jobs",
    "job_key",
    "executor_options",
    "add_job_arguments",
    "EXECUTORS",
    "CACHE_VERSION",
]


def executor_options(jobs: int = 1, ray: str | None = None) -> dict[str, Any]:
    """``run_jobs`` keyword arguments from ``--jobs N`` and ``--ray auto|ADDRESS`` (Ray wins when given)."""
    if jobs < 1:
        raise ConfigError(f"expected --jobs >= 1, got {jobs}; pass --jobs 1 or more")
    if ray:
        return {"executor": "ray", "workers": jobs, "ray_address": ray}
    return {"executor": "local", "workers": jobs, "ray_address": None}


def add_job_arguments(parser: argparse.ArgumentParser, *, cache_dir: str | None = None) -> None:
    """Add ``--jobs``, ``--ray`` and ``--cache-dir`` to an argparse command line."""
    group = parser.add_argument_group("jobs")
    group.add_argument("--jobs", type=int, default=1, metavar="N", help="local worker processes (default 1)")
    group.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run the jobs on Ray: 'auto' (the running cluster, else a local one) or a cluster address; "
        "needs pip install 'edgeguard[ray]'",
    )
    group.add_argument(
        "--cache-dir",
        default=cache_dir,
        help="job cache (finished jobs are reused)" + (f" (default {cache_dir})" if cache_dir else ""),
    )
