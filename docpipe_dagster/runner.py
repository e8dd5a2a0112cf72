"""Run the `ingest_batch` job in-process for pending batches (`docpipe ingest`, tests, benchmarks).

The job comes from `definitions.defs()`, the same Definitions the daemon loads, executed
with `execute_in_process`; only the resources may be swapped (a test's database, other
settings). When DAGSTER_HOME points at the Postgres-backed instance, the runs are recorded
there and show up in the UI too.

Up to DOCPIPE_INGEST_RUNS batches run at once, on threads, each thread with an instance of
its own: much of a run's time is spent waiting on the parser, the embedder and Postgres, so a
second run fills the gaps (the daemon gets the same overlap from its run queue).
"""

from __future__ import annotations

import functools
import gc
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg

from docpipe_dagster.config import settings
from docpipe_dagster.defs.partitions import BATCHES, INGEST_JOB
from docpipe_dagster.defs.resources import PipelineSettings, build_resources
from docpipe_dagster.pipeline.intake import IntakeConfig, IntakeResult, scan_storage

_LOADING = threading.Lock()


def _definitions() -> dg.Definitions:
    # Loaded once per process, by the first run thread to get here; the others wait for it.
    with _LOADING:
        return _load_definitions()


@functools.cache
def _load_definitions() -> dg.Definitions:
    # Building the component tree imports every defs module.
    from docpipe_dagster.definitions import defs

    loaded = defs()
    # Dagster's modules and these definitions live as long as the process: frozen, the
    # runs' full garbage collections no longer walk them each time.
    gc.freeze()
    return loaded


def ingest_job(resources: Mapping[str, Any] | None = None) -> dg.JobDefinition:
    """The production `ingest_batch` job, bound to these resources (default: from settings)."""
    loaded = _definitions()
    bound = dg.Definitions(
        assets=loaded.assets,
        asset_checks=loaded.asset_checks,
        jobs=loaded.jobs,
        sensors=loaded.sensors,
        schedules=loaded.schedules,
        executor=loaded.executor,
        loggers=loaded.loggers,
        resources={**(loaded.resources or {}), **dict(resources or build_resources())},
    )
    return bound.resolve_job_def(INGEST_JOB)


@dataclass
class BatchOutcome:
    batch_key: str
    success: bool
    run_id: str
    # time.monotonic() at the run's start and end
    started: float = field(default=0.0, compare=False)
    ended: float = field(default=0.0, compare=False)
    # the run's events (its assets' materializations and metadata), readable after its
    # instance is gone
    result: dg.ExecuteInProcessResult | None = field(default=None, compare=False, repr=False)


def _persistent_instance_configured() -> bool:
    home = os.environ.get("DAGSTER_HOME")
    return bool(home) and os.path.exists(os.path.join(home, "dagster.yaml"))


def open_instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is configured, else an ephemeral one."""
    if _persistent_instance_configured():
        return _without_logging_reconfiguration(dg.DagsterInstance.get())
    return dg.DagsterInstance.ephemeral()


def _without_logging_reconfiguration(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """Skip the `logging.config.dictConfig` a persistent instance makes at each run's start
    when it has no `python_logs` handlers to make. dictConfig closes every handler in the
    process while holding logging's module lock: a thread emitting through a handler that
    logs again (Dagster's event handler, writing to Postgres) deadlocks against it."""
    if not instance.get_python_log_dagster_handler_config():
        instance.get_yaml_python_handlers = list  # type: ignore[method-assign]
    return instance


def run_batch(
    batch_key: str,
    *,
    resources: Mapping[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
) -> BatchOutcome:
    started = time.monotonic()
    instance = instance or open_instance()
    if not instance.has_dynamic_partition(BATCHES, batch_key):
        instance.add_dynamic_partitions(BATCHES, [batch_key])
    result = ingest_job(resources).execute_in_process(
        partition_key=batch_key,
        instance=instance,
        raise_on_error=False,
        tags={"docpipe/reason": "docpipe ingest"},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    return BatchOutcome(batch_key, result.success, result.run_id, started, time.monotonic(), result)


class _RunSlots:
    """`runs` threads that run batches, each with one Dagster instance for its whole life.

    An ephemeral instance keeps its storage in in-memory SQLite, whose connections belong to
    the thread that opened them: so each instance is opened, used and disposed by one thread,
    and reused by it for its next batches. The first one opened costs ~0.5 s (its storage's
    imports), so the threads open theirs as soon as they start, while the caller registers
    what storage holds. With a `shared` instance there is one slot, which uses it and leaves
    it open; with the persistent instance (DAGSTER_HOME) one slot too.
    """

    def __init__(
        self,
        runs: int,
        run: Callable[[str, dg.DagsterInstance], BatchOutcome],
        shared: dg.DagsterInstance | None = None,
    ) -> None:
        self._run, self._shared = run, shared
        self._queue: queue.SimpleQueue[tuple[str, Future[BatchOutcome]] | None]
        self._queue = queue.SimpleQueue()
        # A shared instance serves one run at a time. So does the persistent one: Dagster
        # captures a step's output by pointing the process's stdout and stderr at a file;
        # two runs on threads of one process leave the command's own output in a step's log.
        one_at_a_time = shared is not None or _persistent_instance_configured()
        self.runs = 1 if one_at_a_time else max(1, runs)
        self._opened: list[Future[dg.DagsterInstance]] = [Future() for _ in range(self.runs)]
        self._threads = [
            threading.Thread(target=self._serve, args=(opened,), name=f"docpipe-run-{i}")
            for i, opened in enumerate(self._opened)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def first_instance(self) -> dg.DagsterInstance:
        """The first slot's instance, once open: for Dagster calls outside a run that only
        need an instance to hand resources (build_resources stores no events in it)."""
        return self._opened[0].result()

    def _serve(self, opened: Future[dg.DagsterInstance]) -> None:
        instance: dg.DagsterInstance | None = None
        failure: BaseException | None = None
        try:
            instance = self._shared if self._shared is not None else open_instance()
            opened.set_result(instance)
        except BaseException as exc:  # every batch given to this slot fails with it
            failure = exc
            opened.set_exception(exc)
        try:
            while (item := self._queue.get()) is not None:
                batch_key, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                if instance is None:
                    future.set_exception(failure or RuntimeError("no Dagster instance"))
                    continue
                try:
                    future.set_result(self._run(batch_key, instance))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            if instance is not None and instance is not self._shared:
                instance.dispose()

    def submit(self, batch_keys: Sequence[str]) -> list[Future[BatchOutcome]]:
        """Queue these batches; each slot takes the next one when it is free."""
        futures: list[Future[BatchOutcome]] = []
        for key in batch_keys:
            futures.append(Future())
            self._queue.put((key, futures[-1]))
        return futures

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


def ingest_pending(
    *,
    resources: Mapping[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    intake: IntakeConfig | None = None,
    on_batch: Callable[[BatchOutcome, IntakeResult], None] | None = None,
    max_rounds: int = 10_000,
    log_level: str = "INFO",
    runs: int | None = None,
) -> list[BatchOutcome]:
    """Register what storage holds and process every batch until nothing new remains.

    `runs` batches at a time (default DOCPIPE_INGEST_RUNS), each run thread with an
    instance of its own (`open_instance`). A given `instance`, or the persistent one
    (DAGSTER_HOME), serves every run, so they go one at a time.
    """
    resources = dict(resources or build_resources())

    def run(batch_key: str, own: dg.DagsterInstance) -> BatchOutcome:
        return run_batch(batch_key, resources=resources, instance=own, log_level=log_level)

    database = resources["database"]
    outcomes: list[BatchOutcome] = []
    slots = _RunSlots(settings().ingest_runs if runs is None else runs, run, shared=instance)
    try:
        if intake is None:
            # The configured batch limits; no settling wait: the user asked to ingest now.
            pipeline = resources.get("pipeline_settings")
            # Batches as even as the limits allow over the runs that process them side by side.
            configured = (
                pipeline.intake() if isinstance(pipeline, PipelineSettings) else IntakeConfig()
            )
            intake = replace(configured, settle_seconds=0.0, spread_over=slots.runs)
        with dg.build_resources(
            {"database": database, "storage": resources["storage"]},
            instance=slots.first_instance(),  # else it would open an ephemeral one of its own
        ) as built:
            store = built.database.store()
            leftover = store.open_batches()
            routes = getattr(resources.get("parser"), "routing", None)  # the runs' routing
            queued: list[tuple[Future[BatchOutcome], IntakeResult]] = []
            try:
                for _ in range(max_rounds):
                    scan = scan_storage(built.storage.open(), store, intake, routes=routes)
                    keys = sorted(set(scan.batches) | set(leftover))
                    leftover = []
                    queued += [(future, scan) for future in slots.submit(keys)]
                    if scan.deferred:
                        # More than one scan registers: register the rest while these run.
                        # With every batch of the load queued, a bulk load's HNSW index is
                        # built once, after the last one; between rounds with nothing in
                        # flight it would be built early and the later rows inserted into it
                        # one by one.
                        continue
                    for future, registered_by in queued:
                        outcome = future.result()
                        outcomes.append(outcome)
                        if on_batch:
                            on_batch(outcome, registered_by)
                    queued = []
                    if not scan.batches:
                        break
            finally:
                for future, _ in queued:
                    future.cancel()
    finally:
        slots.close()
    return outcomes
