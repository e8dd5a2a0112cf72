"""Retry failed documents from the UI: Jobs → retry_failed_documents → Launchpad.

The same re-queue as `docpipe retry`; the retry_sensor launches the batch it makes.
"""

import dagster as dg
from pydantic import Field

from docpipe_dagster.actions.requeue import requeue
from docpipe_dagster.defs.resources import DatabaseResource


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
    done = requeue(store, jobs, "requested from the Dagster UI", reset_attempts=True)
    batch, moved = done.batch, done.moved
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
