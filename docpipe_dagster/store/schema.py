"""The schema's name, the job states and the row types every store module shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

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


@dataclass(frozen=True)
class SearchHit:
    storage_key: str
    chunk_index: int
    score: float
    content: str
    heading_path: list[str]
    document_id: str
    chunk_id: str


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
