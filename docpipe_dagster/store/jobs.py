"""Jobs and their transitions: registering versions, states, failures, retries, batches."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg.rows import dict_row

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import (
    GONE_STATES,
    IN_FLIGHT_STATES,
    JobRow,
    NewVersion,
    S,
)


class JobStore(StoreBase):
    # --- intake ---------------------------------------------------------------------

    def current_versions(self, storage_keys: Sequence[str] | None = None) -> dict[str, JobRow]:
        """The newest registered, not deleted/superseded version of every storage key (or
        of `storage_keys` only)."""
        keys = None if storage_keys is None else list(storage_keys)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                # Every intake tick reads this for the whole folder: only JobRow's columns.
                "SELECT DISTINCT ON (storage_key) job_id, document_id, storage_key,"
                " content_sha256, size_bytes, media_type, source_modified_at, state, batch_key,"
                f" attempts, failure_reason, chunk_count FROM {S}.upload_jobs"
                " WHERE state NOT IN ('deleted', 'superseded')"
                " AND (%s::text[] IS NULL OR storage_key = ANY(%s::text[]))"
                " ORDER BY storage_key, registered_at DESC",
                (keys, keys),
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
            if row is not None and row[1] in GONE_STATES:
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
