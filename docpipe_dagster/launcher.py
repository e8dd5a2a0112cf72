"""A run launcher that forks each run from a warm process: the one `docpipe dev` uses.

Dagster's default launcher has the code server start every run in a new interpreter
(multiprocessing's "spawn"), which imports Dagster and builds the definitions again before the
run's first step, for every batch. `WarmRunLauncher` keeps a multiprocessing forkserver that has
done both once (`docpipe_dagster.warm`); each run is a fork of it that runs the body of `dagster
api execute_run`, the run worker the Docker and Kubernetes launchers start. Run storage, events,
run monitoring and run retries stay Dagster's own.

    run_launcher:
      module: docpipe_dagster.launcher
      class: WarmRunLauncher
    run_coordinator:
      module: docpipe_dagster.launcher
      class: WarmQueuedRunCoordinator

The forkserver runs in the process that launches (the daemon), with that process's
environment, and ends with it. `WarmQueuedRunCoordinator`, Dagster's run queue, starts it as
the daemon starts, so that the first run does not wait for it (with Dagster's own queue, the
first launch starts it). Run workers are in the daemon's process group, so they stop with
`docpipe dev`. It holds the code as it was when it started: when a file of the
installed package changes, the next launch starts a fresh one. POSIX only.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from docpipe_dagster.local.lifeline import pid_alive

PACKAGE_DIR = Path(__file__).parent
PRELOAD = "docpipe_dagster.warm"
PID_TAG = "docpipe/run_worker_pid"
HOST_TAG = "docpipe/run_worker_host"
# Connections a run worker may hold beyond its one pooled connection per storage.
POOL_MAX_OVERFLOW = 10


def run_worker(serialized_args: str) -> None:
    """The forked run worker: what `dagster api execute_run` does with these arguments, on an
    instance that holds its database connections."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts, setup_interrupt_handlers

    # SIGTERM (terminate(), `docpipe dev` stopping) interrupts the run as Ctrl-C would.
    setup_interrupt_handlers()
    with capture_interrupts():
        args = deserialize_value(serialized_args, ExecuteRunArgs)
        with get_instance_for_cli(instance_ref=args.instance_ref) as instance:
            # Dagster's Postgres storages open a connection per statement unless told to keep
            # a pool, as the webserver does; a run writes hundreds of events.
            instance.optimize_for_webserver(
                statement_timeout=0, pool_recycle=3600, max_overflow=POOL_MAX_OVERFLOW
            )
            _execute_run_command_body(
                args.run_id, instance, lambda _event: None, set_exit_code_on_failure=False
            )


def _newest_source(root: Path = PACKAGE_DIR) -> float:
    return max((p.stat().st_mtime for p in root.rglob("*.py")), default=0.0)


# multiprocessing keeps one forkserver per process: what it was started with is global too.
_FORKSERVER_LOCK = threading.Lock()
_forkserver_state: tuple[float, int] | None = None


def _forkserver_context() -> tuple[Any, str]:
    """The forkserver context, and why a new forkserver starts for this launch (empty when
    none does): it is restarted when the code or the environment changed since it started,
    so a worker sees both as they are."""
    global _forkserver_state
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    state = (_newest_source(), hash(frozenset(os.environ.items())))
    why = ""
    if _forkserver_state is None:
        context.set_forkserver_preload([PRELOAD])
        why = "first launch"
    elif state != _forkserver_state:
        # The next Process.start() starts a new forkserver with the new code and environment;
        # runs forked from the old one finish as they started.
        why = "the code changed" if state[0] != _forkserver_state[0] else "the environment changed"
        stop = getattr(forkserver._forkserver, "_stop", None)
        if stop is not None:
            stop()
    _forkserver_state = state
    return context, why


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Forks each run from a process that has imported Dagster and built the definitions."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data)

    def warm_up(self) -> None:
        """Start the warm worker now rather than on the first launch."""
        from multiprocessing import forkserver

        with _FORKSERVER_LOCK:
            _, why = _forkserver_context()
            if why:
                forkserver.ensure_running()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no code origin")
        args = ExecuteRunArgs(
            job_origin=origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
        )
        from dagster._serdes import serialize_value

        with _FORKSERVER_LOCK:
            started = time.monotonic()
            self._initialize_pools(run)
            context, why = _forkserver_context()
            worker = context.Process(
                target=run_worker,
                args=(serialize_value(args),),
                name=f"dagster-run-{run.run_id[:8]}",
            )
            worker.start()
            self._workers = {k: w for k, w in self._workers.items() if w.is_alive()}
            self._workers[run.run_id] = worker
        self._instance.add_run_tags(
            run.run_id, {PID_TAG: str(worker.pid), HOST_TAG: socket.gethostname()}
        )
        where = f"a new warm worker ({why})" if why else "the warm worker"
        self._instance.report_engine_event(
            f"Forked the run worker (pid {worker.pid}) from {where} in "
            f"{time.monotonic() - started:.2f} s.",
            run,
            cls=self.__class__,
        )

    def _initialize_pools(self, run: dg.DagsterRun) -> None:
        # Two runs forked at once on a fresh instance would both create a pool's limit row
        # at their first slot claim, and one fails on the unique key; created here, one
        # launch at a time, neither has to.
        pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
        if not pools:
            return
        storage = self._instance.event_log_storage
        for pool in sorted(set(pools) - storage.get_concurrency_keys()):
            storage.initialize_concurrency_limit_to_default(pool)

    @staticmethod
    def _pid(run: dg.DagsterRun) -> int | None:
        if run.tags.get(HOST_TAG) != socket.gethostname():
            return None
        pid = run.tags.get(PID_TAG)
        return int(pid) if pid and pid.isdigit() else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = self._pid(run)
        self._instance.report_run_canceling(run)
        if pid is None or not pid_alive(pid):
            self._instance.report_engine_event(
                "The run worker is not running on this host: nothing to terminate.",
                run,
                cls=self.__class__,
            )
            return False
        os.kill(pid, signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        # By pid: a worker outlives a forkserver restarted under it, and the launcher that
        # forked it may be another process on this host (a daemon since restarted).
        pid = self._pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker on this host")
        if pid_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        worker = self._workers.get(run.run_id)
        code = worker.exitcode if worker is not None else None
        if code == 0:
            # A clean exit that left the run unfinished (its database was gone as it wrote the
            # end) is a failure: Dagster's monitor leaves a SUCCESS worker's run STARTED.
            current = self._instance.get_run_by_id(run.run_id)
            if current is None or current.is_finished:
                return CheckRunHealthResult(WorkerStatus.SUCCESS)
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"the run worker (pid {pid}) exited without recording the run's end",
            )
        if code is not None and code != 255:  # 255: the forkserver could not tell
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run worker (pid {pid}) exited with code {code}"
            )
        return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"the run worker (pid {pid}) is gone")

    def dispose(self) -> None:
        self._workers.clear()


class WarmQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's run queue; in the daemon it also starts the warm worker, in the background."""

    _warming: threading.Thread | None = None

    @property
    def dequeue_interval_seconds(self) -> int:
        # Dagster reads this once, in the daemon, as it creates the queue's worker (and
        # nowhere else): the process that will launch the runs, before its first launch.
        if self._warming is None and isinstance(self._instance.run_launcher, WarmRunLauncher):
            self._warming = threading.Thread(
                target=self._instance.run_launcher.warm_up, name="docpipe-warm-up", daemon=True
            )
            self._warming.start()
        return super().dequeue_interval_seconds
