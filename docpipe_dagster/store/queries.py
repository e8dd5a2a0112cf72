"""Every query the pipeline runs, in one place.

State lives here and nowhere else: job states, staged chunks and vectors, caches, the
audit trail and the searchable table. Writes are idempotent so a re-run repairs what a
crash interrupted; a document's old chunks are swapped for its new ones in ONE
transaction so search never sees half a document or two versions at once.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter, defaultdict
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
    chunk_count: int | None = None

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
    """One (model, dims) set of vectors with its own partial HNSW index.

    `index_type` is the type the index (and search) casts the stored vectors to: "vector"
    (float32) or "halfvec" (float16: half the index size, up to 4,000 dimensions); None
    means vector up to 2,000 dimensions and halfvec above. The table keeps full precision.
    """

    model: str
    dims: int
    index_type: str | None = None

    def __post_init__(self) -> None:
        if self.index_type not in (None, "vector", "halfvec"):
            raise ValueError(f"index type must be 'vector' or 'halfvec', got {self.index_type!r}")
        if self.index_type == "vector" and self.dims > 2000:
            raise ValueError(
                f"HNSW indexes `vector` up to 2,000 dimensions ({self.dims} asked); use halfvec"
            )

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


@dataclass(frozen=True)
class IndexBuild:
    """How an HNSW index is built in one pass (after a bulk load, or to repair a missing one).

    maintenance_work_mem is sized to what the graph needs (rows x vector size, plus
    overhead), between 64 MB and this cap: a parallel build reserves all of it as shared
    memory, so asking for 1 GB to index a few thousand rows would only waste RAM.
    """

    maintenance_work_mem_mb: int = 1024
    parallel_workers: int = 1

    def work_mem_mb(self, rows: int, dims: int, vector_type: str) -> int:
        per_row = (4 if vector_type == "vector" else 2) * dims + 1024  # vector + graph links
        need = math.ceil(rows * per_row * 1.3 / 2**20) + 16
        return max(64, min(self.maintenance_work_mem_mb, need))


@dataclass
class BatchReport:
    """Per-batch counts that the asset checks and the run metadata use."""

    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    failed_without_reason: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


def _as_vector(values: Sequence[float] | Vector) -> Vector:
    if isinstance(values, Vector):
        return values
    return Vector(values if isinstance(values, list) else list(values))


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
    def transaction(self, *, durable: bool = True) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection.

        durable=False skips waiting for the WAL flush at commit (synchronous_commit off for
        this transaction: ~0.3 ms instead of ~3 ms here). It is used for staging writes only
        (parse cache, buffers, intermediate states and their events): a crash of the
        database may then lose the last fraction of a second of them, atomically and in
        order, which only means redoing idempotent work. What users are told is final (a
        commit to search, a failure, a deletion) stays durable.
        """
        with self.pool.connection() as conn, conn.transaction():
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
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

    @staticmethod
    def _events(
        conn: psycopg.Connection,
        events: Sequence[tuple[uuid.UUID, str, str, dict[str, Any] | None]],
    ) -> None:
        """Several events in one statement, inserted (and numbered) in the order given."""
        if not events:
            return
        conn.execute(
            f"""INSERT INTO {S}.events (job_id, stage, event_type, payload)
                SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::jsonb[])""",
            (
                [e[0] for e in events],
                [e[1] for e in events],
                [e[2] for e in events],
                [json.dumps(e[3] or {}, default=str) for e in events],
            ),
        )

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

    def touch_source_modified(self, touched: dict[uuid.UUID, datetime]) -> None:
        """Same content, new mtime: remember it so the files are not hashed again."""
        if not touched:
            return
        with self.transaction(durable=False) as conn:
            conn.execute(
                f"""UPDATE {S}.upload_jobs j SET source_modified_at = u.modified
                    FROM unnest(%s::uuid[], %s::timestamptz[]) AS u(job_id, modified)
                    WHERE j.job_id = u.job_id""",
                (list(touched), list(touched.values())),
            )

    def register_versions(self, versions: Sequence[NewVersion], batch_key: str) -> list[uuid.UUID]:
        """Register file versions as jobs of one batch, in one statement; returns the job ids
        (re)queued. A version seen before (same document and content) is re-queued only
        when it is not already waiting in another batch."""
        if not versions:
            return []
        with self.transaction(durable=False) as conn:
            rows = conn.execute(
                f"""
                INSERT INTO {S}.upload_jobs AS j (job_id, document_id, storage_key,
                    content_sha256, size_bytes, media_type, source_modified_at, state, batch_key)
                SELECT u.*, 'uploaded', %s FROM unnest(%s::uuid[], %s::uuid[], %s::text[],
                    %s::text[], %s::bigint[], %s::text[], %s::timestamptz[]) AS u
                ON CONFLICT (job_id) DO UPDATE SET
                    state = 'uploaded', batch_key = EXCLUDED.batch_key,
                    storage_key = EXCLUDED.storage_key, size_bytes = EXCLUDED.size_bytes,
                    media_type = EXCLUDED.media_type,
                    source_modified_at = EXCLUDED.source_modified_at,
                    attempts = 0, failed_stage = NULL, failure_code = NULL,
                    failure_reason = NULL, retryable = NULL, next_attempt_at = NULL,
                    registered_at = now(), updated_at = now(), completed_at = NULL
                WHERE j.state IN ('deleted', 'superseded', 'failed', 'completed')
                RETURNING j.job_id, (xmax = 0) AS inserted
                """,
                (
                    batch_key,
                    [v.job_id for v in versions],
                    [v.document_id for v in versions],
                    [v.storage_key for v in versions],
                    [v.content_sha256 for v in versions],
                    [v.size_bytes for v in versions],
                    [v.media_type for v in versions],
                    [v.source_modified_at for v in versions],
                ),
            ).fetchall()
            inserted = dict(rows)  # job id -> new row (else re-registered); absent: in flight
            queued = [v for v in versions if v.job_id in inserted]
            self._events(
                conn,
                [
                    (
                        v.job_id,
                        "intake",
                        "registered" if inserted[v.job_id] else "re-registered",
                        {
                            "storage_key": v.storage_key,
                            "size_bytes": v.size_bytes,
                            "batch": batch_key,
                        },
                    )
                    for v in queued
                ],
            )
        return [v.job_id for v in queued]

    def mark_deleted(self, document_ids: Sequence[uuid.UUID], reason: str) -> int:
        """Files gone from storage: remove their chunks from search and end their jobs
        `deleted`, in one transaction; returns the searchable chunks removed."""
        if not document_ids:
            return 0
        with self.transaction() as conn:
            jobs = conn.execute(
                f"SELECT job_id, document_id FROM {S}.upload_jobs WHERE document_id = ANY(%s)"
                " AND state NOT IN ('deleted', 'superseded') FOR UPDATE",
                (list(document_ids),),
            ).fetchall()
            removed = Counter(
                r[0]
                for r in conn.execute(
                    f"DELETE FROM {S}.document_chunks WHERE document_id = ANY(%s)"
                    " RETURNING document_id",
                    (list(document_ids),),
                )
            )
            job_ids = [job_id for job_id, _ in jobs]
            conn.execute(
                f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = ANY(%s)", (job_ids,)
            )
            conn.execute(
                f"UPDATE {S}.upload_jobs SET state = 'deleted', updated_at = now()"
                " WHERE job_id = ANY(%s)",
                (job_ids,),
            )
            self._events(
                conn,
                [
                    (
                        job_id,
                        "intake",
                        "deleted",
                        {"reason": reason, "chunks_removed": removed[doc]},
                    )
                    for job_id, doc in jobs
                ],
            )
            return sum(removed.values())

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

    def set_states(
        self,
        job_ids: Sequence[uuid.UUID],
        state: str,
        stage: str,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        expected: Sequence[str] | None = None,
        durable: bool = False,
    ) -> set[uuid.UUID]:
        """Move jobs to `state` (only from `expected` states when given) and log an event for
        each moved, in one transaction; returns the ids moved. `durable` as in transaction()."""
        if not job_ids:
            return set()
        with self.transaction(durable=durable) as conn:
            query = (
                f"UPDATE {S}.upload_jobs SET state = %s, updated_at = now() WHERE job_id = ANY(%s)"
            )
            params: list[Any] = [state, list(job_ids)]
            if expected is not None:
                query += " AND state = ANY(%s)"
                params.append(list(expected))
            moved = {r[0] for r in conn.execute(query + " RETURNING job_id", params)}
            self._events(conn, [(j, stage, event_type, payload) for j in job_ids if j in moved])
        return moved

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
                f"SELECT attempts, state FROM {S}.upload_jobs WHERE job_id = %s FOR UPDATE",
                (job_id,),
            ).fetchone()
            if row is not None and row[1] in ("deleted", "superseded"):
                # The version was dropped while a stage worked on it: it stays dropped.
                return {"reason": reason, "code": code, "retryable": False, "skipped": row[1]}
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
        with self.transaction() as conn:
            moved = {
                r[0]
                for r in conn.execute(
                    f"""UPDATE {S}.upload_jobs SET state = 'uploaded', batch_key = %s,
                        next_attempt_at = NULL, updated_at = now()
                        WHERE job_id = ANY(%s) AND state = 'failed' RETURNING job_id""",
                    (batch_key, list(job_ids)),
                )
            }
            queued = [j for j in job_ids if j in moved]
            payload = {"batch": batch_key, "reason": reason}
            self._events(conn, [(j, "intake", "retry", payload) for j in queued])
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
        """Re-batch in-flight jobs (keeping their state: stages resume where they stopped).
        A job settled since it was found stale is not moved and gets no event."""
        with self.transaction() as conn:
            moved = {
                r[0]
                for r in conn.execute(
                    f"""UPDATE {S}.upload_jobs SET batch_key = %s, updated_at = now()
                        WHERE job_id = ANY(%s) AND state = ANY(%s) RETURNING job_id""",
                    (batch_key, list(job_ids), list(IN_FLIGHT_STATES)),
                )
            }
            payload = {"batch": batch_key, "reason": reason}
            self._events(conn, [(j, "intake", "rebatched", payload) for j in job_ids if j in moved])
        return len(moved)

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
    ) -> bool:
        """Cache the parse and mark the job parsed; False if the job left parsing meanwhile
        (deleted or superseded while the parser ran): it stays as it is."""
        with self.transaction(durable=False) as conn:
            conn.execute(
                f"""INSERT INTO {S}.parse_cache (content_sha256, parser_profile, markdown,
                    page_count, parse_job_id) VALUES (%s, %s, %s, %s, %s)
                    ON CONFLICT DO NOTHING""",
                (job.content_sha256, profile, markdown, page_count, parse_job_id),
            )
            updated = conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'parsed', parse_job_id = %s,
                    page_count = %s, updated_at = now()
                    WHERE job_id = %s AND state IN ('uploaded', 'parsing')""",
                (parse_job_id, page_count, job.job_id),
            ).rowcount
            if not updated:
                return False
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
            return True

    def parsed_markdowns(self, shas: Iterable[str], profile: str) -> dict[str, str]:
        """The parsed markdown of these content hashes, in one query."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT content_sha256, markdown FROM {S}.parse_cache"
                " WHERE parser_profile = %s AND content_sha256 = ANY(%s)",
                (profile, list(set(shas))),
            ).fetchall()
        return dict(rows)

    # --- chunk ----------------------------------------------------------------------

    def save_chunks(
        self, items: Sequence[tuple[JobRow, Sequence[ChunkRow], int]]
    ) -> set[uuid.UUID]:
        """Replace several jobs' staged chunks (idempotent) and mark them chunked, in one transaction and a handful of statements (one
        COPY for every chunk); returns the ids of the jobs chunked. A job no longer parsed
        (deleted or superseded meanwhile) is left as it is, with nothing staged."""
        if not items:
            return set()
        with self.transaction(durable=False) as conn:
            updated = {
                r[0]
                for r in conn.execute(
                    f"""UPDATE {S}.upload_jobs j SET state = 'chunked', chunk_count = u.chunks,
                        token_count = u.tokens, updated_at = now()
                        FROM unnest(%s::uuid[], %s::int[], %s::int[]) AS u(job_id, chunks, tokens)
                        WHERE j.job_id = u.job_id AND j.state = 'parsed' RETURNING j.job_id""",
                    (
                        [job.job_id for job, _, _ in items],
                        [len(chunks) for _, chunks, _ in items],
                        [tokens for _, _, tokens in items],
                    ),
                )
            }
            if not updated:
                return updated
            conn.execute(
                f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = ANY(%s)", (list(updated),)
            )
            with conn.cursor().copy(
                f"COPY {S}.document_chunk_buffer (chunk_id, job_id, chunk_index, content,"
                " text_sha256, token_estimate, heading_path, char_start, char_end) FROM STDIN"
            ) as copy:
                for job, chunks, _ in items:
                    if job.job_id not in updated:
                        continue
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
            self._events(
                conn,
                [
                    (job.job_id, "chunk", "chunked", {"chunks": len(chunks), "tokens": tokens})
                    for job, chunks, tokens in items
                    if job.job_id in updated
                ],
            )
        return updated

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

    def cache_embeddings(self, vectors: dict[str, Sequence[float]], space: VectorSpace) -> None:
        if not vectors:
            return
        with self.transaction(durable=False) as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _new_embeddings (text_sha256 text, embedding vector)"
                " ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY _new_embeddings (text_sha256, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "vector"])
                for sha, vec in vectors.items():
                    copy.write_row((sha, _as_vector(vec)))
            conn.execute(
                f"""INSERT INTO {S}.embedding_cache (embedding_model, dims, text_sha256, embedding)
                    SELECT %s, %s, text_sha256, embedding FROM _new_embeddings
                    ON CONFLICT DO NOTHING""",
                (space.model, space.dims),
            )

    def cached_text_shas(self, shas: Iterable[str], space: VectorSpace) -> set[str]:
        """Which of these texts already have a cached vector in this space (no vectors read)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT text_sha256 FROM {S}.embedding_cache"
                " WHERE embedding_model = %s AND dims = %s AND text_sha256 = ANY(%s)",
                (space.model, space.dims, list(set(shas))),
            ).fetchall()
        return {r[0] for r in rows}

    def stage_cached_vectors(
        self, rows: Sequence[tuple[uuid.UUID, uuid.UUID, str]], space: VectorSpace
    ) -> int:
        """Stage (chunk_id, job_id, text_sha256) rows for commit with the text's vector from
        the embedding cache, replacing earlier attempts; the vectors never leave the
        database. Returns the rows staged (a chunk whose job was deleted meanwhile, or whose
        text has no cached vector, gets none)."""
        if not rows:
            return 0
        with self.transaction(durable=False) as conn:
            # Lock the staged chunks; those of a job deleted meanwhile are gone: skip them.
            present = {
                r[0]
                for r in conn.execute(
                    f"SELECT chunk_id FROM {S}.document_chunk_buffer"
                    " WHERE chunk_id = ANY(%s) FOR SHARE",
                    ([r[0] for r in rows],),
                )
            }
            rows = [r for r in rows if r[0] in present]
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            conn.execute(f"DELETE FROM {S}.document_vector_buffer WHERE chunk_id = ANY(%s)", (ids,))
            return conn.execute(
                f"""INSERT INTO {S}.document_vector_buffer
                        (chunk_id, job_id, embedding_model, dims, embedding)
                    SELECT u.chunk_id, u.job_id, e.embedding_model, e.dims, e.embedding
                    FROM unnest(%s::uuid[], %s::uuid[], %s::text[]) AS u(chunk_id, job_id, sha)
                    JOIN {S}.embedding_cache e ON e.embedding_model = %s AND e.dims = %s
                        AND e.text_sha256 = u.sha""",
                (ids, [r[1] for r in rows], [r[2] for r in rows], space.model, space.dims),
            ).rowcount

    def mark_embedded(
        self, job_ids: Sequence[uuid.UUID], payload: dict[str, Any]
    ) -> set[uuid.UUID]:
        """chunked -> embedded for the jobs whose every staged chunk has its staged vector, in
        one transaction; returns the ids moved."""
        if not job_ids:
            return set()
        with self.transaction(durable=False) as conn:
            updated = {
                r[0]
                for r in conn.execute(
                    f"""UPDATE {S}.upload_jobs j SET state = 'embedded', updated_at = now()
                        WHERE j.job_id = ANY(%s) AND j.state = 'chunked' AND NOT EXISTS (
                            SELECT 1 FROM {S}.document_chunk_buffer c
                            LEFT JOIN {S}.document_vector_buffer v ON v.chunk_id = c.chunk_id
                            WHERE c.job_id = j.job_id AND v.chunk_id IS NULL)
                        RETURNING j.job_id""",
                    (list(job_ids),),
                )
            }
            self._events(conn, [(j, "embed", "embedded", payload) for j in job_ids if j in updated])
        return updated

    # --- commit ---------------------------------------------------------------------

    def commit_document(self, job: JobRow, space: VectorSpace) -> dict[str, Any]:
        """Swap the document's searchable chunks for this version's, atomically.

        Locks the document's job rows so two commits of one document serialize; a
        version older than the newest registered one is superseded instead of committed.
        """
        return self.commit_documents([job], space)[job.job_id]

    def commit_documents(
        self, jobs: Sequence[JobRow], space: VectorSpace
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """commit_document for several documents in ONE transaction and a fixed number of
        statements: each document's old chunks are still swapped for its new ones at once
        (the whole group becomes visible together). Raises if any statement fails; the
        caller then commits the documents one by one, so a bad one fails alone.

        Returns job id -> {"committed": True, "chunks", "replaced"} or
        {"committed": False, "reason"}.
        """
        if not jobs:
            return {}
        outcomes: dict[uuid.UUID, dict[str, Any]] = {}
        with self.transaction() as conn:
            rows = conn.execute(
                f"""SELECT job_id, document_id, state, registered_at FROM {S}.upload_jobs
                    WHERE document_id = ANY(%s) ORDER BY document_id, registered_at FOR UPDATE""",
                (list({j.document_id for j in jobs}),),
            ).fetchall()
            versions: dict[uuid.UUID, list[tuple[Any, ...]]] = defaultdict(list)
            for r in rows:
                versions[r[1]].append(r)
            to_commit: list[JobRow] = []
            dropped: dict[uuid.UUID, uuid.UUID] = {}  # superseded here -> by
            for job in jobs:
                mine = next((r for r in versions[job.document_id] if r[0] == job.job_id), None)
                if mine is None or mine[2] != "embedded":
                    state = mine[2] if mine else "missing"
                    outcomes[job.job_id] = {"committed": False, "reason": f"state is {state}"}
                    continue
                newer = [
                    r
                    for r in versions[job.document_id]
                    if r[3] > mine[3] and r[2] not in ("deleted", "superseded")
                ]
                if newer:
                    dropped[job.job_id] = newer[-1][0]
                    outcomes[job.job_id] = {"committed": False, "reason": "a newer version exists"}
                    continue
                to_commit.append(job)
            if dropped:
                ids = list(dropped)
                conn.execute(
                    f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = ANY(%s)", (ids,)
                )
                conn.execute(
                    f"UPDATE {S}.upload_jobs SET state = 'superseded', updated_at = now()"
                    " WHERE job_id = ANY(%s)",
                    (ids,),
                )
                self._events(
                    conn,
                    [(j, "commit", "superseded", {"by": str(by)}) for j, by in dropped.items()],
                )
            if not to_commit:
                return outcomes
            job_ids = [j.job_id for j in to_commit]
            removed = Counter(
                r[0]
                for r in conn.execute(
                    f"""DELETE FROM {S}.document_chunks WHERE document_id = ANY(%s)
                        AND embedding_model = %s AND dims = %s RETURNING document_id""",
                    ([j.document_id for j in to_commit], space.model, space.dims),
                )
            )
            inserted = Counter(
                r[0]
                for r in conn.execute(
                    f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id,
                            storage_key, content_sha256, chunk_index, content, heading_path,
                            token_estimate, embedding_model, dims, embedding)
                        SELECT c.chunk_id, j.document_id, c.job_id, j.storage_key,
                            j.content_sha256, c.chunk_index, c.content, c.heading_path,
                            c.token_estimate, v.embedding_model, v.dims, v.embedding
                        FROM {S}.document_chunk_buffer c
                        JOIN {S}.document_vector_buffer v ON v.chunk_id = c.chunk_id
                        JOIN {S}.upload_jobs j ON j.job_id = c.job_id
                        WHERE c.job_id = ANY(%s) AND v.embedding_model = %s AND v.dims = %s
                        RETURNING job_id""",
                    (job_ids, space.model, space.dims),
                )
            )
            conn.execute(
                f"DELETE FROM {S}.document_chunk_buffer WHERE job_id = ANY(%s)", (job_ids,)
            )
            conn.execute(
                f"""UPDATE {S}.upload_jobs SET state = 'completed', completed_at = now(),
                    updated_at = now(), failed_stage = NULL, failure_reason = NULL,
                    failure_code = NULL, retryable = NULL WHERE job_id = ANY(%s)""",
                (job_ids,),
            )
            # Older versions of the committed documents are superseded by them.
            older = [
                (r[0], job.job_id)
                for job in to_commit
                for r in versions[job.document_id]
                if r[0] != job.job_id
                and r[2] not in ("deleted", "superseded")
                and r[0] not in dropped
            ]
            if older:
                conn.execute(
                    f"UPDATE {S}.upload_jobs SET state = 'superseded', updated_at = now()"
                    " WHERE job_id = ANY(%s)",
                    ([old for old, _ in older],),
                )
            events: list[tuple[uuid.UUID, str, str, dict[str, Any] | None]] = [
                (old, "commit", "superseded", {"by": str(by)}) for old, by in older
            ]
            for job in to_commit:
                payload = {"chunks": inserted[job.job_id], "replaced": removed[job.document_id]}
                events.append((job.job_id, "commit", "completed", payload))
                outcomes[job.job_id] = {"committed": True, **payload}
            self._events(conn, events)
        return outcomes

    # --- vector spaces: the HNSW index and bulk loads -------------------------------
    #
    # Inserting rows one by one into an HNSW graph costs several times more than building
    # the graph once after loading (DESIGN.md section 6). A commit that brings many rows
    # compared with what a space's index holds drops the index (index_state 'rebuilding'),
    # commits without it, and the last batch in flight builds it again in one pass. Search
    # stays correct meanwhile: without the index it scans exactly, which is slower.

    @staticmethod
    def _space_row(
        conn: psycopg.Connection, space: VectorSpace, *, lock: bool = False
    ) -> tuple[str, str, str] | None:
        """(index_name, vector_type, index_state) of a registered space."""
        return conn.execute(
            f"SELECT index_name, vector_type, index_state FROM {S}.vector_spaces"
            " WHERE embedding_model = %s AND dims = %s" + (" FOR UPDATE" if lock else ""),
            (space.model, space.dims),
        ).fetchone()

    @staticmethod
    def _lock_index(conn: psycopg.Connection, index_name: str) -> None:
        """Serialize index changes of one space across processes (until the transaction ends)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"docpipe:index:{index_name}",))

    @staticmethod
    def _index_exists(conn: psycopg.Connection, index_name: str) -> bool:
        return conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
            (S, index_name),
        ).fetchone()[0]

    def _space_rows(self, conn: psycopg.Connection, space: VectorSpace) -> int:
        return conn.execute(
            f"SELECT count(*) FROM {S}.document_chunks WHERE embedding_model = %s AND dims = %s",
            (space.model, space.dims),
        ).fetchone()[0]

    def _indexed_rows(
        self, conn: psycopg.Connection, space: VectorSpace, index_name: str | None
    ) -> int:
        """Rows in the space, for choosing a bulk load: the index's own count when it is
        large (pg_class.reltuples, set by CREATE INDEX and refreshed by (auto)vacuum; it may
        lag recent inserts by autovacuum's insert threshold), so that a small commit into a
        big space does not scan the whole table; an exact count otherwise."""
        if index_name:
            row = conn.execute(
                "SELECT reltuples FROM pg_class"
                " WHERE oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (S, index_name),
            ).fetchone()
            if row and row[0] >= 50_000:
                return int(row[0])
        return self._space_rows(conn, space)

    def _create_index(
        self,
        conn: psycopg.Connection,
        space: VectorSpace,
        index_name: str,
        vector_type: str,
        build: IndexBuild | None,
    ) -> dict[str, Any]:
        """CREATE INDEX (in the caller's transaction) with memory sized to the rows."""
        rows = self._space_rows(conn, space)
        info: dict[str, Any] = {"rows": rows}
        if build is not None:
            mem = build.work_mem_mb(rows, space.dims, vector_type)
            conn.execute(
                sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{mem}MB"))
            )
            conn.execute(
                sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(
                    sql.Literal(max(0, build.parallel_workers))
                )
            )
            if build.parallel_workers > 0:
                # The vectors live in TOAST, so the heap the planner sizes workers by is
                # small: without this a build of tens of thousands of rows gets no worker.
                conn.execute("SET LOCAL min_parallel_table_scan_size = 0")
            info.update(maintenance_work_mem_mb=mem, parallel_workers=build.parallel_workers)
        ops = "vector_cosine_ops" if vector_type == "vector" else "halfvec_cosine_ops"
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {}.document_chunks USING hnsw ((embedding::{}({})) {})"
                " WHERE embedding_model = {} AND dims = {}"
            ).format(
                sql.Identifier(index_name),
                sql.Identifier(S),
                sql.SQL(vector_type),
                sql.Literal(space.dims),
                sql.SQL(ops),
                sql.Literal(space.model),
                sql.Literal(space.dims),
            )
        )
        info["seconds"] = round(time.perf_counter() - started, 3)
        return info

    def ensure_vector_space(self, space: VectorSpace, build: IndexBuild | None = None) -> None:
        """Register a (model, dims) space and create its partial HNSW index on first use;
        rebuild an index that should exist but does not (dropped for a bulk load by a run
        that crashed, or by hand), or whose type (vector/halfvec) the configuration changed.
        A space in the middle of a bulk load ('rebuilding') is left to finish_bulk_load."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            if row is not None:
                name, vector_type, state = row
                if state in ("off", "rebuilding"):
                    return
                if vector_type == space.vector_type and self._index_exists(conn, name):
                    return
        with self.transaction() as conn:
            self._lock_index(conn, row[0] if row else space.index_name)
            row = self._space_row(conn, space, lock=True)
            if row is None:
                self._create_index(conn, space, space.index_name, space.vector_type, build)
                conn.execute(
                    f"""INSERT INTO {S}.vector_spaces (embedding_model, dims, vector_type,
                        index_name, index_built_at) VALUES (%s, %s, %s, %s, now())
                        ON CONFLICT DO NOTHING""",
                    (space.model, space.dims, space.vector_type, space.index_name),
                )
                return
            name, vector_type, state = row
            if state != "ready":
                return
            if vector_type != space.vector_type:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(S, name)))
            elif self._index_exists(conn, name):
                return
            self._create_index(conn, space, name, space.vector_type, build)
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET vector_type = %s, index_built_at = now()
                    WHERE embedding_model = %s AND dims = %s""",
                (space.vector_type, space.model, space.dims),
            )

    def bulk_load_plan(
        self,
        space: VectorSpace,
        job_ids: Sequence[uuid.UUID],
        batch_key: str | None,
        in_flight_within: timedelta,
    ) -> dict[str, Any]:
        """What a commit weighs to choose between inserting into the index and a bulk load:
        the space's index state and rows, the rows these jobs bring, and an estimate of the
        rows other batches in flight will bring (their chunk counts, else ~1 per 1.5 kB)."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            existing = self._indexed_rows(conn, space, row[0] if row else None)
            incoming, pending = conn.execute(
                f"""SELECT
                      coalesce(sum(chunk_count) FILTER (WHERE job_id = ANY(%s)), 0),
                      coalesce(sum(coalesce(chunk_count, ceil(size_bytes / 1500.0)::int))
                          FILTER (WHERE NOT job_id = ANY(%s) AND state = ANY(%s)
                                  AND batch_key IS DISTINCT FROM %s
                                  AND updated_at > now() - %s), 0)
                    FROM {S}.upload_jobs
                    WHERE job_id = ANY(%s) OR (state = ANY(%s) AND updated_at > now() - %s)""",
                (
                    list(job_ids),
                    list(job_ids),
                    list(IN_FLIGHT_STATES),
                    batch_key,
                    in_flight_within,
                    list(job_ids),
                    list(IN_FLIGHT_STATES),
                    in_flight_within,
                ),
            ).fetchone()
        return {
            "index_state": row[2] if row else "missing",
            "existing_rows": int(existing),
            "incoming_rows": int(incoming),
            "pending_rows": int(pending),
        }

    def begin_bulk_load(self, space: VectorSpace) -> bool:
        """Drop the space's HNSW index for a bulk load (index_state 'rebuilding'); False if
        the space is not 'ready' (already loading in bulk, or indexed 'off')."""
        with self.transaction() as conn:
            row = self._space_row(conn, space)
            if row is None or row[2] != "ready":
                return False
            self._lock_index(conn, row[0])
            row = self._space_row(conn, space, lock=True)
            if row is None or row[2] != "ready":
                return False
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(S, row[0])))
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET index_state = 'rebuilding'
                    WHERE embedding_model = %s AND dims = %s""",
                (space.model, space.dims),
            )
        return True

    def finish_bulk_load(
        self, space: VectorSpace, build: IndexBuild | None, in_flight_within: timedelta
    ) -> dict[str, Any] | None:
        """Build the index of a space left 'rebuilding' once no job is in flight any more
        (in-flight jobs not updated within `in_flight_within` are taken as dead and do not
        hold the index back). None when the space needs nothing; {"deferred": True} while
        other batches still run; otherwise what the build took."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            if row is None or row[2] != "rebuilding":
                return None
            busy = conn.execute(
                f"""SELECT EXISTS (SELECT 1 FROM {S}.upload_jobs WHERE state = ANY(%s)
                    AND updated_at > now() - %s)""",
                (list(IN_FLIGHT_STATES), in_flight_within),
            ).fetchone()[0]
            if busy:
                return {"deferred": True}
        with self.transaction() as conn:
            self._lock_index(conn, row[0])
            row = self._space_row(conn, space, lock=True)
            if row is None or row[2] != "rebuilding":
                return None
            info = self._create_index(conn, space, row[0], space.vector_type, build)
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET index_state = 'ready', vector_type = %s,
                    index_built_at = now() WHERE embedding_model = %s AND dims = %s""",
                (space.vector_type, space.model, space.dims),
            )
        return info

    # --- search ---------------------------------------------------------------------

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
