"""Make each embedded document searchable: each document swapped in atomically.

Documents are committed in groups, one transaction and a fixed number of statements per
group (a document is never split across groups), by a couple of connections at once; a
group that fails is retried document by document so a bad document fails alone.

The HNSW index: inserting rows one by one into the graph costs several times more than
building it once after loading (docs/ARCHITECTURE.md, the HNSW index). When the rows this batch and the
other batches in flight bring are a large part of what the space's index already holds
(`bulk_threshold`, or the index is empty), the index is dropped, the documents committed
without it, and the last batch to finish builds it again in one pass with enough
maintenance_work_mem and parallel workers. Until then search is still correct, only
slower (an exact scan). Small batches into a large index insert into it as usual.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from docpipe_dagster.config import default_of
from docpipe_dagster.core.batching import pack
from docpipe_dagster.pipeline.report import RetrySchedule, StageReport, batch_jobs, fail_job
from docpipe_dagster.store.queries import (
    BulkLoadPlan,
    CommitOutcome,
    IndexBuild,
    JobRow,
    Store,
    VectorSpace,
)


@dataclass(frozen=True)
class IndexSettings:
    """How the commit stage treats the HNSW index (PipelineSettings.index() fills it from
    resource config; the defaults and their variables are in docpipe_dagster.config)."""

    # Bulk load when incoming rows >= threshold x rows already indexed; `inf` never
    # drops the index.
    bulk_threshold: float = default_of("index_bulk_threshold")
    # Upper bound for a one-pass build (the setting is in bytes, validated when it loads).
    maintenance_work_mem_mb: int = default_of("index_maintenance_work_mem") // 2**20
    parallel_workers: int = default_of("index_parallel_workers")
    # In-flight jobs untouched for longer are dead runs: they do not hold the rebuild back.
    in_flight_within: timedelta = timedelta(minutes=default_of("stale_minutes"))
    # Commit groups: up to this many rows per transaction, this many connections at once.
    group_rows: int = default_of("commit_group_rows")
    workers: int = default_of("commit_workers")

    def build(self) -> IndexBuild:
        return IndexBuild(self.maintenance_work_mem_mb, self.parallel_workers)

    def wants_bulk(self, plan: BulkLoadPlan) -> bool:
        """Drop and rebuild rather than insert into the graph?"""
        if plan.index_state != "ready":
            return False
        incoming = plan.incoming_rows + plan.pending_rows
        return incoming > 0 and incoming >= self.bulk_threshold * plan.existing_rows


def _groups(jobs: list[JobRow], max_rows: int) -> list[list[JobRow]]:
    """Consecutive groups of about max_rows chunks; all versions of a document together."""
    by_document: dict[Any, list[JobRow]] = {}
    for job in jobs:
        by_document.setdefault(job.document_id, []).append(job)
    packed = pack(
        by_document.values(),
        weight=lambda versions: sum(j.chunk_count or 1 for j in versions),
        max_weight=max_rows,
    )
    return [[job for versions in group for job in versions] for group in packed]


def commit_documents(
    store: Store,
    batch_key: str,
    *,
    space: VectorSpace,
    max_attempts: int,
    index: IndexSettings | None = None,
) -> StageReport:
    index = index or IndexSettings()
    report = StageReport("commit")
    jobs = batch_jobs(store, batch_key, ["embedded"], report)
    group_rows = index.group_rows
    if jobs:
        store.ensure_vector_space(space, index.build())
        plan = store.bulk_load_plan(
            space, [j.job_id for j in jobs], batch_key, index.in_flight_within
        )
        if index.wants_bulk(plan) and store.begin_bulk_load(space):
            report.count("index_dropped_for_bulk_load")
        elif plan.index_state == "ready":
            # Inserting into the graph is the slow part: share it between the connections.
            group_rows = min(group_rows, -(-plan.incoming_rows // index.workers) or 1)
        report.count("index_rows_before", plan.existing_rows)

    def commit_group(group: list[JobRow]) -> list[tuple[JobRow, CommitOutcome | Exception]]:
        try:
            outcomes = store.commit_documents(group, space)
            return [(job, outcomes[job.job_id]) for job in group]
        except Exception:  # isolate the failing document: commit them one by one
            results: list[tuple[JobRow, CommitOutcome | Exception]] = []
            for job in group:
                try:
                    results.append((job, store.commit_document(job, space)))
                except Exception as exc:  # one document's failure must not stop the others
                    results.append((job, exc))
            return results

    groups = _groups(jobs, group_rows)
    with ThreadPoolExecutor(max_workers=max(1, min(index.workers, len(groups)))) as pool:
        for results in pool.map(commit_group, groups):
            for job, outcome in results:
                if isinstance(outcome, Exception):
                    reason = f"commit failed: {outcome.__class__.__name__}: {outcome}"
                    fail_job(
                        store,
                        report,
                        job,
                        reason,
                        code="COMMIT",
                        retryable=True,
                        retry=RetrySchedule(max_attempts=max_attempts),
                    )
                elif outcome.committed:
                    report.succeeded += 1
                    report.count("chunks", outcome.chunks)
                    report.count("chunks_replaced", outcome.replaced)
                else:
                    report.count("superseded")

    # The last batch of a bulk load (or any commit after a crash left one open) rebuilds
    # the index; runs with nothing to commit take part too, so the index never stays
    # dropped because the batches that held it back ended up failing.
    built = store.finish_bulk_load(space, index.build(), index.in_flight_within)
    if built and built.deferred:
        report.count("index_rebuild_deferred")
    elif built:
        report.count("index_rebuilt_rows", built.rows)
        report.count("index_build_seconds", built.seconds)
    return report.finish()
