"""The schema's name, the job states and the row types every store module shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from pgvector import HalfVector, Vector
from psycopg import sql

# The one definition of the schema name (SQL in sql/ creates it; everything else imports it).
SCHEMA = "upload_pipeline"
S = SCHEMA


class JobState(str, Enum):
    """A job's state (upload_jobs.state). A str, so it compares equal to the SQL literal."""

    UPLOADED = "uploaded"
    PARSING = "parsing"
    PARSED = "parsed"
    CHUNKED = "chunked"
    EMBEDDED = "embedded"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"
    SUPERSEDED = "superseded"

    def __str__(self) -> str:
        return self.value


IN_FLIGHT_STATES: tuple[str, ...] = tuple(
    s.value
    for s in (
        JobState.UPLOADED,
        JobState.PARSING,
        JobState.PARSED,
        JobState.CHUNKED,
        JobState.EMBEDDED,
    )
)
# A job in one of these never moves again.
FINAL_STATES: tuple[str, ...] = tuple(
    s.value for s in (JobState.COMPLETED, JobState.FAILED, JobState.DELETED, JobState.SUPERSEDED)
)
# Versions that no longer count as the document's current one.
GONE_STATES: tuple[str, ...] = (JobState.DELETED.value, JobState.SUPERSEDED.value)


@dataclass(frozen=True, kw_only=True)
class NewVersion:
    """A file version the intake sensor found: to register as a job."""

    job_id: uuid.UUID
    document_id: uuid.UUID
    storage_key: str
    content_sha256: str
    size_bytes: int
    media_type: str | None
    source_modified_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class JobRow(NewVersion):
    """A registered version (an upload_jobs row) and where it stands."""

    state: str
    batch_key: str | None
    attempts: int
    failure_reason: str | None = None
    chunk_count: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRow:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: uuid.UUID
    job_id: uuid.UUID
    chunk_index: int
    content: str
    text_sha256: str
    token_estimate: int
    heading_path: Sequence[str]
    char_start: int
    char_end: int
    # 1-based first and last page; None when the parser gave no reliable pages
    page_start: int | None = None
    page_end: int | None = None


@dataclass(frozen=True)
class ParsedJob:
    """A job's parse result, to be cached and recorded (StagingStore.save_parses)."""

    job: JobRow
    profile: str
    markdown: str
    page_count: int
    parse_job_id: str | None
    cache_hit: bool
    seconds: float = 0.0


@dataclass(frozen=True)
class PendingChunk:
    chunk_id: uuid.UUID
    job_id: uuid.UUID
    text_sha256: str
    content: str
    token_estimate: int


@dataclass
class BatchReport:
    """Per-batch counts that the asset checks and the run metadata use."""

    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    failed_without_reason: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CommitOutcome:
    """What commit_documents did with one job: committed (with chunk counts) or not (why)."""

    committed: bool
    chunks: int = 0
    replaced: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class EmbeddingCheck:
    """For a batch's embedded jobs: chunks lacking a vector, vectors of the wrong space."""

    chunks_without_vector: int
    vectors_wrong_space: int
    vectors: int


@dataclass(frozen=True)
class VectorSpace:
    """A vector space: one (model, dims) set of vectors with its own partial HNSW index.

    The one value type for a space, written (commit, backfill), searched and listed alike.
    `index_type` is the type the index (and search) casts the stored vectors to: "vector"
    (float32) or "halfvec" (float16: half the index size, up to 4,000 dimensions); None
    means vector up to 2,000 dimensions and halfvec above. The table keeps full precision.
    `is_active` (search reads it by default) is a state read from the database, not part
    of the space's identity: it does not take part in equality.
    """

    model: str
    dims: int
    index_type: str | None = None
    is_active: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.index_type not in (None, "vector", "halfvec"):
            raise ValueError(f"index type must be 'vector' or 'halfvec', got {self.index_type!r}")
        if self.index_type == "vector" and self.dims > 2000:
            raise ValueError(
                f"HNSW indexes `vector` up to 2,000 dimensions ({self.dims} asked); use halfvec"
            )

    @property
    def name(self) -> str:
        """MODEL:DIMS, as the commands and the API name a space."""
        return f"{self.model}:{self.dims}"

    @property
    def vector_type(self) -> str:
        # HNSW indexes `vector` up to 2,000 dimensions, `halfvec` up to 4,000.
        if self.index_type is not None:
            return self.index_type
        return "vector" if self.dims <= 2000 else "halfvec"

    @property
    def index_name(self) -> str:
        slug = "".join(c if c.isalnum() else "_" for c in self.model.lower())[:30]
        return f"document_chunks_hnsw_{slug}_{self.dims}"

    def cast(self) -> sql.Composable:
        """`embedding::vector(D)`: the expression the partial HNSW index is built on."""
        return sql.SQL("embedding::{}({})").format(
            sql.SQL(self.vector_type), sql.Literal(self.dims)
        )

    def param_cast(self) -> sql.Composable:
        return sql.SQL("%s::{}({})").format(sql.SQL(self.vector_type), sql.Literal(self.dims))

    def wrap(self, values: Sequence[float]) -> Vector | HalfVector:
        return Vector(list(values)) if self.vector_type == "vector" else HalfVector(list(values))
