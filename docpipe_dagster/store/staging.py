"""Staging and caches: the parse cache, the chunk and vector buffers, the embedding cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from docpipe_dagster.store.base import StoreBase, _as_vector
from docpipe_dagster.store.schema import (
    ChunkRow,
    JobRow,
    ParsedJob,
    PendingChunk,
    S,
)
from docpipe_dagster.store.vectors import VectorSpace


class StagingStore(StoreBase):
    def _analyze_if_stale(self, buffer: str, staged: int) -> None:
        """ANALYZE a buffer whose planner statistics count fewer rows than were just staged.

        Autovacuum analyzes a buffer once enough of it has changed, which may be just after
        the commit stage drained it: the statistics then say "no rows" while its pages
        remain, and Postgres scales that to none for a buffer filled since. Estimating a
        row or so, the planner nests whole scans of one buffer inside the other, and the
        embed stage's statements take minutes where they take milliseconds.
        Autovacuum puts this right only at its next pass. Only the id columns are sampled:
        they are what the buffers are joined and filtered on.
        """
        if staged <= 0:
            return
        with self.pool.connection() as conn:
            stale = conn.execute(
                """SELECT c.relpages > 0 AND c.reltuples >= 0 AND c.reltuples / c.relpages
                        * (pg_relation_size(c.oid) / current_setting('block_size')::int) < %s
                    FROM pg_class c WHERE c.oid = %s::regclass""",
                (staged, f"{S}.{buffer}"),
            ).fetchone()[0]
            conn.commit()
            if not stale:
                return
            try:
                with conn.transaction():
                    # Another run analyzing the same buffer settles it as well: don't queue.
                    conn.execute("SET LOCAL lock_timeout = '2s'")
                    conn.execute(f"ANALYZE {S}.{buffer} (chunk_id, job_id)")
            except psycopg.errors.LockNotAvailable:
                pass

    # --- parse ----------------------------------------------------------------------

    def cached_parses(self, shas: Iterable[str], profile: str) -> dict[str, tuple[str, int]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT content_sha256, markdown, page_count FROM {S}.parse_cache"
                " WHERE parser_profile = %s AND content_sha256 = ANY(%s)",
                (profile, list(set(shas))),
            ).fetchall()
        return {sha: (md, pages) for sha, md, pages in rows}

    def save_parses(self, parsed: Sequence[ParsedJob]) -> set[uuid.UUID]:
        """Cache several parses and mark their jobs parsed, in one transaction and a fixed
        number of statements; returns the ids of the jobs marked. A job that left parsing
        meanwhile (deleted or superseded while the parser ran) stays as it is."""
        if not parsed:
            return set()
        cache = {(p.job.content_sha256, p.profile): p for p in parsed}
        with self.transaction(durable=False) as conn:
            conn.execute(
                f"""INSERT INTO {S}.parse_cache (content_sha256, parser_profile, markdown,
                        page_count, parse_job_id)
                    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],
                        %s::text[])
                    ON CONFLICT DO NOTHING""",
                (
                    [sha for sha, _ in cache],
                    [profile for _, profile in cache],
                    [p.markdown for p in cache.values()],
                    [p.page_count for p in cache.values()],
                    [p.parse_job_id for p in cache.values()],
                ),
            )
            updated = {
                r[0]
                for r in conn.execute(
                    f"""UPDATE {S}.upload_jobs j SET state = 'parsed', parse_job_id = u.parse_job_id,
                        page_count = u.page_count, updated_at = now()
                        FROM unnest(%s::uuid[], %s::text[], %s::int[])
                            AS u(job_id, parse_job_id, page_count)
                        WHERE j.job_id = u.job_id AND j.state IN ('uploaded', 'parsing')
                        RETURNING j.job_id""",
                    (
                        [p.job.job_id for p in parsed],
                        [p.parse_job_id for p in parsed],
                        [p.page_count for p in parsed],
                    ),
                )
            }
            self._events(
                conn,
                [
                    (
                        p.job.job_id,
                        "parse",
                        "parsed",
                        {
                            "pages": p.page_count,
                            "chars": len(p.markdown),
                            "cache_hit": p.cache_hit,
                            "parse_job_id": p.parse_job_id,
                            "parser": p.profile,
                            "seconds": round(p.seconds, 3),
                        },
                    )
                    for p in parsed
                    if p.job.job_id in updated
                ],
            )
        return updated

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
                " text_sha256, token_estimate, heading_path, char_start, char_end, page_start,"
                " page_end) FROM STDIN"
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
                                c.page_start,
                                c.page_end,
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
        self._analyze_if_stale(
            "document_chunk_buffer",
            sum(len(chunks) for job, chunks, _ in items if job.job_id in updated),
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
        """Write new vectors to the embedding cache (a text cached meanwhile keeps its row).

        One binary COPY straight into the cache: the texts were looked up as missing just
        before, so a conflict only comes from another run caching the same text at the same
        moment. Then the COPY is undone (a savepoint) and the rows go through a temporary
        table with ON CONFLICT DO NOTHING, which COPY cannot do itself.
        """
        if not vectors:
            return
        rows = [(sha, _as_vector(vec)) for sha, vec in vectors.items()]
        with self.transaction(durable=False) as conn:
            try:
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        f"COPY {S}.embedding_cache (embedding_model, dims, text_sha256, embedding)"
                        " FROM STDIN WITH (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["text", "int4", "text", "vector"])
                    for sha, vec in rows:
                        copy.write_row((space.model, space.dims, sha, vec))
                return
            except psycopg.errors.UniqueViolation:
                pass
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _new_embeddings (text_sha256 text, embedding vector)"
                " ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY _new_embeddings (text_sha256, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "vector"])
                for row in rows:
                    copy.write_row(row)
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
            staged = conn.execute(
                f"""INSERT INTO {S}.document_vector_buffer
                        (chunk_id, job_id, embedding_model, dims, embedding)
                    SELECT u.chunk_id, u.job_id, e.embedding_model, e.dims, e.embedding
                    FROM unnest(%s::uuid[], %s::uuid[], %s::text[]) AS u(chunk_id, job_id, sha)
                    JOIN {S}.embedding_cache e ON e.embedding_model = %s AND e.dims = %s
                        AND e.text_sha256 = u.sha""",
                (ids, [r[1] for r in rows], [r[2] for r in rows], space.model, space.dims),
            ).rowcount
        self._analyze_if_stale("document_vector_buffer", staged)
        return staged

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
