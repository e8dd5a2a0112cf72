"""Run the `ingest_batch` job in-process for pending batches (`docpipe ingest`, tests, benchmarks).

The job comes from `definitions.defs()`, the same Definitions the daemon loads, executed
with `execute_in_process`; only the resources may be swapped (a test's database, other
settings). When DAGSTER_HOME points at the Postgres-backed instance, the runs are recorded
there and show up in the UI too.

Up to DOCPIPE_INGEST_RUNS batches run at once, on threads, each with an instance of its own:
most of a run's time is spent waiting on the parser, the embedder and Postgres, so a second
run fills the gaps (the daemon gets the same overlap from its run queue).
"""

from __future__ import annotations

import functools
import os
import queue
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg

from docpipe_dagster.config import settings
from docpipe_dagster.defs.partitions import BATCHES, INGEST_JOB
from docpipe_dagster.defs.resources import PipelineSettings, build_resources
from docpipe_dagster.pipeline.intake import IntakeConfig, IntakeResult, scan_storage


@functools.cache
def _definitions() -> dg.Definitions:
    # Loaded once per process: building the component tree imports every defs module.
    from docpipe_dagster.definitions import defs

    return defs()


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


def open_instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is configured, else an ephemeral one."""
    home = os.environ.get("DAGSTER_HOME")
    if home and os.path.exists(os.path.join(home, "dagster.yaml")):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


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
    return BatchOutcome(batch_key, result.success, result.run_id, started, time.monotonic())


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

    `runs` batches at a time (default DOCPIPE_INGEST_RUNS). A given `instance` is shared by
    every run, so they go one at a time; otherwise up to `runs` instances are opened
    (`open_instance`), each used by one run at a time: an in-memory one cannot be used from
    two threads at once.
    """
    resources = dict(resources or build_resources())
    runs = 1 if instance is not None else max(1, settings().ingest_runs if runs is None else runs)
    # Instances not in use; at most `runs` are ever opened (an ephemeral one costs ~0.4 CPU-s).
    idle: queue.SimpleQueue[dg.DagsterInstance] = queue.SimpleQueue()
    if instance is not None:
        idle.put(instance)
    opened: list[dg.DagsterInstance] = []

    def run(batch_key: str) -> BatchOutcome:
        try:
            own = idle.get_nowait()
        except queue.Empty:
            own = open_instance()
            opened.append(own)
        try:
            return run_batch(batch_key, resources=resources, instance=own, log_level=log_level)
        finally:
            idle.put(own)

    if intake is None:
        # The configured batch limits; no settling wait: the user asked to ingest now.
        pipeline = resources.get("pipeline_settings")
        intake = (
            replace(pipeline.intake(), settle_seconds=0.0)
            if isinstance(pipeline, PipelineSettings)
            else IntakeConfig(settle_seconds=0.0)
        )
    database = resources["database"]
    outcomes: list[BatchOutcome] = []
    try:
        with (
            dg.build_resources({"database": database, "storage": resources["storage"]}) as built,
            ThreadPoolExecutor(runs) as pool,
        ):
            store = built.database.store()
            leftover = store.open_batches()
            for _ in range(max_rounds):
                scan = scan_storage(built.storage.open(), store, intake)
                keys = sorted(set(scan.batches) | set(leftover))
                for outcome in pool.map(run, keys):  # in key order, as they finish
                    outcomes.append(outcome)
                    if on_batch:
                        on_batch(outcome, scan)
                leftover = []
                if not scan.batches and not scan.deferred:
                    break
    finally:
        for own in opened:
            own.dispose()
    return outcomes
