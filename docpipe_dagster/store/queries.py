"""Every query the pipeline runs, in one place.

State lives here and nowhere else: job states, staged chunks and vectors, caches, the
audit trail and the searchable table. Writes are idempotent so a re-run repairs what a
crash interrupted; a document's old chunks are swapped for its new ones in ONE
transaction so search never sees half a document or two versions at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from pgvector import HalfVector, Vector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from docpipe_dagster.store.pool import open_pool

S = "upload_pipeline"
FINAL_STATES = ("completed", "failed", "deleted", "superseded")
IN_FLIGHT_STATES = ("uploaded", "parsing", "parsed", "chunked", "embedded")


@dataclass(frozen=True)
class JobRow:
    job_id: uuid.UUID
    document_id: uuid.UUID
    storage_key: str
    content_sha256: str
    size_bytes: int
    media_type: str | None
    state: str
    batch_key: str | None
    attempts: int
    source_modified_at: datetime | None = None
    failure_reason: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRow:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class NewVersion:
    """A file version the intake sensor found: to register as a job."""

    job_id: uuid.UUID
    document_id: uuid.UUID
    storage_key: str
    content_sha256: str
    size_bytes: int
    media_type: str | None
    source_modified_at: datetime | None


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


@dataclass(frozen=True)
class VectorSpace:
    """One (model, dims) set of vectors with its own partial HNSW index."""

    model: str
    dims: int

    @property
    def vector_type(self) -> str:
        # HNSW indexes `vector` up to 2,000 dimensions, `halfvec` up to 4,000.
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


@dataclass
class BatchReport:
    """Per-batch counts that the asset checks and the run metadata use."""

    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    failed_without_reason: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


class Store:
    """The pipeline's database access over a psycopg connection pool."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    @classmethod
    def open(cls, url: str, *, max_size: int = 8) -> Store:
        return cls(open_pool(url, max_size=max_size))

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    # --- events ---------------------------------------------------------------------

    @staticmethod
    def _event(
        conn: psycopg.Connection,
        job_id: uuid.UUID,
        stage: str,
        event_type: str,
        payload: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            f"INSERT INTO {S}.events (job_id, stage, event_type, payload) VALUES (%s, %s, %s, %s)",
            (job_id, stage, event_type, json.dumps(payload or {}, default=str)),
        )

    def events_for(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT stage, event_type, payload, created_at FROM {S}.events"
                " WHERE job_id = %s ORDER BY event_id",
                (job_id,),
            )
            return cur.fetchall()

    # --- intake ---------------------------------------------------------------------

    def current_versions(self) -> dict[str, JobRow]:
        """The newest registered, not deleted/superseded version of every storage key."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT DISTINCT ON (storage_key) * FROM {S}.upload_jobs"
                " WHERE state NOT IN ('deleted', 'superseded')"
                " ORDER BY storage_key, registered_at DESC"
            )
            return {row["storage_key"]: JobRow.from_row(row) for row in cur}

    def touch_source_modified(self, job_id: uuid.UUID, modified_at: datetime | None) -> None:
        """Same content, new mtime: remember it so the file is not hashed again."""
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE {S}.upload_jobs SET source_modified_at = %s WHERE job_id = %s",
                (modified_at, job_id),
            )

    def register_versions(self, versions: Sequence[NewVersion], batch_key: str) -> list[uuid.UUID]:
        """Register file versions as jobs of one batch; returns the job ids (re)queued.

        A version seen before (same document and content) is re-queued only when it is
        not already waiting or completed as the current version.
        """
        queued: list[uuid.UUID] = []
        with self.transaction() as conn:
            for v in versions:
                row = conn.execute(
                    f"""
                    INSERT INTO {S}.upload_jobs AS j (job_id, document_id, storage_key,
                        content_sha256, size_bytes, media_type, source_modified_at, state, batch_key)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, 'uploaded', %s)
                    ON CONFLICT (job_id) DO UPDATE SET
                        state = 'uploaded', batch_key = EXCLUDED.batch_key,
                        storage_key = EXCLUDED.storage_key, size_bytes = EXCLUDED.size_bytes,
                        media_type = EXCLUDED.media_type,
                        source_modified_at = EXCLUDED.source_modified_at,
                        attempts = 0, failed_stage = NULL, failure_code = NULL,
                        failure_reason = NULL, retryable = NULL, next_attempt_at = NULL,
                        registered_at = now(), updated_at = now(), completed_at = NULL
                    WHERE j.state IN ('deleted', 'superseded', 'failed', 'completed')
                    RETURNING (xmax = 0) AS inserted
                    """,
                    (
                        v.job_id,
                        v.document_id,
                        v.storage_key,
                        v.content_sha256,
                        v.size_bytes,
                        v.media_type,
                        v.source_modified_at,
                        batch_key,
                    ),
                ).fetchone()
                if row is None:
                    continue  # already in flight in another batch
                self._event(
                    conn,
                    v.job_id,
                    "intake",
                    "registered" if row[0] else "re-registered",
                    {"storage_key": v.storage_key, "size_bytes": v.size_bytes, "batch": batch_key},
                )
                queued.append(v.job_id)
        return queued

    def mark_deleted(self, document_id: uuid.UUID, reason: str) -> int:
        """The file is gone from storage: remove its chunks from search, in one transaction."""
        with self.transaction() as conn:
            jobs = conn.execute(
                f"SELECT job_id FROM {S}.upload_jobs WHERE document_id = %s"
                " AND state NOT IN ('deleted', 'superseded') FOR UPDATE",
                (document_id,),
            ).fetchall()
            removed = conn.execute(
                f"DELETE FROM {S}.document_chunks WHERE document_id = %s", (document_id,)
            ).rowcount
            for (job_id,) in jobs:
                conn.execute(f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = %s", (job_id,))
                conn.execute(
                    f"UPDATE {S}.upload_jobs SET state = 'deleted', updated_at = now()"
                    " WHERE job_id = %s",
                    (job_id,),
                )
                self._event(
                    conn, job_id, "intake", "deleted", {"reason": reason, "chunks_removed": removed}
                )
            return removed

    # --- generic job access ---------------------------------------------------------

    def jobs_in_batch(self, batch_key: str, states: Sequence[str] | None = None) -> list[JobRow]:
        query = f"SELECT * FROM {S}.upload_jobs WHERE batch_key = %s"
        params: list[Any] = [batch_key]
        if states is not None:
            query += " AND state = ANY(%s)"
            params.append(list(states))
        query += " ORDER BY storage_key"
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return [JobRow.from_row(r) for r in cur]

    def open_batches(self) -> list[str]:
        """Batches that still hold in-flight jobs (their run never happened or died)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT batch_key FROM {S}.upload_jobs WHERE state = ANY(%s)"
                " AND batch_key IS NOT NULL ORDER BY batch_key",
                (list(IN_FLIGHT_STATES),),
            ).fetchall()
        return [r[0] for r in rows]

    def set_state(
        self,
        job_id: uuid.UUID,
        state: str,
        stage: str,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        expected: Sequence[str] | None = None,
    ) -> bool:
        """Move a job to `state` (only from `expected` states when given) and log an event."""
        with self.transaction() as conn:
            query = f"UPDATE {S}.upload_jobs SET state = %s, updated_at = now() WHERE job_id = %s"
            params: list[Any] = [state, job_id]
            if expected is not None:
                query += " AND state = ANY(%s)"
                params.append(list(expected))
            if conn.execute(query, params).rowcount == 0:
                return False
            self._event(conn, job_id, stage, event_type, payload)
            return True

    def mark_failed(
        self,
        job_id: uuid.UUID,
        stage: str,
        reason: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        max_attempts: int = 3,
        retry_base_seconds: float = 30.0,
    ) -> dict[str, Any]:
        """Fail one document with a readable reason; schedule a retry while attempts remain."""
        reason = (reason or "unknown error").strip()[:2000] or "unknown error"
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT attempts FROM {S}.upload_jobs WHERE job_id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            attempts = (row[0] if row else 0) + 1
            will_retry = retryable and attempts < max_attempts
            next_at = (
                datetime.now(timezone.utc)
                + timedelta(seconds=retry_base_seconds * 2 ** (attempts - 1))
                if will_retry
                else None
            )
            conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'failed', failed_stage = %s,
                    failure_reason = %s, failure_code = %s, retryable = %s, attempts = %s,
                    next_attempt_at = %s, updated_at = now() WHERE job_id = %s""",
                (stage, reason, code, retryable, attempts, next_at, job_id),
            )
            payload = {
                "reason": reason,
                "code": code,
                "retryable": retryable,
                "attempts": attempts,
                "next_attempt_at": next_at.isoformat() if next_at else None,
            }
            self._event(conn, job_id, stage, "failed", payload)
        return payload

    def due_retries(self, max_attempts: int, limit: int) -> list[JobRow]:
        """Failed jobs whose failure was transient, attempts remain and backoff elapsed."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT * FROM {S}.upload_jobs WHERE state = 'failed' AND retryable
                    AND attempts < %s AND next_attempt_at <= now()
                    ORDER BY next_attempt_at LIMIT %s""",
                (max_attempts, limit),
            )
            return [JobRow.from_row(r) for r in cur]

    def requeue(self, job_ids: Sequence[uuid.UUID], batch_key: str, reason: str) -> list[uuid.UUID]:
        """Put failed jobs into a new batch for another attempt (attempt count kept)."""
        queued = []
        with self.transaction() as conn:
            for job_id in job_ids:
                updated = conn.execute(
                    f"""UPDATE {S}.upload_jobs SET state = 'uploaded', batch_key = %s,
                        next_attempt_at = NULL, updated_at = now()
                        WHERE job_id = %s AND state = 'failed'""",
                    (batch_key, job_id),
                ).rowcount
                if updated:
                    self._event(
                        conn, job_id, "intake", "retry", {"batch": batch_key, "reason": reason}
                    )
                    queued.append(job_id)
        return queued

    def stale_in_flight(self, older_than: timedelta, limit: int) -> list[JobRow]:
        """Jobs stuck in a non-final state (their run died or was never launched)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT * FROM {S}.upload_jobs WHERE state = ANY(%s)
                    AND updated_at < now() - %s ORDER BY updated_at LIMIT %s""",
                (list(IN_FLIGHT_STATES), older_than, limit),
            )
            return [JobRow.from_row(r) for r in cur]

    def move_to_batch(self, job_ids: Sequence[uuid.UUID], batch_key: str, reason: str) -> int:
        """Re-batch in-flight jobs (keeping their state: stages resume where they stopped)."""
        with self.transaction() as conn:
            moved = 0
            for job_id in job_ids:
                moved += conn.execute(
                    f"UPDATE {S}.upload_jobs SET batch_key = %s, updated_at = now()"
                    " WHERE job_id = %s AND state = ANY(%s)",
                    (batch_key, job_id, list(IN_FLIGHT_STATES)),
                ).rowcount
                self._event(
                    conn, job_id, "intake", "rebatched", {"batch": batch_key, "reason": reason}
                )
            return moved

    # --- parse ----------------------------------------------------------------------

    def cached_parses(self, shas: Iterable[str], profile: str) -> dict[str, tuple[str, int]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT content_sha256, markdown, page_count FROM {S}.parse_cache"
                " WHERE parser_profile = %s AND content_sha256 = ANY(%s)",
                (profile, list(set(shas))),
            ).fetchall()
        return {sha: (md, pages) for sha, md, pages in rows}

    def save_parse(
        self,
        job: JobRow,
        profile: str,
        markdown: str,
        page_count: int,
        parse_job_id: str | None,
        *,
        cache_hit: bool,
        seconds: float = 0.0,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                f"""INSERT INTO {S}.parse_cache (content_sha256, parser_profile, markdown,
                    page_count, parse_job_id) VALUES (%s, %s, %s, %s, %s)
                    ON CONFLICT DO NOTHING""",
                (job.content_sha256, profile, markdown, page_count, parse_job_id),
            )
            conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'parsed', parse_job_id = %s,
                    page_count = %s, updated_at = now() WHERE job_id = %s""",
                (parse_job_id, page_count, job.job_id),
            )
            self._event(
                conn,
                job.job_id,
                "parse",
                "parsed",
                {
                    "pages": page_count,
                    "chars": len(markdown),
                    "cache_hit": cache_hit,
                    "parse_job_id": parse_job_id,
                    "seconds": round(seconds, 3),
                },
            )

    def parsed_markdown(self, job: JobRow, profile: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT markdown FROM {S}.parse_cache WHERE content_sha256 = %s AND parser_profile = %s",
                (job.content_sha256, profile),
            ).fetchone()
        return row[0] if row else None

    # --- chunk ----------------------------------------------------------------------

    def save_chunks(self, job: JobRow, chunks: Sequence[ChunkRow], token_count: int) -> None:
        """Replace the job's staged chunks (idempotent) and mark it chunked."""
        with self.transaction() as conn:
            conn.execute(f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = %s", (job.job_id,))
            with conn.cursor().copy(
                f"COPY {S}.document_chunk_buffer (chunk_id, job_id, chunk_index, content,"
                " text_sha256, token_estimate, heading_path, char_start, char_end) FROM STDIN"
            ) as copy:
                for c in chunks:
                    copy.write_row(
                        (
                            c.chunk_id,
                            c.job_id,
                            c.chunk_index,
                            c.content,
                            c.text_sha256,
                            c.token_estimate,
                            list(c.heading_path),
                            c.char_start,
                            c.char_end,
                        )
                    )
            conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'chunked', chunk_count = %s,
                    token_count = %s, updated_at = now() WHERE job_id = %s""",
                (len(chunks), token_count, job.job_id),
            )
            self._event(
                conn, job.job_id, "chunk", "chunked", {"chunks": len(chunks), "tokens": token_count}
            )

    # --- embed ----------------------------------------------------------------------

    def chunks_to_embed(
        self, job_ids: Sequence[uuid.UUID], space: VectorSpace
    ) -> list[PendingChunk]:
        """Staged chunks of these jobs that have no staged vector in this space yet."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"""SELECT c.chunk_id, c.job_id, c.text_sha256, c.content, c.token_estimate
                    FROM {S}.document_chunk_buffer c
                    LEFT JOIN {S}.document_vector_buffer v
                      ON v.chunk_id = c.chunk_id AND v.embedding_model = %s AND v.dims = %s
                    WHERE c.job_id = ANY(%s) AND v.chunk_id IS NULL
                    ORDER BY c.job_id, c.chunk_index""",
                (space.model, space.dims, list(job_ids)),
            ).fetchall()
        return [PendingChunk(*r) for r in rows]

    def cached_embeddings(self, shas: Iterable[str], space: VectorSpace) -> dict[str, list[float]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT text_sha256, embedding FROM {S}.embedding_cache"
                " WHERE embedding_model = %s AND dims = %s AND text_sha256 = ANY(%s)",
                (space.model, space.dims, list(set(shas))),
            ).fetchall()
        return {sha: vec.to_list() for sha, vec in rows}

    def cache_embeddings(self, vectors: dict[str, Sequence[float]], space: VectorSpace) -> None:
        if not vectors:
            return
        with self.transaction() as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _new_embeddings (text_sha256 text, embedding vector)"
                " ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY _new_embeddings (text_sha256, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "vector"])
                for sha, vec in vectors.items():
                    copy.write_row((sha, Vector(list(vec))))
            conn.execute(
                f"""INSERT INTO {S}.embedding_cache (embedding_model, dims, text_sha256, embedding)
                    SELECT %s, %s, text_sha256, embedding FROM _new_embeddings
                    ON CONFLICT DO NOTHING""",
                (space.model, space.dims),
            )

    def stage_vectors(
        self, rows: Sequence[tuple[uuid.UUID, uuid.UUID, Sequence[float]]], space: VectorSpace
    ) -> None:
        """Stage (chunk_id, job_id, vector) rows for commit, replacing earlier attempts."""
        if not rows:
            return
        with self.transaction() as conn:
            conn.execute(
                f"DELETE FROM {S}.document_vector_buffer WHERE chunk_id = ANY(%s)",
                ([r[0] for r in rows],),
            )
            with conn.cursor().copy(
                f"COPY {S}.document_vector_buffer (chunk_id, job_id, embedding_model, dims, embedding)"
                " FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "uuid", "text", "int4", "vector"])
                for chunk_id, job_id, vec in rows:
                    copy.write_row((chunk_id, job_id, space.model, space.dims, Vector(list(vec))))

    def mark_embedded(self, job_id: uuid.UUID, payload: dict[str, Any]) -> bool:
        """chunked -> embedded, but only when every staged chunk has its staged vector."""
        with self.transaction() as conn:
            missing = conn.execute(
                f"""SELECT count(*) FROM {S}.document_chunk_buffer c
                    LEFT JOIN {S}.document_vector_buffer v ON v.chunk_id = c.chunk_id
                    WHERE c.job_id = %s AND v.chunk_id IS NULL""",
                (job_id,),
            ).fetchone()[0]
            if missing:
                return False
            updated = conn.execute(
                f"UPDATE {S}.upload_jobs SET state = 'embedded', updated_at = now()"
                " WHERE job_id = %s AND state = 'chunked'",
                (job_id,),
            ).rowcount
            if updated:
                self._event(conn, job_id, "embed", "embedded", payload)
            return bool(updated)

    # --- commit ---------------------------------------------------------------------

    def commit_document(self, job: JobRow, space: VectorSpace) -> dict[str, Any]:
        """Swap the document's searchable chunks for this version's, atomically.

        Locks the document's job rows so two commits of one document serialize; a
        version older than the newest registered one is superseded instead of committed.
        """
        with self.transaction() as conn:
            rows = conn.execute(
                f"""SELECT job_id, state, registered_at FROM {S}.upload_jobs
                    WHERE document_id = %s ORDER BY registered_at FOR UPDATE""",
                (job.document_id,),
            ).fetchall()
            mine = next((r for r in rows if r[0] == job.job_id), None)
            if mine is None or mine[1] != "embedded":
                return {"committed": False, "reason": f"state is {mine[1] if mine else 'missing'}"}
            newer = [r for r in rows if r[2] > mine[2] and r[1] not in ("deleted", "superseded")]
            if newer:
                conn.execute(
                    f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = %s", (job.job_id,)
                )
                conn.execute(
                    f"UPDATE {S}.upload_jobs SET state = 'superseded', updated_at = now() WHERE job_id = %s",
                    (job.job_id,),
                )
                self._event(conn, job.job_id, "commit", "superseded", {"by": str(newer[-1][0])})
                return {"committed": False, "reason": "a newer version exists"}
            removed = conn.execute(
                f"DELETE FROM {S}.document_chunks WHERE document_id = %s AND embedding_model = %s AND dims = %s",
                (job.document_id, space.model, space.dims),
            ).rowcount
            inserted = conn.execute(
                f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id, storage_key,
                        content_sha256, chunk_index, content, heading_path, token_estimate,
                        embedding_model, dims, embedding)
                    SELECT c.chunk_id, %s, c.job_id, %s, %s, c.chunk_index, c.content,
                        c.heading_path, c.token_estimate, v.embedding_model, v.dims, v.embedding
                    FROM {S}.document_chunk_buffer c
                    JOIN {S}.document_vector_buffer v ON v.chunk_id = c.chunk_id
                    WHERE c.job_id = %s AND v.embedding_model = %s AND v.dims = %s""",
                (
                    job.document_id,
                    job.storage_key,
                    job.content_sha256,
                    job.job_id,
                    space.model,
                    space.dims,
                ),
            ).rowcount
            conn.execute(f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = %s", (job.job_id,))
            conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'completed', completed_at = now(),
                    updated_at = now(), failed_stage = NULL, failure_reason = NULL,
                    failure_code = NULL, retryable = NULL WHERE job_id = %s""",
                (job.job_id,),
            )
            for old_id, old_state, _ in rows:
                if old_id != job.job_id and old_state not in ("deleted", "superseded"):
                    conn.execute(
                        f"UPDATE {S}.upload_jobs SET state = 'superseded', updated_at = now() WHERE job_id = %s",
                        (old_id,),
                    )
                    self._event(conn, old_id, "commit", "superseded", {"by": str(job.job_id)})
            payload = {"chunks": inserted, "replaced": removed}
            self._event(conn, job.job_id, "commit", "completed", payload)
            return {"committed": True, **payload}

    # --- vector spaces and search ---------------------------------------------------

    def ensure_vector_space(self, space: VectorSpace) -> None:
        """Create the partial HNSW index for a (model, dims) pair on first use."""
        with self.pool.connection() as conn:
            exists = conn.execute(
                f"SELECT 1 FROM {S}.vector_spaces WHERE embedding_model = %s AND dims = %s",
                (space.model, space.dims),
            ).fetchone()
            if exists:
                return
            ops = sql.SQL(
                "vector_cosine_ops" if space.vector_type == "vector" else "halfvec_cosine_ops"
            )
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {}.document_chunks USING hnsw (({}) {})"
                        " WHERE embedding_model = {} AND dims = {}"
                    ).format(
                        sql.Identifier(space.index_name),
                        sql.Identifier(S),
                        space.cast(),
                        ops,
                        sql.Literal(space.model),
                        sql.Literal(space.dims),
                    )
                )
                conn.execute(
                    f"INSERT INTO {S}.vector_spaces (embedding_model, dims, vector_type, index_name)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (space.model, space.dims, space.vector_type, space.index_name),
                )

    def search(
        self, query_vector: Sequence[float], space: VectorSpace, k: int = 5
    ) -> list[SearchHit]:
        distance = sql.SQL("{} <=> {}").format(space.cast(), space.param_cast())
        query = sql.SQL(
            "SELECT storage_key, chunk_index, 1 - ({d}) AS score, content, heading_path,"
            " document_id::text, chunk_id::text FROM {s}.document_chunks"
            " WHERE embedding_model = %s AND dims = %s ORDER BY {d} LIMIT %s"
        ).format(d=distance, s=sql.Identifier(S))
        vec = space.wrap(query_vector)
        with self.pool.connection() as conn:
            rows = conn.execute(query, (vec, space.model, space.dims, vec, k)).fetchall()
        return [SearchHit(r[0], r[1], float(r[2]), r[3], list(r[4]), r[5], r[6]) for r in rows]

    # --- reporting ------------------------------------------------------------------

    def batch_report(self, batch_key: str) -> BatchReport:
        report = BatchReport()
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT storage_key, state, failed_stage, failure_reason, failure_code,
                    retryable, attempts FROM {S}.upload_jobs WHERE batch_key = %s ORDER BY storage_key""",
                (batch_key,),
            )
            for row in cur:
                report.total += 1
                report.by_state[row["state"]] = report.by_state.get(row["state"], 0) + 1
                if row["state"] == "failed":
                    if not (row["failure_reason"] or "").strip():
                        report.failed_without_reason += 1
                    report.failures.append(
                        {
                            "storage_key": row["storage_key"],
                            "stage": row["failed_stage"],
                            "reason": row["failure_reason"],
                            "code": row["failure_code"],
                            "retryable": row["retryable"],
                            "attempts": row["attempts"],
                        }
                    )
        return report

    def scalar(self, query: str, params: Sequence[Any] = ()) -> Any:
        with self.pool.connection() as conn:
            row = conn.execute(query, params).fetchone()
        return row[0] if row else None

    def status(self) -> dict[str, Any]:
        """Documents by state, chunk and vector totals, failures with reasons (stable shape)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT state, count(*) AS n FROM (
                        SELECT DISTINCT ON (document_id) state FROM {S}.upload_jobs
                        ORDER BY document_id, registered_at DESC) latest GROUP BY state"""
            )
            by_state = {r["state"]: r["n"] for r in cur}
            cur.execute(
                f"""SELECT count(*) AS chunks, count(DISTINCT document_id) AS documents
                    FROM {S}.document_chunks"""
            )
            totals = cur.fetchone()
            cur.execute(
                f"""SELECT embedding_model, dims, count(*) AS vectors FROM {S}.document_chunks
                    GROUP BY embedding_model, dims ORDER BY embedding_model, dims"""
            )
            spaces = [dict(r) for r in cur]
            cur.execute(
                f"""SELECT storage_key, failed_stage AS stage, failure_reason AS reason,
                        failure_code AS code, retryable, attempts,
                        (retryable AND next_attempt_at IS NOT NULL) AS retry_scheduled,
                        next_attempt_at, updated_at
                    FROM (SELECT DISTINCT ON (document_id) * FROM {S}.upload_jobs
                          ORDER BY document_id, registered_at DESC) latest
                    WHERE state = 'failed' ORDER BY storage_key"""
            )
            failures = [
                {
                    **{k: r[k] for k in ("storage_key", "stage", "reason", "code", "attempts")},
                    "retryable": bool(r["retryable"]),
                    "retry_scheduled": bool(r["retry_scheduled"]),
                    "next_attempt_at": r["next_attempt_at"].isoformat()
                    if r["next_attempt_at"]
                    else None,
                    "updated_at": r["updated_at"].isoformat(),
                }
                for r in cur
            ]
            cur.execute(f"SELECT count(*) AS n FROM {S}.document_chunk_buffer")
            buffered_chunks = cur.fetchone()["n"]
            cur.execute(f"SELECT count(*) AS n FROM {S}.document_vector_buffer")
            buffered_vectors = cur.fetchone()["n"]
        return {
            "documents": {"total": sum(by_state.values()), "by_state": by_state},
            "chunks": totals["chunks"],
            "vectors": sum(s["vectors"] for s in spaces),
            "searchable_documents": totals["documents"],
            "vector_spaces": spaces,
            "buffers": {"chunks": buffered_chunks, "vectors": buffered_vectors},
            "failures": failures,
        }

    # --- asset-check queries --------------------------------------------------------

    def embedding_check(self, batch_key: str, space: VectorSpace) -> dict[str, int]:
        """For the batch's embedded jobs: chunks lacking a vector, vectors of the wrong space."""
        with self.pool.connection() as conn:
            missing, wrong_space, vectors = conn.execute(
                f"""SELECT
                        count(*) FILTER (WHERE v.chunk_id IS NULL),
                        count(*) FILTER (WHERE v.chunk_id IS NOT NULL AND (v.embedding_model <> %s
                            OR v.dims <> %s OR vector_dims(v.embedding) <> %s)),
                        count(v.chunk_id)
                    FROM {S}.upload_jobs j
                    JOIN {S}.document_chunk_buffer c ON c.job_id = j.job_id
                    LEFT JOIN {S}.document_vector_buffer v ON v.chunk_id = c.chunk_id
                    WHERE j.batch_key = %s AND j.state = 'embedded'""",
                (space.model, space.dims, space.dims, batch_key),
            ).fetchone()
        return {
            "chunks_without_vector": missing,
            "vectors_wrong_space": wrong_space,
            "vectors": vectors,
        }

    def commit_check(self, batch_key: str) -> dict[str, int]:
        """For the batch's completed jobs: searchable rows match, buffers empty, one version each."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"""WITH done AS (
                        SELECT job_id, document_id, chunk_count FROM {S}.upload_jobs
                        WHERE batch_key = %s AND state = 'completed')
                    SELECT
                      (SELECT count(*) FROM done),
                      (SELECT count(*) FROM done d WHERE d.chunk_count IS DISTINCT FROM
                          (SELECT count(*) FROM {S}.document_chunks c WHERE c.job_id = d.job_id)),
                      (SELECT count(*) FROM {S}.document_chunk_buffer b JOIN done d USING (job_id)),
                      (SELECT count(*) FROM {S}.document_vector_buffer b JOIN done d USING (job_id)),
                      (SELECT count(*) FROM (SELECT c.document_id FROM {S}.document_chunks c
                          JOIN done d USING (document_id) GROUP BY c.document_id, c.embedding_model, c.dims
                          HAVING count(DISTINCT c.content_sha256) > 1) two_versions),
                      (SELECT count(*) FROM (SELECT c.document_id FROM {S}.document_chunks c
                          JOIN done d USING (document_id)
                          GROUP BY c.document_id, c.embedding_model, c.dims, c.chunk_index
                          HAVING count(*) > 1) dup)""",
                (batch_key,),
            ).fetchone()
        names = (
            "completed",
            "vector_count_mismatches",
            "orphaned_chunk_buffer_rows",
            "orphaned_vector_buffer_rows",
            "documents_with_two_versions",
            "duplicate_chunk_positions",
        )
        return dict(zip(names, row, strict=True))
