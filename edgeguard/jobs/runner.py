"""``run_jobs``: run independent jobs on a local process pool or on Ray, through a content-addressed cache."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeguard.errors import ConfigError, EdgeguardError, MissingDependencyError
from edgeguard.jobs import _cache

__all__ = [
    "Job",
    "JobResult",
    "JobError",
    "RayNotInstalledError",
    "run_jobs",
    "job_key",
    "EXECUTORS",
]

logger = logging.getLogger("edgeguard.jobs")

#: The executors of :func:`run_jobs`.
EXECUTORS = ("local", "ray")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

job_key = _cache.job_key


class JobError(EdgeguardError, RuntimeError):
    """One or more jobs failed (raised, or their worker died); the finished ones stay cached."""

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})


class RayNotInstalledError(MissingDependencyError):
    """The Ray executor was asked for, but Ray is not installed."""


@dataclass(frozen=True)
class Job:
    """One independent piece of work: ``function`` ("package.module:function") applied to ``params``.

    The function is ``def f(params: dict, artifacts: pathlib.Path) -> dict``: it returns a
    JSON-serialisable dict and writes its files under ``artifacts`` (refer to them by paths
    relative to ``artifacts``: the folder moves into the cache when the job is committed).
    ``params`` must be JSON-serialisable; they and the function name are the cache key, so
    put everything the result depends on in them (a model's SHA-256, not only its path).
    A "device" starting with "cuda" in ``params`` (or in a dict inside it, e.g.
    ``params["spec"]["device"]``) makes the Ray executor request one GPU; ``gpus``
    overrides that (it is not part of the key: it changes where a job runs, not its result).
    """

    function: str
    params: dict[str, Any] = field(default_factory=dict)
    gpus: float | None = None

    def __post_init__(self) -> None:
        module, _, name = self.function.partition(":")
        if not module or not name:
            raise ConfigError(f"expected a job function as 'package.module:function', got {self.function!r}")
        if not isinstance(self.params, dict):
            raise ConfigError(f"expected the job params as a dict, got {type(self.params).__name__}")
        try:
            _cache.canonical_json(self.params)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"expected JSON-serialisable job params (str, numbers, bools, None, lists, dicts), got: {error}"
            ) from None

    @property
    def key(self) -> str:
        """The cache key: sha256 of the canonical JSON of function + params (+ a version salt)."""
        return _cache.job_key(self.function, self.params)

    @property
    def num_gpus(self) -> float:
        """GPUs the Ray executor requests: ``gpus``, else 1 when the params name a CUDA device."""
        if self.gpus is not None:
            return self.gpus
        nested = [self.params] + [v for v in self.params.values() if isinstance(v, dict)]
        return 1 if any(str(d.get("device", "")).startswith("cuda") for d in nested) else 0

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "params": self.params, "key": self.key}


@dataclass(frozen=True)
class JobResult:
    """A finished job: its ``result`` dict, its cache ``artifacts`` folder and whether it was ``cached``.

    ``seconds`` is how long the job ran when it was computed (also when reused from the cache).
    """

    key: str
    function: str
    params: dict[str, Any]
    result: dict[str, Any]
    artifacts: Path
    cached: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "function": self.function,
            "params": self.params,
            "result": self.result,
            "artifacts": str(self.artifacts),
            "cached": self.cached,
            "seconds": self.seconds,
        }


def run_jobs(
    jobs: Sequence[Job],
    *,
    cache_dir: str | os.PathLike,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
    threads_per_worker: int = 1,
    description: str = "jobs",
) -> list[JobResult]:
    """Run ``jobs`` (reusing finished ones from ``cache_dir``) and return their results, in order.

    ``executor="local"``: ``workers`` processes (forkserver/spawn; with ``workers=1``, or a
    single job to run, the jobs run one by one in this process). ``executor="ray"``: Ray tasks, one CPU each (plus one
    GPU for jobs on a CUDA device) on the cluster at ``ray_address`` ("auto": the running
    cluster, else a local one with ``workers`` CPUs; None: an already initialised Ray, else
    a local one). With several Ray machines ``cache_dir`` must be on a filesystem they share.

    Torch in each worker (and around in-process jobs) uses ``threads_per_worker`` threads.
    Identical jobs in ``jobs`` run once. A tqdm bar on stderr shows progress (``progress``).
    Raises :class:`JobError` once every job has finished or failed when any failed; the
    finished ones are committed, so a re-run only redoes the failed ones.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"expected an executor in {EXECUTORS}, got {executor!r}; pick one of those")
    if workers < 1:
        raise ConfigError(f"expected workers >= 1, got {workers}; pass workers=1 or more")
    jobs = list(jobs)
    for job in jobs:
        if not isinstance(job, Job):
            raise ConfigError(f"expected Job objects, got {type(job).__name__}; wrap each call in Job(function, params)")
        _resolve(job.function)  # fail fast on a typo, before anything runs
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    _cache.sweep(cache)

    records: dict[str, dict[str, Any]] = {}
    cached: set[str] = set()
    todo: dict[str, Job] = {}
    for job in jobs:
        key = job.key
        if key in records or key in todo:
            continue
        record = _cache.read_entry(cache, key)
        if record is not None:
            records[key] = record
            cached.add(key)
        else:
            todo[key] = job

    from tqdm.auto import tqdm

    bar = tqdm(total=len(records) + len(todo), desc=description, unit="job", disable=not progress, file=sys.stderr)
    bar.update(len(records))
    if cached:
        bar.set_postfix(cached=len(cached))
    failures: dict[str, str] = {}
    try:
        if todo:
            if executor == "ray":
                run = _run_ray
            elif workers == 1 or len(todo) == 1:
                run = _run_in_process
            else:
                run = _run_pool
            for key, outcome in run(todo, cache, workers=workers, threads=threads_per_worker, ray_address=ray_address):
                if isinstance(outcome, dict):
                    records[key] = outcome
                else:
                    failures[key] = outcome
                bar.update(1)
    finally:
        bar.close()
    if failures:
        first = next(iter(failures.values()))
        names = ", ".join(f"{todo[k].function} ({k[:12]})" for k in failures)
        raise JobError(
            f"expected every job to finish, got {len(failures)} failed of {len(todo)} run: {names}; "
            f"the {len(records) - len(cached)} finished are cached and a re-run redoes only the failed ones. "
            f"First failure:\n{first}",
            failures,
        )
    results = []
    for job in jobs:
        key = job.key
        record = records[key]
        results.append(
            JobResult(
                key=key,
                function=job.function,
                params=job.params,
                result=record["result"],
                artifacts=_cache.entry_dir(cache, key) / _cache.ARTIFACTS_DIR,
                cached=key in cached,
                seconds=float(record.get("seconds", 0.0)),
            )
        )
    return results


# -- executing one job (in a worker or in this process) -------------------------------------


def _resolve(function: str) -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    module_name, _, attribute = function.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"expected an importable job function 'package.module:function', got {function!r} ({error}); "
            "check the name and that its package is installed (or on sys.path)"
        ) from None
    if not callable(target):
        raise ConfigError(f"expected {function!r} to name a callable, got a {type(target).__name__}; name a function")
    return target


def _execute(function: str, params: dict[str, Any], key: str, cache_dir: str) -> dict[str, Any]:
    """Run one job and commit its entry; returns the committed record."""
    cache = Path(cache_dir)
    existing = _cache.read_entry(cache, key)
    if existing is not None:  # a concurrent run finished it meanwhile
        return existing
    target = _resolve(function)
    tmp = _cache.new_temp_dir(cache, key)
    try:
        started = time.perf_counter()
        result = target(dict(params), tmp / _cache.ARTIFACTS_DIR)
        seconds = time.perf_counter() - started
        if not isinstance(result, dict):
            raise JobError(f"expected job function {function} to return a dict, got {type(result).__name__}")
        record = {"result": result, "seconds": seconds, "finished": time.time(), "pid": os.getpid()}
        try:  # the JSON round trip makes a fresh result equal, type for type, to a cached one
            record = json.loads(_cache.canonical_json(record, allow_nan=True))
        except (TypeError, ValueError) as error:
            raise JobError(f"expected a JSON-serialisable result from job function {function}, got: {error}") from None
        _cache.commit(cache, key, tmp, {"function": function, "params": params, "key": key}, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _worker_main(function: str, params: dict[str, Any], key: str, cache_dir: str) -> tuple[bool, Any]:
    """The pool/Ray entry point: (True, record) or (False, formatted traceback)."""
    try:
        return True, _execute(function, params, key, cache_dir)
    except Exception:
        return False, traceback.format_exc()


def _init_worker(sys_path: list[str], threads: int, driver_pid: int | None = None) -> None:
    """Worker set-up: the driver's import path, the thread count (before torch loads), and (pool
    workers) a watchdog that ends the worker when the driver is gone, so a killed run leaves no orphans."""
    if driver_pid is not None:
        threading.Thread(target=_watch_driver, args=(driver_pid,), daemon=True, name="edgeguard-driver-watch").start()
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # numpy's BLAS too: the same thread count gives the same sums everywhere


def _watch_driver(pid: int, interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)  # the driver died (killed, timed out): nothing will collect this worker's result
        except PermissionError:  # pragma: no cover - a pid reused by another user's process
            os._exit(1)


def _worker_with_setup(
    function: str, params: dict[str, Any], key: str, cache_dir: str, sys_path: list[str], threads: int
) -> tuple[bool, Any]:
    _init_worker(sys_path, threads)
    return _worker_main(function, params, key, cache_dir)


@contextlib.contextmanager
def _thread_limit(threads: int) -> Iterator[None]:
    """Torch threads for an in-process job, restored afterwards (env vars too)."""
    saved_env = {variable: os.environ.get(variable) for variable in _THREAD_VARIABLES}
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(threads):  # numpy's BLAS too, as in pool and Ray workers
            yield
    finally:
        for variable, value in saved_env.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        if saved_threads is not None:
            sys.modules["torch"].set_num_threads(saved_threads)


def _run_in_process(
    todo: dict[str, Job], cache: Path, *, threads: int, **_: Any
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    for key, job in todo.items():
        with _thread_limit(threads):
            ok, outcome = _worker_main(job.function, job.params, key, str(cache))
        if ok:
            logger.info("job %s (%s) finished in %.1f s", key[:12], job.function, outcome.get("seconds", 0.0))
        yield key, outcome


def _pool_context() -> Any:
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_pool(
    todo: dict[str, Job], cache: Path, *, workers: int, threads: int, **_: Any
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(list(sys.path), threads, os.getpid()),
    ) as pool:
        futures: dict[Future, str] = {
            pool.submit(_worker_main, job.function, job.params, key, str(cache)): key for key, job in todo.items()
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = futures[future]
                try:
                    ok, outcome = future.result()
                except Exception as error:  # BrokenProcessPool: a worker died (killed, out of memory)
                    ok, outcome = False, f"the worker process died ({type(error).__name__}: {error})"
                yield key, outcome if ok else str(outcome)


def _ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(
            "expected Ray for the Ray executor (--ray), got no module named 'ray'; "
            "install it with: pip install 'edgeguard[ray]' (or run without --ray: the local process pool)"
        ) from None
    return ray


def _ensure_ray(ray: Any, address: str | None, workers: int) -> None:
    if ray.is_initialized():
        return
    options = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        ray.init(num_cpus=workers, **options)
        return
    try:
        ray.init(address=address, **options)
    except ConnectionError:
        if address != "auto":
            raise
        logger.warning("no running Ray cluster found (--ray auto): starting a local one with %d CPUs", workers)
        ray.init(num_cpus=workers, **options)


def _run_ray(
    todo: dict[str, Job], cache: Path, *, workers: int, threads: int, ray_address: str | None, **_: Any
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    ray = _ray_module()
    _ensure_ray(ray, ray_address, workers)
    remote = ray.remote(_worker_with_setup)
    sys_path = list(sys.path)
    refs = {}
    for key, job in todo.items():
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 2}
        if job.num_gpus:
            options["num_gpus"] = job.num_gpus
        ref = remote.options(**options).remote(job.function, job.params, key, str(cache), sys_path, threads)
        refs[ref] = key
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            key = refs[ref]
            try:
                ok, outcome = ray.get(ref)
            except Exception as error:  # the task's worker died past its retries
                ok, outcome = False, f"the Ray task failed ({type(error).__name__}: {error})"
            if ok and _cache.read_entry(cache, key) is None:
                ok, outcome = (
                    False,
                    (
                        f"expected the job's cache entry under {cache} after its Ray task, got none; "
                        "with several Ray machines the cache_dir must be on a filesystem they all share"
                    ),
                )
            yield key, outcome if ok else str(outcome)
