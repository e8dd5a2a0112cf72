"""What a stage did to a batch, shaped for asset metadata and the CLI."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docpipe_dagster.store.queries import JobRow, Store


@dataclass
class StageReport:
    stage: str
    documents: int = 0  # documents this stage worked on in this run
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # already past this stage (re-runs) or not in a state it handles
    external_calls: int = 0
    counters: dict[str, int | float] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def count(self, name: str, amount: int | float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def fail(self, storage_key: str, reason: str, **extra: Any) -> None:
        self.failed += 1
        self.failures.append(
            {"storage_key": storage_key, "stage": self.stage, "reason": reason, **extra}
        )

    def finish(self) -> StageReport:
        self.seconds = round(time.perf_counter() - self.started, 4)
        return self

    def metrics(self) -> dict[str, int | float]:
        """Flat numbers: the UI plots each of them over time."""
        return {
            "documents": self.documents,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "external_calls": self.external_calls,
            "seconds": self.seconds,
            **self.counters,
        }


@dataclass(frozen=True)
class RetrySchedule:
    """How a transient per-document failure is retried: attempts, and the backoff base
    (doubling per attempt) before the retry sensor re-queues it."""

    max_attempts: int = 3
    retry_base_seconds: float = 30.0


def batch_jobs(
    store: Store, batch_key: str, states: Sequence[str], report: StageReport
) -> list[JobRow]:
    """The batch's jobs in the states a stage handles (one query); the rest count as skipped."""
    jobs = store.jobs_in_batch(batch_key)
    todo = [job for job in jobs if job.state in states]
    report.documents = len(todo)
    report.skipped = len(jobs) - len(todo)
    return todo


def fail_job(
    store: Store,
    report: StageReport,
    job: JobRow,
    reason: str,
    *,
    code: str | None = None,
    retryable: bool = False,
    retry: RetrySchedule = RetrySchedule(),
) -> None:
    """Fail one document at this report's stage, in the database and in the run's metadata."""
    store.mark_failed(
        job.job_id,
        report.stage,
        reason,
        code=code,
        retryable=retryable,
        max_attempts=retry.max_attempts,
        retry_base_seconds=retry.retry_base_seconds,
    )
    report.fail(job.storage_key, reason, code=code, retryable=retryable)
