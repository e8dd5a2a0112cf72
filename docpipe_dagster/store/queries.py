"""The pipeline's database access: one `Store` composed of one class per aggregate.

- store/schema.py: the schema name, `JobState`, the row and result types
- store/base.py: the pool, transactions, the audit trail (events)
- store/jobs.py: jobs and their transitions (intake, states, failures, retries)
- store/staging.py: the parse cache, chunk and vector buffers, the embedding cache
- store/commit.py: the atomic swap of a document's searchable chunks
- store/vectors.py: vector spaces, the HNSW index lifecycle, bulk loads
- store/search.py: search (the SQL function upload_pipeline.search); spaces.py: coverage
- store/reports.py: batch reports, `docpipe status`, check queries
- store/metrics.py: what the Prometheus exporter reads, stage and provider runs
- store/parked.py: documents waiting for a service, what a dead run left in flight

State lives here and nowhere else. Writes are idempotent so a re-run repairs what a
crash interrupted; a document's old chunks are swapped for its new ones in ONE
transaction so search never sees half a document or two versions at once.
"""

from __future__ import annotations

from docpipe_dagster.store.commit import CommitStore
from docpipe_dagster.store.documents import DocumentStore
from docpipe_dagster.store.jobs import JobStore
from docpipe_dagster.store.metrics import MetricsStore
from docpipe_dagster.store.parked import ParkedStore
from docpipe_dagster.store.reports import ReportStore
from docpipe_dagster.store.schema import (
    FINAL_STATES,
    GONE_STATES,
    IN_FLIGHT_STATES,
    SCHEMA,
    BatchReport,
    ChunkRow,
    CommitOutcome,
    EmbeddingCheck,
    JobRow,
    JobState,
    NewVersion,
    ParsedJob,
    PendingChunk,
    S,
)
from docpipe_dagster.store.staging import StagingStore
from docpipe_dagster.store.vectors import (
    BulkLoadPlan,
    IndexBuild,
    IndexBuilt,
    VectorIndexStore,
    VectorSpace,
)

__all__ = [
    "FINAL_STATES",
    "GONE_STATES",
    "IN_FLIGHT_STATES",
    "SCHEMA",
    "BatchReport",
    "BulkLoadPlan",
    "ChunkRow",
    "CommitOutcome",
    "EmbeddingCheck",
    "IndexBuild",
    "IndexBuilt",
    "JobRow",
    "JobState",
    "NewVersion",
    "ParsedJob",
    "PendingChunk",
    "S",
    "Store",
    "VectorSpace",
]


class Store(
    JobStore,
    StagingStore,
    CommitStore,
    VectorIndexStore,
    ReportStore,
    DocumentStore,
    MetricsStore,
    ParkedStore,
):
    """The pipeline's database access over a psycopg connection pool."""
