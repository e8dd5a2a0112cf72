"""Run the `ingest_batch` job in-process for pending batches (`docpipe ingest`, tests, benchmarks).

The job comes from `definitions.defs()`, the same Definitions the daemon loads, executed
with `execute_in_process`; only the resources may be swapped (a test's database, other
settings). When DAGSTER_HOME points at the Postgres-backed instance, the runs are recorded
there and show up in the UI too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

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
    return BatchOutcome(batch_key, result.success, result.run_id)


def ingest_pending(
    *,
    resources: Mapping[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    intake: IntakeConfig | None = None,
    on_batch: Callable[[BatchOutcome, IntakeResult], None] | None = None,
    max_rounds: int = 10_000,
    log_level: str = "INFO",
) -> list[BatchOutcome]:
    """Register what storage holds and process every batch until nothing new remains."""
    resources = dict(resources or build_resources())
    instance = instance or open_instance()
    if intake is None:
        # The configured batch limits; no settling wait: the user asked to ingest now.
        settings = resources.get("pipeline_settings")
        intake = (
            replace(settings.intake(), settle_seconds=0.0)
            if isinstance(settings, PipelineSettings)
            else IntakeConfig(settle_seconds=0.0)
        )
    database = resources["database"]
    outcomes: list[BatchOutcome] = []
    with dg.build_resources({"database": database, "storage": resources["storage"]}) as built:
        store = built.database.store()
        leftover = store.open_batches()
        for _ in range(max_rounds):
            scan = scan_storage(built.storage.open(), store, intake)
            for batch_key in sorted(set(scan.batches) | set(leftover)):
                outcome = run_batch(
                    batch_key, resources=resources, instance=instance, log_level=log_level
                )
                outcomes.append(outcome)
                if on_batch:
                    on_batch(outcome, scan)
            leftover = []
            if not scan.batches and not scan.deferred:
                break
    return outcomes
