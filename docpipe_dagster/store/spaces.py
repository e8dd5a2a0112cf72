"""Vector spaces: coverage, the active space, backfill of a new space, activation, drop.

A changed embedding model or dimension commits new documents into a new space while
search keeps reading the active one. `backfill()` embeds, for every completed document the
new space lacks, the chunks the active space already holds (same chunk ids, text, headings,
offsets); once the new space covers every completed document `activate_if_complete()`
makes it active in one transaction and records a `space_events` row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from docpipe_dagster.store.schema import S, VectorSpace
from docpipe_dagster.store.search import search_space


@dataclass(frozen=True)
class SpaceCoverage:
    """A space and how much of the corpus it holds (what `docpipe spaces` lists)."""

    space: VectorSpace
    index_state: str
    vectors: int
    documents: int  # completed documents whose current version this space holds
    completed: int  # completed documents in all

    @property
    def model(self) -> str:
        return self.space.model

    @property
    def dims(self) -> int:
        return self.space.dims

    @property
    def vector_type(self) -> str:
        return self.space.vector_type

    @property
    def is_active(self) -> bool:
        return self.space.is_active

    @property
    def missing(self) -> int:
        return self.completed - self.documents

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "embedding_model": self.model,
            "dims": self.dims,
            "vector_type": self.vector_type,
            "index_state": self.index_state,
            "active": self.is_active,
            "vectors": self.vectors,
            "documents": self.documents,
            "completed_documents": self.completed,
            "coverage": round(self.documents / self.completed, 4) if self.completed else 1.0,
        }

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> SpaceCoverage:
        return cls(VectorSpace(r[0], r[1], r[2], bool(r[4])), r[3], int(r[5]), int(r[6]), int(r[7]))


_COVERAGE = f"""
WITH done AS (
    SELECT job_id, coalesce(chunk_count, 1) = 0 AS empty
    FROM {S}.upload_jobs WHERE state = 'completed'
), held AS (
    SELECT embedding_model, dims, job_id, count(*) AS n
    FROM {S}.document_chunks GROUP BY embedding_model, dims, job_id
)
SELECT s.embedding_model, s.dims, s.vector_type, s.index_state, s.is_active,
    coalesce((SELECT sum(h.n) FROM held h
              WHERE h.embedding_model = s.embedding_model AND h.dims = s.dims), 0)::bigint,
    (SELECT count(*) FROM done d WHERE d.empty OR EXISTS (
        SELECT 1 FROM held h WHERE h.job_id = d.job_id
        AND h.embedding_model = s.embedding_model AND h.dims = s.dims)),
    (SELECT count(*) FROM done)
FROM {S}.vector_spaces s
"""


def list_spaces(conn: psycopg.Connection) -> list[SpaceCoverage]:
    rows = conn.execute(_COVERAGE + " ORDER BY s.created_at, s.embedding_model, s.dims").fetchall()
    return [SpaceCoverage.from_row(r) for r in rows]


def coverage(conn: psycopg.Connection, model: str, dims: int) -> SpaceCoverage | None:
    row = conn.execute(
        _COVERAGE + " WHERE s.embedding_model = %s AND s.dims = %s", (model, dims)
    ).fetchone()
    return None if row is None else SpaceCoverage.from_row(row)


def find_space(conn: psycopg.Connection, model: str, dims: int | None) -> VectorSpace | None:
    """The registered space of `model` (with `dims`, or any: the active one first)."""
    row = conn.execute(
        f"""SELECT embedding_model, dims, vector_type, is_active FROM {S}.vector_spaces
            WHERE embedding_model = %s AND (%s::int IS NULL OR dims = %s)
            ORDER BY is_active DESC, created_at LIMIT 1""",
        (model, dims, dims),
    ).fetchone()
    return None if row is None else VectorSpace(row[0], int(row[1]), row[2], bool(row[3]))


def any_completed(conn: psycopg.Connection) -> bool:
    """Whether any document has completed (a first space is worth registering)."""
    return bool(
        conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {S}.upload_jobs WHERE state = 'completed')"
        ).fetchone()[0]
    )


def activate_if_complete(conn: psycopg.Connection, model: str, dims: int) -> bool:
    """Make (model, dims) the active space if it covers every completed document; True when
    it is active afterwards. One transaction: search sees the old space or the new one."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('docpipe:active-space'))")
        rows = conn.execute(
            f"SELECT embedding_model, dims, is_active FROM {S}.vector_spaces FOR UPDATE"
        ).fetchall()
        target = next((r for r in rows if r[0] == model and r[1] == dims), None)
        if target is None:
            return False
        if target[2]:
            return True
        cov = coverage(conn, model, dims)
        if cov is None or not cov.complete or (cov.vectors == 0 and cov.completed > 0):
            return False
        previous = next(((r[0], r[1]) for r in rows if r[2]), None)
        conn.execute(f"UPDATE {S}.vector_spaces SET is_active = false WHERE is_active")
        conn.execute(
            f"""UPDATE {S}.vector_spaces SET is_active = true, activated_at = now()
                WHERE embedding_model = %s AND dims = %s""",
            (model, dims),
        )
        conn.execute(
            f"""INSERT INTO {S}.space_events (embedding_model, dims, event_type, payload)
                VALUES (%s, %s, 'activated', jsonb_build_object('previous', %s::text,
                'documents', %s, 'vectors', %s))""",
            (
                model,
                dims,
                f"{previous[0]}:{previous[1]}" if previous else None,
                cov.documents,
                cov.vectors,
            ),
        )
    return True


class SpaceError(ValueError):
    """A space operation refused (unknown space, dropping the active one)."""


def drop_space(conn: psycopg.Connection, model: str, dims: int | None) -> VectorSpace:
    """Remove a space that is not active: its vectors, its index and its registration."""
    with conn.transaction():
        rows = conn.execute(
            f"""SELECT embedding_model, dims, index_name, is_active FROM {S}.vector_spaces
                WHERE embedding_model = %s AND (%s::int IS NULL OR dims = %s) FOR UPDATE""",
            (model, dims, dims),
        ).fetchall()
        if not rows:
            raise SpaceError(f"no vector space {model}:{dims or '*'}")
        if len(rows) > 1:
            options = ", ".join(f"{r[0]}:{r[1]}" for r in rows)
            raise SpaceError(f"{model} has several spaces ({options}): name MODEL:DIMS")
        name, index, active = rows[0][:2], rows[0][2], rows[0][3]
        current = search_space(conn)
        if active or (current and (current.model, current.dims) == tuple(name)):
            raise SpaceError(
                f"{name[0]}:{name[1]} is the space search reads; activate another first"
            )
        conn.execute(
            f"DELETE FROM {S}.document_chunks WHERE embedding_model = %s AND dims = %s", name
        )
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(S, index)))
        conn.execute(
            f"DELETE FROM {S}.vector_spaces WHERE embedding_model = %s AND dims = %s", name
        )
        conn.execute(
            f"""INSERT INTO {S}.space_events (embedding_model, dims, event_type)
                VALUES (%s, %s, 'dropped')""",
            name,
        )
    return VectorSpace(name[0], name[1])


Embed = Callable[[Sequence[str]], Awaitable[list[Sequence[float]]]]


async def backfill(
    conn: psycopg.Connection, target: VectorSpace, embed: Embed, *, batch_rows: int = 512
) -> dict[str, int]:
    """Embed into `target` the chunks of every completed document it lacks, copied from a
    space that holds them (the active one first). Each document is written in one
    transaction. Returns {"documents", "chunks"} written."""
    jobs = conn.execute(
        f"""SELECT j.job_id,
                (SELECT s.embedding_model || ':' || s.dims FROM {S}.vector_spaces s
                 WHERE EXISTS (SELECT 1 FROM {S}.document_chunks c WHERE c.job_id = j.job_id
                     AND c.embedding_model = s.embedding_model AND c.dims = s.dims)
                 ORDER BY s.is_active DESC, s.created_at LIMIT 1)
            FROM {S}.upload_jobs j
            WHERE j.state = 'completed' AND NOT EXISTS (
                SELECT 1 FROM {S}.document_chunks c WHERE c.job_id = j.job_id
                AND c.embedding_model = %s AND c.dims = %s)
            ORDER BY j.registered_at""",
        (target.model, target.dims),
    ).fetchall()
    written = {"documents": 0, "chunks": 0}
    for job_id, source in jobs:
        if source is None:
            continue  # a completed document without chunks anywhere (empty): nothing to copy
        model, _, dims = source.rpartition(":")
        rows = conn.execute(
            f"""SELECT chunk_id, content FROM {S}.document_chunks
                WHERE job_id = %s AND embedding_model = %s AND dims = %s ORDER BY chunk_index""",
            (job_id, model, int(dims)),
        ).fetchall()
        vectors: list[Sequence[float]] = []
        for start in range(0, len(rows), batch_rows):
            vectors += await embed([r[1] for r in rows[start : start + batch_rows]])
        if len(vectors) != len(rows) or any(len(v) != target.dims for v in vectors):
            raise SpaceError(
                f"the embedder returned vectors that do not fit {target.model}:{target.dims}"
            )
        with conn.transaction():
            # A commit of a newer version may have raced us: copy only a still-completed job.
            state = conn.execute(
                f"SELECT state FROM {S}.upload_jobs WHERE job_id = %s FOR SHARE", (job_id,)
            ).fetchone()
            if state is None or state[0] != "completed":
                continue
            with conn.cursor() as cur:
                cur.executemany(
                    f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id,
                            storage_key, content_sha256, chunk_index, content, heading_path,
                            token_estimate, embedding_model, dims, embedding, char_start,
                            char_end, page_start, page_end, committed_at)
                        SELECT chunk_id, document_id, job_id, storage_key, content_sha256,
                            chunk_index, content, heading_path, token_estimate, %s, %s,
                            %s::vector, char_start, char_end, page_start, page_end,
                            committed_at
                        FROM {S}.document_chunks
                        WHERE chunk_id = %s AND embedding_model = %s AND dims = %s
                        ON CONFLICT DO NOTHING""",
                    [
                        (target.model, target.dims, _vec(v), r[0], model, int(dims))
                        for r, v in zip(rows, vectors, strict=True)
                    ],
                )
        written["documents"] += 1
        written["chunks"] += len(rows)
    return written


def _vec(values: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"
