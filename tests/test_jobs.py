"""edgeguard.jobs: the content-addressed cache, the local pool, a killed worker, and Ray vs local.

The Ray tests start one local Ray instance per module (``ray.init(num_cpus=2)``; about 8 s)
and run three small jobs: a 1-epoch tiny model, a vet, and an attacker rung (trained
through a release filter), comparing every result with the local executor's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _vet_models import linear_classifier, save, write_probe

from edgeguard.errors import ConfigError, EdgeguardError
from edgeguard.jobs import Job, JobError, RayNotInstalledError, executor_options, job_key, run_jobs

SQUARE = "_job_functions:square"
TINY = {"epochs": 1, "train_limit": 300, "test_limit": 50, "cnn_width": 4, "decoder_channels": 4, "batch_size": 50}
VET_KNOBS = {
    "tests": ["leakage"],
    "leakage_max_fit": 300,
    "leakage_augmentations": 1,
    "leakage_bootstrap": 50,
    "finetune_train_samples": 64,
    "finetune_eval_samples": 200,
    "finetune_batch_size": 32,
    "augment_seed": 1,  # the vet draws its augmentations from the OS unless given a seed
}


def entries(cache: Path) -> list[Path]:
    """Every committed-looking entry folder of a cache (everything but the temp area)."""
    return [p for p in cache.glob("??/*") if p.is_dir()]


def test_key_is_canonical_and_params_must_be_json():
    a = Job(SQUARE, {"x": 2, "y": [1, 2], "z": {"b": 1, "a": 2}})
    b = Job(SQUARE, {"z": {"a": 2, "b": 1}, "y": [1, 2], "x": 2})
    assert a.key == b.key == job_key(SQUARE, a.params) and len(a.key) == 64
    assert Job(SQUARE, {"x": 3}).key != Job(SQUARE, {"x": 2}).key
    assert Job("_job_functions:fail", {"x": 2}).key != Job(SQUARE, {"x": 2}).key
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        Job(SQUARE, {"path": Path("x")})
    with pytest.raises(ConfigError, match="package.module:function"):
        Job("no_colon", {})
    assert Job(SQUARE, {"device": "cuda:0"}).num_gpus == 1 and Job(SQUARE, {"device": "cpu"}).num_gpus == 0
    assert Job(SQUARE, {"spec": {"device": "cuda"}}).num_gpus == 1 and Job(SQUARE, {}, gpus=0.5).num_gpus == 0.5
    assert Job(SQUARE, {"x": 1}, gpus=1).key == Job(SQUARE, {"x": 1}).key  # where it runs is not its result
    assert executor_options(2, "auto") == {"executor": "ray", "workers": 2, "ray_address": "auto"}
    assert executor_options(3)["executor"] == "local"


def test_unknown_function_fails_before_running(tmp_path):
    with pytest.raises(ConfigError, match="importable"):
        run_jobs([Job("_job_functions:nope", {})], cache_dir=tmp_path, progress=False)
    assert entries(tmp_path) == []


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "pool-2"])
def test_runs_then_reuses_the_cache(tmp_path, workers):
    jobs = [Job(SQUARE, {"x": x}) for x in (3, 4, 3)]  # a duplicate runs once
    first = run_jobs(jobs, cache_dir=tmp_path, workers=workers, progress=False)
    assert [r.result["value"] for r in first] == [9, 16, 9]
    assert [r.cached for r in first] == [False, False, False] and len(entries(tmp_path)) == 2
    assert (first[1].artifacts / "value.txt").read_text() == "16"
    again = run_jobs(jobs + [Job(SQUARE, {"x": 5})], cache_dir=tmp_path, workers=workers, progress=False)
    assert [r.cached for r in again] == [True, True, True, False]
    assert [r.result for r in again[:3]] == [r.result for r in first]
    assert again[0].seconds == first[0].seconds  # the time it took when it ran


def test_a_failing_job_keeps_the_finished_ones(tmp_path):
    jobs = [Job(SQUARE, {"x": 2}), Job("_job_functions:fail", {"x": 1})]
    with pytest.raises(JobError, match="1 failed of 2") as caught:
        run_jobs(jobs, cache_dir=tmp_path, workers=2, progress=False)
    assert isinstance(caught.value, EdgeguardError) and isinstance(caught.value, RuntimeError)
    assert "job failed on purpose" in caught.value.failures[jobs[1].key]
    assert run_jobs(jobs[:1], cache_dir=tmp_path, progress=False)[0].cached


def test_a_killed_worker_leaves_no_corrupt_entry_and_a_rerun_finishes_it(tmp_path):
    marker = tmp_path / "killed-once"
    cache = tmp_path / "cache"
    dying = Job("_job_functions:die_once", {"marker": str(marker), "sleep": 0.2})
    jobs = [Job(SQUARE, {"x": 7}), dying]
    with pytest.raises(JobError, match="died"):
        run_jobs(jobs, cache_dir=cache, workers=2, progress=False)
    assert marker.exists()  # the job really started and was killed (SIGKILL) mid-run
    for entry in entries(cache):  # whatever is committed is complete
        assert json.loads((entry / "result.json").read_text())["result"]
    assert not (cache / dying.key[:2] / dying.key).exists()
    assert list((cache / ".tmp").iterdir())  # the half-written entry stayed in the temp area
    done = run_jobs(jobs, cache_dir=cache, workers=2, progress=False)
    assert done[1].result == {"finished": True} and not done[1].cached
    assert (done[1].artifacts / "partial.bin").read_bytes() == b"whole"
    assert list((cache / ".tmp").iterdir()) == []  # the dead worker's temp dir was swept


def test_workers_end_when_the_driver_is_killed(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = (
        "import sys; sys.path.insert(0, sys.argv[1]); from edgeguard.jobs import Job, run_jobs; "
        "run_jobs([Job('_job_functions:sleep_and_report_pid', {'pid_dir': sys.argv[2], 'sleep': 60, 'i': i}) "
        "for i in range(2)], cache_dir=sys.argv[3], workers=2, progress=False)"
    )
    tests = str(Path(__file__).parent)
    process = subprocess.Popen([sys.executable, "-c", driver, tests, str(pids), str(tmp_path / "cache")])
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        workers = [int(p.stem) for p in pids.iterdir()]
        assert len(workers) == 2, "the workers did not start"
    finally:
        process.kill()  # SIGKILL: no clean-up code runs in the driver
        process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "orphaned workers kept running after the driver died"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_ray_missing_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install 'edgeguard\[ray\]'"):
        run_jobs([Job(SQUARE, {"x": 1})], cache_dir=tmp_path, executor="ray", progress=False)


# -- Ray vs the local executor ----------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgeguard[ray]')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as error:  # pragma: no cover - depends on the machine
        pytest.skip(f"a local Ray instance could not start: {error}")
    yield ray
    ray.shutdown()


def _flat(value, prefix=""):
    """A nested result as one {path: leaf} mapping (pytest.approx compares flat mappings only)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}/").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}{i}/").items()}
    return {prefix: value}


def _timeless(value):
    """``value`` without wall-clock fields (they differ between any two runs)."""
    if isinstance(value, dict):
        return {
            k: _timeless(v)
            for k, v in value.items()
            if not (k == "seconds" or k.endswith("_s") or k.endswith("_seconds") or k == "pid")
        }
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


@pytest.fixture(scope="module")
def three_jobs(tmp_path_factory, fmnist_test_small):  # the fixture skips without Fashion-MNIST
    folder = tmp_path_factory.mktemp("ray-jobs")
    model = save(linear_classifier(), folder / "model.onnx")
    probe = write_probe(folder / "probe.npz", 600)
    return [
        Job("converters.ladder:train_through_filter", dict(TINY, filter="none")),  # a 1-epoch tiny model
        Job(
            "edgeguard.vetting.many:vet_job",
            {"model": str(model), "probe": str(probe), "vet": VET_KNOBS},
        ),
        Job("converters.ladder:train_through_filter", dict(TINY, filter="softmax>round:2")),  # an attacker rung
    ]


def test_ray_gives_the_same_results_as_the_local_executor(ray_instance, three_jobs, tmp_path):
    local = run_jobs(three_jobs, cache_dir=tmp_path / "local", progress=False)  # in this process
    on_ray = run_jobs(three_jobs, cache_dir=tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert [r.key for r in on_ray] == [r.key for r in local]
    for mine, theirs in zip(on_ray, local):
        # Equal key for key; floats to 1e-12 relative: LAPACK's eigensolver behind the risk R may sum in
        # another order in another process (memory alignment), the trained ONNX files are byte-identical.
        flat_mine, flat_theirs = _flat(_timeless(mine.result)), _flat(_timeless(theirs.result))
        assert not mine.cached and flat_mine.keys() == flat_theirs.keys(), mine.function
        for key, theirs_value in flat_theirs.items():
            expected = pytest.approx(theirs_value, rel=1e-12, abs=0) if isinstance(theirs_value, float) else theirs_value
            assert flat_mine[key] == expected, (mine.function, key)
    rung = on_ray[2].result
    assert rung["filter"] == "softmax>round:2" and rung["num_train"] == 270
    assert on_ray[1].result["status"] == "ok" and on_ray[1].result["verdict"] in ("honest", "vicious", "inconclusive")
    for name in ("classifier.onnx", "decoder.onnx"):  # the trained files are byte-identical too
        assert (on_ray[0].artifacts / name).read_bytes() == (local[0].artifacts / name).read_bytes()
    assert (on_ray[1].artifacts / "report.sarif").is_file()
    again = run_jobs(three_jobs, cache_dir=tmp_path / "ray", executor="ray", progress=False)
    assert all(r.cached for r in again)


def test_ray_retries_a_killed_worker(ray_instance, tmp_path):
    marker = tmp_path / "killed-once"
    job = Job("_job_functions:die_once", {"marker": str(marker)})
    done = run_jobs([job], cache_dir=tmp_path / "cache", executor="ray", progress=False)
    assert marker.exists() and done[0].result == {"finished": True}
    assert (done[0].artifacts / "partial.bin").read_bytes() == b"whole"
