"""Make each embedded document searchable: one transaction per document."""

from __future__ import annotations

from docpipe_dagster.pipeline.report import StageReport
from docpipe_dagster.store.queries import Store, VectorSpace


def commit_documents(
    store: Store, batch_key: str, *, space: VectorSpace, max_attempts: int
) -> StageReport:
    report = StageReport("commit")
    jobs = store.jobs_in_batch(batch_key, ["embedded"])
    report.skipped = len(store.jobs_in_batch(batch_key)) - len(jobs)
    report.documents = len(jobs)
    if jobs:
        store.ensure_vector_space(space)
    for job in jobs:
        try:
            outcome = store.commit_document(job, space)
        except Exception as exc:  # one document's failure must not stop the others
            reason = f"commit failed: {exc.__class__.__name__}: {exc}"
            store.mark_failed(
                job.job_id,
                "commit",
                reason,
                code="COMMIT",
                retryable=True,
                max_attempts=max_attempts,
            )
            report.fail(job.storage_key, reason)
            continue
        if outcome["committed"]:
            report.succeeded += 1
            report.count("chunks", outcome["chunks"])
            report.count("chunks_replaced", outcome["replaced"])
        else:
            report.count("superseded")
    return report.finish()
