"""The dev instance's run launcher: runs forked from a warm worker, on a real Postgres-backed
instance, with the run worker Dagster's own (`dagster api execute_run`'s body)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from docpipe_dagster.launcher import PID_TAG, WarmRunLauncher
from docpipe_dagster.local.dev_stack import dev_instance_yaml
from docpipe_dagster.store.server import for_dagster


@dg.op(config_schema={"out": str, "sleep": float})
def record_process(context) -> None:  # no hint: Dagster checks it, and these are strings
    """Writes the worker's pid, its parent's and whether docpipe's definitions were loaded
    before the run began (the forkserver's preload), then sleeps as configured."""
    import sys

    warm = "docpipe_dagster.warm" in sys.modules
    Path(context.op_config["out"]).write_text(f"{os.getpid()} {os.getppid()} {warm}")
    time.sleep(context.op_config["sleep"])


@dg.job(executor_def=dg.in_process_executor)
def probe_job() -> None:
    record_process()


@pytest.fixture
def instance(tmp_path: Path, empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.setenv("DOCPIPE_DAGSTER_DATABASE_URL", for_dagster(empty_database_url))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(dev_instance_yaml())
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert isinstance(inst.run_launcher, WarmRunLauncher)
        yield inst


@dg.op(config_schema={"out": str, "sleep": float})
def vanish(context) -> None:
    """Exits cleanly mid-run, as a worker whose database went away before it could record
    the run's end."""
    Path(context.op_config["out"]).write_text(f"{os.getpid()} {os.getppid()} False")
    os._exit(0)


@dg.job(executor_def=dg.in_process_executor)
def vanishing_job() -> None:
    vanish.alias("record_process")()  # configured as the probe is


def _launch(
    instance: dg.DagsterInstance, out: Path, sleep: float = 0.0, job: dg.JobDefinition = probe_job
) -> str:
    recon = dg.reconstructable(job)
    run = instance.create_run_for_job(
        job_def=job,
        run_config={"ops": {"record_process": {"config": {"out": str(out), "sleep": sleep}}}},
        job_code_origin=recon.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def _wait_status(instance: dg.DagsterInstance, run_id: str, timeout: float = 90) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {instance.get_run_by_id(run_id)}")


def _health_once_stopped(
    instance: dg.DagsterInstance, run_id: str, timeout: float = 30
) -> CheckRunHealthResult:
    """The launcher's health check of the run's worker, once it no longer says RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_id))
        if health.status != WorkerStatus.RUNNING or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def _wait_file(path: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


@pytest.mark.slow
def test_runs_are_forks_of_one_warm_worker(instance, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    runs = [_launch(instance, first), _launch(instance, second)]
    for run_id in runs:
        assert _wait_status(instance, run_id).status == dg.DagsterRunStatus.SUCCESS

    pid1, parent1, warm1 = first.read_text().split()
    pid2, parent2, warm2 = second.read_text().split()
    # Each run its own process, both children of one forkserver (not of this process), which
    # had the definitions loaded before either run started.
    assert pid1 != pid2
    assert parent1 == parent2 != str(os.getpid())
    assert (warm1, warm2) == ("True", "True")
    run = instance.get_run_by_id(runs[0])
    assert run.tags[PID_TAG] == pid1
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.SUCCESS
    messages = [e.message for e in instance.all_logs(runs[0]) if e.is_dagster_event and e.message]
    assert any("Forked the run worker" in m for m in messages)


@pytest.mark.slow
def test_terminate_interrupts_the_run_and_a_killed_worker_is_reported(
    instance, tmp_path: Path
) -> None:
    launcher = instance.run_launcher
    out = tmp_path / "long"
    run_id = _launch(instance, out, sleep=60)
    _wait_file(out)
    run = instance.get_run_by_id(run_id)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

    assert launcher.terminate(run_id) is True
    assert _wait_status(instance, run_id).status == dg.DagsterRunStatus.CANCELED
    assert launcher.terminate(run_id) is False  # already finished

    # A worker killed outright: the monitoring daemon's health check says so.
    out2 = tmp_path / "killed"
    run_id = _launch(instance, out2, sleep=60)
    pid = int(_wait_file(out2).split()[0])
    os.kill(pid, signal.SIGKILL)
    health = _health_once_stopped(instance, run_id)
    assert health.status == WorkerStatus.FAILED
    assert "-9" in (health.msg or "")
    # A launcher in another process (a daemon restarted) knows the worker by its pid only.
    fresh = WarmRunLauncher()
    fresh.register_instance(instance)
    assert fresh.check_run_worker_health(instance.get_run_by_id(run_id)).status == (
        WorkerStatus.NOT_FOUND
    )


WARM_AT_DAEMON_START = """
import os, sys
from pathlib import Path
from multiprocessing import forkserver
import dagster as dg
from docpipe_dagster_tests.deploy import test_warm_launcher as t

with dg.DagsterInstance.get() as instance:
    assert forkserver._forkserver._forkserver_pid is None
    instance.run_coordinator.dequeue_interval_seconds  # what the daemon reads as it starts
    instance.run_coordinator._warming.join(120)
    os.kill(forkserver._forkserver._forkserver_pid, 0)  # running before any launch
    run_id = t._launch(instance, Path(sys.argv[1]))
    assert t._wait_status(instance, run_id).status == dg.DagsterRunStatus.SUCCESS
    for event in instance.all_logs(run_id):
        if event.is_dagster_event and "Forked the run worker" in (event.message or ""):
            print(event.message)
"""


@pytest.mark.slow
def test_the_daemon_starts_the_warm_worker_before_the_first_run(
    tmp_path: Path, empty_database_url: str
) -> None:
    # In a process of its own, as the daemon is: the forkserver is one per process.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(dev_instance_yaml())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DOCPIPE_DAGSTER_DATABASE_URL": for_dagster(empty_database_url),
    }
    done = subprocess.run(
        [sys.executable, "-c", WARM_AT_DAEMON_START, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The first run was forked from the worker already running, not from one it had to start.
    assert "from the warm worker in" in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_warm_module_leaves_the_definitions_built() -> None:
    # In a process of its own: importing it replaces `definitions.defs` with the built object.
    # What the forkserver preloads must import cleanly (a failed preload is silent there).
    probe = (
        "import dagster as dg, docpipe_dagster.warm, docpipe_dagster.definitions as d;"
        "assert isinstance(d.defs, dg.Definitions), type(d.defs);"
        "print(d.defs.resolve_job_def('ingest_batch').name)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ingest_batch"


@dg.op(pool="probe_pool")
def pooled() -> None:
    pass


@dg.job(executor_def=dg.in_process_executor)
def pooled_job() -> None:
    pooled()


def test_a_launch_creates_its_pools_limits_before_the_worker_claims_a_slot(instance) -> None:
    # Two workers forked at once would otherwise both create the row at their first claim.
    run = instance.create_run_for_job(
        job_def=pooled_job, job_code_origin=dg.reconstructable(pooled_job).get_python_origin()
    )
    assert "probe_pool" not in instance.event_log_storage.get_concurrency_keys()
    instance.run_launcher._initialize_pools(run)
    assert "probe_pool" in instance.event_log_storage.get_concurrency_keys()
    info = instance.event_log_storage.get_concurrency_info("probe_pool")
    assert (info.limit, info.using_default_limit) == (2, True)  # dagster.yaml's default_limit


@pytest.mark.slow
def test_a_worker_that_exits_cleanly_leaving_its_run_unfinished_is_failed(
    instance, tmp_path: Path
) -> None:
    # Dagster's run monitor leaves the run of a SUCCESS worker STARTED, for as long as the
    # run's maximum runtime; a run nobody will finish must be reported so it can be retried.
    out = tmp_path / "vanished"
    run_id = _launch(instance, out, job=vanishing_job)
    pid = int(_wait_file(out).split()[0])
    health = _health_once_stopped(instance, run_id)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert health.status == WorkerStatus.FAILED
    assert health.msg == f"the run worker (pid {pid}) exited without recording the run's end"
