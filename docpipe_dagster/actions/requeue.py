"""Put failed documents back in the queue: `docpipe retry`, `ingest --wait` (transient
failures at once) and the retry_failed_documents job make their batch here, one way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from docpipe_dagster.core.ids import batch_key
from docpipe_dagster.store.documents import REQUEUE_PREFIX
from docpipe_dagster.store.schema import JobRow

if TYPE_CHECKING:
    from docpipe_dagster.store.queries import Store


def requeue_batch_key(jobs: Sequence[JobRow], now: datetime | None = None) -> str:
    """The batch a re-queue makes: `requeue-` + the batch key of its jobs at `now`."""
    return REQUEUE_PREFIX + batch_key(now or datetime.now(timezone.utc), [j.job_id for j in jobs])


@dataclass(frozen=True)
class Requeued:
    batch: str
    moved: list[uuid.UUID]


def requeue(store: Store, jobs: Sequence[JobRow], reason: str, *, reset_attempts: bool) -> Requeued:
    """Move `jobs` (failed versions) into a new batch; `moved` are those still failed then.

    reset_attempts: a person asked (the dead-letter count starts over); an automatic retry
    keeps counting."""
    batch = requeue_batch_key(jobs)
    return Requeued(batch, store.requeue_failed(jobs, batch, reason, reset_attempts=reset_attempts))


def requeue_transient_now(store: Store, max_attempts: int) -> int:
    """Transient failures with attempts left, re-queued now rather than after their backoff
    (the user asked to ingest now). Dead-lettered ones stay failed. Returns how many moved."""
    jobs = store.failed_versions(transient_only=True, max_attempts=max_attempts)
    if not jobs:
        return 0
    reason = "transient failure retried at once by docpipe ingest --wait"
    return len(requeue(store, jobs, reason, reset_attempts=False).moved)
