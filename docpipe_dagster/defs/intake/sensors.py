"""Intake: register files from storage in batches; re-queue transient failures.

Both sensors keep their state in Postgres (upload_jobs). The cursor is only a small
summary (a high-water mark of file mtimes and the last tick's counts) for the UI.
"""

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dagster as dg

from docpipe_dagster.clients.webserver import LAUNCH_GRACE_SECONDS
from docpipe_dagster.config import settings
from docpipe_dagster.core.ids import batch_key as make_batch_key
from docpipe_dagster.defs.intake.recovery import batch_has_live_run
from docpipe_dagster.defs.partitions import INGEST_JOB, batch_run_requests
from docpipe_dagster.defs.resources import (
    DatabaseResource,
    ParserResource,
    PipelineSettings,
    StorageResource,
)
from docpipe_dagster.pipeline.intake import scan_storage

# Sensor intervals are arguments of the decorators, so they are read when the definitions
# load (a restart of the code location picks up a change).
INTAKE_INTERVAL_SECONDS = settings().sensor_interval_seconds
RETRY_INTERVAL_SECONDS = settings().retry_interval_seconds
UPLOAD_LAUNCH_GRACE = timedelta(seconds=LAUNCH_GRACE_SECONDS)
# The most runs a burst is spread over (runs_at_once).
MAX_SPREAD = 64


def _cursor(raw: str | None) -> dict:
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}


@dg.sensor(
    name="storage_intake_sensor",
    job_name=INGEST_JOB,
    minimum_interval_seconds=INTAKE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Lists storage, registers new and changed files in upload_jobs (grouped into capped "
        "batches, one run each), and removes deleted files from search."
    ),
)
def storage_intake_sensor(
    context: dg.SensorEvaluationContext,
    database: DatabaseResource,
    storage: StorageResource,
    pipeline_settings: PipelineSettings,
    parser: ParserResource,
) -> dg.SensorResult:
    previous = _cursor(context.cursor)
    # Batches in a multiple of the runs the queue runs at once, as even as the caps allow: the
    # runs then share a burst evenly instead of one of them running a short last batch alone.
    intake = replace(pipeline_settings.intake(), spread_over=runs_at_once(context.instance))
    result = scan_storage(storage.open(), database.store(), intake, routes=parser.routing)
    summary = result.summary()
    cursor = {
        "high_water_mark": max(previous.get("high_water_mark", 0.0), result.newest_modified),
        "last_tick": summary,
    }
    if result.batches or result.deleted:
        context.log.info(f"intake: {summary}")
    requests = batch_run_requests(sorted(result.batches), "new files")
    skip = (
        None
        if result.batches
        else f"nothing new ({summary['unchanged']} unchanged, {summary['unstable']} settling)"
    )
    return dg.SensorResult(cursor=json.dumps(cursor, sort_keys=True), skip_reason=skip, **requests)


@dg.sensor(
    name="retry_sensor",
    job_name=INGEST_JOB,
    minimum_interval_seconds=RETRY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-queues documents whose failure was transient once their backoff has elapsed "
        "(bounded attempts: after the last one they stay failed, the dead-letter list); "
        "re-launches documents stuck in flight whose run died unreported; launches "
        "requested retries and uploads the HTTP API registered but could not launch."
    ),
)
def retry_sensor(
    context: dg.SensorEvaluationContext,
    database: DatabaseResource,
    pipeline_settings: PipelineSettings,
) -> dg.SensorResult:
    store = database.store()
    now = datetime.now(timezone.utc)
    batches: list[str] = []

    due = store.due_retries(pipeline_settings.max_attempts, pipeline_settings.batch_max_files)
    if due:
        key = "retry-" + make_batch_key(now, [j.job_id for j in due])
        if store.requeue([j.job_id for j in due], key, "transient failure, backoff elapsed"):
            batches.append(key)

    # The fallback for a run that died unreported (dead_run_sensor handles reported ones);
    # parked documents wait for their service (parked_documents_sensor), not for this.
    candidates = store.stale_in_flight(
        pipeline_settings.stale_after, pipeline_settings.batch_max_files
    )
    if candidates:
        parked = {j.job_id for j in store.parked_jobs()}
        candidates = [j for j in candidates if j.job_id not in parked]
    # One run lookup per batch, not per job: a dead batch's jobs all share its key.
    live = {b: batch_has_live_run(context.instance, b) for b in {j.batch_key for j in candidates}}
    stale = [job for job in candidates if not live[job.batch_key]]
    if stale:
        key = "resume-" + make_batch_key(now, [j.job_id for j in stale])
        if store.move_to_batch([j.job_id for j in stale], key, "in flight with no live run"):
            batches.append(key)

    # A person's retry request (`docpipe retry`, the retry_failed_documents job): at once.
    # An upload the API registered itself whose launch failed (the webserver was down): once
    # it is older than any launch in flight. A batch that has a run is never launched again.
    open_requests = store.requested_batches(uploads_older_than=UPLOAD_LAUNCH_GRACE)
    requested = [b for b in open_requests if not _batch_ever_ran(context.instance, b)]
    batches += requested

    if not batches:
        return dg.SensorResult(skip_reason="no failures due for retry, nothing stuck")
    context.log.info(
        f"retry: {len(due)} due, {len(stale)} stale, {len(requested)} requested -> {batches}"
    )
    return dg.SensorResult(**batch_run_requests(batches, "retry"))


def runs_at_once(instance: dg.DagsterInstance) -> int:
    """The run queue's limit on runs at once; 1 when there is no queue, no limit, or a limit
    so high that spreading a burst over it would make runs of a few files each (every run
    costs Dagster seconds whatever its size)."""
    queue = instance.get_concurrency_config().run_queue_config
    limit = queue.max_concurrent_runs if queue else None
    return limit if isinstance(limit, int) and 0 < limit <= MAX_SPREAD else 1


def _batch_ever_ran(instance: dg.DagsterInstance, batch_key: str) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch_key}), limit=1)
    return bool(runs)
