"""Retry failed documents from the UI: Jobs → retry_failed_documents → Launchpad.

The same re-queue as `docpipe retry`; the retry_sensor launches the batch it makes.
"""

from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from docpipe_dagster.core.ids import batch_key as make_batch_key
from docpipe_dagster.defs.resources import DatabaseResource
from docpipe_dagster.store.documents import REQUEUE_PREFIX


class RetryRequest(dg.Config):
    storage_keys: list[str] = Field(default_factory=list)
    all_failed: bool = False
    stage: str | None = None


@dg.op(description="Re-queue failed documents (dead-lettered too) whose content is unchanged.")
def requeue_failed_documents(
    context: dg.OpExecutionContext, config: RetryRequest, database: DatabaseResource
) -> dg.Output[int]:
    if not config.storage_keys and not config.all_failed:
        raise dg.Failure("name storage_keys or set all_failed: true")
    store = database.store()
    jobs = store.failed_versions(config.storage_keys, stage=config.stage)
    if not jobs:
        context.log.info("nothing to retry")
        return dg.Output(0, metadata={"requeued": 0})
    batch = REQUEUE_PREFIX + make_batch_key(datetime.now(timezone.utc), [j.job_id for j in jobs])
    moved = store.requeue_failed(jobs, batch, "requested from the Dagster UI", reset_attempts=True)
    context.log.info(f"re-queued {len(moved)} documents into {batch}")
    return dg.Output(
        len(moved),
        metadata={
            "requeued": len(moved),
            "batch": batch,
            "storage_keys": [j.storage_key for j in jobs][:50],
        },
    )


@dg.job(description="Re-queue failed documents for another attempt (run config picks which).")
def retry_failed_documents() -> None:
    requeue_failed_documents()
