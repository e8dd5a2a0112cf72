from collections.abc import Iterator

import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.documents.views import batch_document_table
from docpipe_dagster.defs.metadata import failures_markdown, record_stage_run, report_metadata
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import DatabaseResource, EmbedderResource, PipelineSettings
from docpipe_dagster.pipeline.commit import commit_documents
from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster.store.queries import FINAL_STATES

CHECKS = {
    "batch_settled": "Every document of the batch is completed, or failed with a readable reason.",
    "one_vector_per_chunk": "Each completed document has as many searchable vectors as chunks.",
    "no_duplicate_chunks": "No document has two chunks at one position or chunks of two versions.",
    "buffers_empty_after_commit": "Nothing is left in the staging buffers for committed documents.",
    "invariants_hold": (
        "The pipeline's promises for this batch (docpipe verify): nothing lost, nothing "
        "duplicated, nothing half-visible, and each job's events tell its story in order."
    ),
}


@dg.asset(
    partitions_def=batch_partitions,
    deps=["chunk_embeddings"],
    group_name="ingestion",
    kinds={"postgres", "pgvector"},
    description=(
        "The searchable table (document_chunks, HNSW cosine index). Each document's old "
        "chunks are swapped for its new ones in one transaction."
    ),
    check_specs=[
        dg.AssetCheckSpec(name, asset="searchable_chunks", description=text)
        for name, text in CHECKS.items()
    ],
)
@correlated
def searchable_chunks(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedder: EmbedderResource,
    pipeline_settings: PipelineSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    store = database.store()
    report = commit_documents(
        store,
        context.partition_key,
        space=embedder.space(),
        max_attempts=pipeline_settings.max_attempts,
        index=pipeline_settings.index(),
    )
    record_stage_run(store, report, context.partition_key)
    batch = store.batch_report(context.partition_key)
    yield dg.MaterializeResult(
        metadata=report_metadata(
            report,
            batch_documents=batch.total,
            batch_completed=batch.by_state.get("completed", 0),
            batch_failed=batch.by_state.get("failed", 0),
            batch_failures=dg.MetadataValue.md(failures_markdown(batch.failures)),
            documents=batch_document_table(store, context.partition_key),
        )
    )
    settled = set(batch.by_state) <= set(FINAL_STATES)
    yield dg.AssetCheckResult(
        check_name="batch_settled",
        passed=settled and batch.failed_without_reason == 0,
        metadata={
            "by_state": dg.MetadataValue.json(batch.by_state),
            "failed_without_reason": batch.failed_without_reason,
        },
    )
    # One pass over the batch's invariants drives the four checks below.
    with store.connection() as conn:
        invariants = check_invariants(
            conn, batch_key=context.partition_key, live_batches={context.partition_key}
        )
    found = invariants.counts()
    yield dg.AssetCheckResult(
        check_name="one_vector_per_chunk",
        passed=found.get("vectors_differ_from_chunks", 0) == 0,
        metadata={"mismatches": found.get("vectors_differ_from_chunks", 0)},
    )
    yield dg.AssetCheckResult(
        check_name="no_duplicate_chunks",
        passed=not (found.get("duplicate_chunk") or found.get("two_versions_visible")),
        metadata={
            "documents_with_two_versions": found.get("two_versions_visible", 0),
            "duplicate_chunks": found.get("duplicate_chunk", 0),
        },
    )
    yield dg.AssetCheckResult(
        check_name="buffers_empty_after_commit",
        passed=found.get("buffer_not_cleared", 0) == 0,
        metadata={"documents_with_staged_rows": found.get("buffer_not_cleared", 0)},
    )
    yield dg.AssetCheckResult(
        check_name="invariants_hold",
        passed=invariants.ok,
        metadata={
            "jobs_checked": invariants.checked_jobs,
            "violations": dg.MetadataValue.json(found),
            "report": dg.MetadataValue.md(f"```\n{invariants.render()}\n```"),
        },
    )
