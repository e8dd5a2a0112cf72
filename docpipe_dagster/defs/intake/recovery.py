"""Recovery that follows the service and the run, not a timer.

- Parked documents (left queued because their service was down) are re-launched on the first
  parked_documents_sensor tick that finds the service healthy again (every
  PARKED_INTERVAL_SECONDS; a tick with nothing parked costs one query and probes nothing); a service that keeps failing them
  is tried with a growing pause, so a health probe that passes while real calls fail costs
  one short run now and then, not one per tick.
- A batch whose run failed and that Dagster will not retry (retries used up, or none
  configured) is re-queued as soon as the failure is reported (dead_run_sensor), with the
  documents where they stopped; after `DOCPIPE_MAX_ATTEMPTS` dead runs a document ends
  failed with the reason, so a run that always dies cannot loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

import dagster as dg

from docpipe_dagster.core.ids import batch_key as make_batch_key
from docpipe_dagster.defs.intake.jobs import ingest_batch
from docpipe_dagster.defs.partitions import batch_run_requests
from docpipe_dagster.defs.resources import DatabaseResource, PipelineSettings
from docpipe_dagster.store.parked import DEAD_RUN_REASON, ParkedJob
from docpipe_dagster.store.queries import Store

RESUME_PREFIX = "resume-"
LIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Dagster tags a failed run with whether its run-retry policy will re-run it.
WILL_RETRY_TAG = "dagster/will_retry"
PARTITION_TAG = "dagster/partition"
MAX_PARK_PAUSE_SECONDS = 600.0
# How late a parked document may start after its service is back.
PARKED_INTERVAL_SECONDS = 5


def batch_has_live_run(instance: dg.DagsterInstance, batch_key: str | None) -> bool:
    if not batch_key:
        return False
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={PARTITION_TAG: batch_key}, statuses=LIVE_STATUSES), limit=1
    )
    return bool(runs)


def batch_run_states(instance: dg.DagsterInstance, batch_keys: Iterable[str]) -> dict[str, str]:
    """Per batch: "live" (a run queued or running), "dead" (runs, all ended), "none"."""
    states: dict[str, str] = {}
    for key in set(batch_keys):
        runs = instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: key}), limit=20)
        if not runs:
            states[key] = "none"
        elif any(r.status in LIVE_STATUSES for r in runs) or any(
            r.tags.get(WILL_RETRY_TAG) == "true" for r in runs[:1]
        ):
            states[key] = "live"  # running, or Dagster is about to re-run it
        else:
            states[key] = "dead"
    return states


def park_pause_seconds(parks: int, base_seconds: float) -> float:
    """How long a document parked `parks` times waits once its service looks healthy: not
    at all the first time, then doubling from `base_seconds` (capped)."""
    if parks <= 1:
        return 0.0
    return min(base_seconds * 2 ** (parks - 2), MAX_PARK_PAUSE_SECONDS)


def _healthy(services: Iterable[str]) -> dict[str, bool]:
    from docpipe_dagster.health import service_checks

    return {r.name: r.ok for r in service_checks(sorted(services))}


def relaunch_parked(
    store: Store,
    instance: dg.DagsterInstance,
    *,
    batch_max_files: int,
    base_seconds: float,
    now: datetime | None = None,
    healthy: Callable[[Iterable[str]], dict[str, bool]] = _healthy,
) -> tuple[list[str], dict[str, int]]:
    """Move parked documents whose service answers again into new batches; returns the
    batch keys made and, per service, the documents still waiting."""
    parked = store.parked_jobs()
    if not parked:
        return [], {}
    now = now or datetime.now(timezone.utc)
    live = {b: batch_has_live_run(instance, b) for b in {j.batch_key for j in parked}}
    candidates = [j for j in parked if not live[j.batch_key]]
    ok = healthy({j.service for j in candidates}) if candidates else {}

    def due(job: ParkedJob) -> bool:
        waited = (now - job.parked_at).total_seconds()
        return ok.get(job.service, False) and waited >= park_pause_seconds(job.parks, base_seconds)

    ready = [j for j in candidates if due(j)]
    batches: list[str] = []
    for service in sorted({j.service for j in ready}):
        jobs = [j.job_id for j in ready if j.service == service]
        for start in range(0, len(jobs), batch_max_files):
            part = jobs[start : start + batch_max_files]
            key = RESUME_PREFIX + make_batch_key(now, part)
            if store.move_to_batch(part, key, f"{service} answers again"):
                batches.append(key)
    waiting: dict[str, int] = {}
    moved = {j.job_id for j in ready}
    for job in parked:
        if job.job_id not in moved:
            waiting[job.service] = waiting.get(job.service, 0) + 1
    return batches, waiting


def _dagster_will_retry(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether Dagster's run retries will re-run this failed run. Dagster tags the run just
    after it stores the failure event, so a sensor can see the event first: wait for the tag
    (briefly) rather than re-queue a batch Dagster is about to re-run."""
    for _ in range(10):
        value = run.tags.get(WILL_RETRY_TAG)
        if value is not None or not instance.run_retries_enabled:
            return value == "true"
        time.sleep(0.5)
        run = instance.get_run_by_id(run.run_id) or run
    return False


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    """Why the run failed: its first failed step's error, else the run's failure message
    (a killed worker has no failed step: run monitoring says the process exited)."""
    message = getattr(context.failure_event, "message", None) or "no reason given"
    try:
        steps = context.instance.all_logs(
            context.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        )
        for record in steps:
            error = record.dagster_event.event_specific_data.error  # type: ignore[union-attr]
            cause = error.cause or error
            message = f"{record.step_key}: {cause.cls_name}: {cause.message}"
            break
    except Exception:  # the run's own message is enough
        pass
    return " ".join(str(message).split())[:200]


@dg.run_failure_sensor(
    name="dead_run_sensor",
    monitored_jobs=[ingest_batch],
    request_job=ingest_batch,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-queues what a failed batch run left in flight as soon as Dagster reports the run "
        "failed and will not retry it; after DOCPIPE_MAX_ATTEMPTS dead runs a document ends "
        "failed with the reason. Documents parked for a service down are left to retry_sensor."
    ),
)
def dead_run_sensor(
    context: dg.RunFailureSensorContext,
    database: DatabaseResource,
    pipeline_settings: PipelineSettings,
) -> dg.SensorResult | dg.SkipReason:

    run = context.dagster_run
    batch = run.tags.get(PARTITION_TAG)
    if not batch:
        return dg.SkipReason(f"run {run.run_id[:8]} has no batch")
    if _dagster_will_retry(context.instance, run):
        return dg.SkipReason(f"run {run.run_id[:8]} failed; Dagster re-runs it")
    if batch_has_live_run(context.instance, batch):
        return dg.SkipReason(f"batch {batch} has a live run")
    store = database.store()
    left = store.in_flight_in_batch(batch)
    if not left:
        return dg.SkipReason(f"run {run.run_id[:8]} failed; nothing of {batch} left in flight")
    reason = f"{DEAD_RUN_REASON} (run {run.run_id[:8]}: {_failure_message(context)})"
    resumes = store.dead_run_resumes(left)
    limit = pipeline_settings.max_attempts
    for job_id in [j for j in left if resumes[j] >= limit]:
        store.mark_failed(
            job_id, "intake", f"{reason}; its runs died {limit} times", code="RUN_DIED"
        )
    again = [j for j in left if resumes[j] < limit]
    if not again:
        return dg.SkipReason(f"{len(left)} documents of {batch} failed: their runs kept dying")
    key = RESUME_PREFIX + make_batch_key(datetime.now(timezone.utc), again)
    if not store.move_to_batch(again, key, reason):
        return dg.SkipReason(f"the documents of {batch} settled meanwhile")
    context.log.info(f"run {run.run_id[:8]} of {batch} died: {len(again)} documents -> {key}")
    return dg.SensorResult(**batch_run_requests([key], "dead run"))


@dg.sensor(
    name="parked_documents_sensor",
    job=ingest_batch,
    minimum_interval_seconds=PARKED_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-launches documents parked because their service was down (the parser or the "
        "embedder) on the first tick that finds the service healthy again; probes only the "
        "services documents wait for. A service that keeps failing them is tried with a "
        "growing pause (DOCPIPE_RETRY_BASE_SECONDS, doubling, at most 10 minutes)."
    ),
)
def parked_documents_sensor(
    context: dg.SensorEvaluationContext,
    database: DatabaseResource,
    pipeline_settings: PipelineSettings,
) -> dg.SensorResult:

    batches, waiting = relaunch_parked(
        database.store(),
        context.instance,
        batch_max_files=pipeline_settings.batch_max_files,
        base_seconds=pipeline_settings.retry_base_seconds,
    )
    still = "; ".join(f"{n} waiting for {service}" for service, n in sorted(waiting.items()))
    if not batches:
        return dg.SensorResult(skip_reason=still or "nothing parked")
    context.log.info(f"parked documents resumed in {batches}" + (f"; {still}" if still else ""))
    return dg.SensorResult(**batch_run_requests(batches, "service back"))
