"""One document's story, and putting failed documents back in the queue on request.

`docpipe status KEY` reads a document's versions and its events as a timeline;
`docpipe retry` and `ingest --wait` re-queue failed versions whose content is unchanged
(a changed file is registered as a new version by intake anyway).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import JobRow, S


@dataclass(frozen=True)
class Event:
    stage: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Version:
    job_id: uuid.UUID
    document_id: uuid.UUID
    content_sha256: str
    size_bytes: int
    media_type: str | None
    state: str
    batch_key: str | None
    attempts: int
    failed_stage: str | None
    failure_reason: str | None
    failure_code: str | None
    retryable: bool | None
    next_attempt_at: datetime | None
    chunk_count: int | None
    page_count: int | None
    registered_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    events: list[Event] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "events"}
        out["job_id"] = str(self.job_id)
        out["document_id"] = str(self.document_id)
        for key in ("next_attempt_at", "registered_at", "updated_at", "completed_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["events"] = [
            {
                "stage": e.stage,
                "event_type": e.event_type,
                "payload": e.payload,
                "created_at": e.created_at.isoformat(),
            }
            for e in self.events
        ]
        return out


@dataclass(frozen=True)
class DocumentStory:
    storage_key: str
    versions: list[Version]  # newest first


def document_story(
    storage_key: str, story: DocumentStory | None, *, in_storage: bool | None = None
) -> dict[str, Any]:
    """The one JSON shape of a document: `docpipe status KEY --json` and
    GET /v1/documents/{key} (docs/API.md). `in_storage` is None when the caller did not
    look at storage (the CLI reads the database only)."""
    versions = story.versions if story is not None else []
    return {
        "storage_key": storage_key,
        "in_storage": in_storage,
        "state": versions[0].state if versions else "not registered yet",
        "versions": [v.as_dict() for v in versions],
    }


@dataclass(frozen=True)
class DocumentRow:
    storage_key: str
    state: str
    stage: str | None
    reason: str | None
    attempts: int
    chunks: int | None
    batch_key: str | None
    updated_at: datetime
    # the parse profile it was parsed under (local-..., llamaparse-v2:...), from its newest
    # `parsed` event
    parser: str | None = None


REQUEUE_PREFIX = "requeue-"
# A batch of one upload that the HTTP API registered and launched itself (the push path).
UPLOAD_PREFIX = "upload-"


class DocumentStore(StoreBase):
    """One document's story; failed documents re-queued on request; document listings."""

    def document_story(self, storage_key: str) -> DocumentStory | None:
        """Every registered version of `storage_key`, newest first, each with its events in order."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT job_id, document_id, content_sha256, size_bytes, media_type, state,
                    batch_key, attempts, failed_stage, failure_reason, failure_code, retryable,
                    next_attempt_at, chunk_count, page_count, registered_at, updated_at,
                    completed_at
                FROM {S}.upload_jobs WHERE storage_key = %s"""
                " ORDER BY registered_at DESC",
                (storage_key,),
            )
            rows = cur.fetchall()
            if not rows:
                return None
            cur.execute(
                f"SELECT job_id, stage, event_type, payload, created_at FROM {S}.events"
                " WHERE job_id = ANY(%s) ORDER BY event_id",
                ([r["job_id"] for r in rows],),
            )
            events: dict[uuid.UUID, list[Event]] = {}
            for e in cur:
                events.setdefault(e["job_id"], []).append(
                    Event(e["stage"], e["event_type"], e["payload"], e["created_at"])
                )
        versions = [Version(**row, events=events.get(row["job_id"], [])) for row in rows]
        return DocumentStory(storage_key, versions)

    def job_state(self, job_id: uuid.UUID) -> str | None:
        """The job's state; None while intake has not registered it."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT state FROM {S}.upload_jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
        return None if row is None else row[0]

    def failed_versions(
        self,
        storage_keys: Sequence[str] = (),
        *,
        stage: str | None = None,
        transient_only: bool = False,
        max_attempts: int | None = None,
    ) -> list[JobRow]:
        """The newest version of each document, where it is `failed` (optionally filtered)."""
        # One static statement: an unset filter is a NULL parameter that matches everything.
        params = {
            "keys": list(storage_keys) or None,
            "stage": stage,
            "transient_only": transient_only,
            "max_attempts": max_attempts,
        }
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT * FROM (
                        SELECT DISTINCT ON (storage_key) * FROM {S}.upload_jobs
                        WHERE state NOT IN ('deleted', 'superseded')
                        ORDER BY storage_key, registered_at DESC) newest
                    WHERE state = 'failed'
                      AND (%(keys)s::text[] IS NULL OR storage_key = ANY(%(keys)s::text[]))
                      AND (%(stage)s::text IS NULL OR failed_stage = %(stage)s::text)
                      AND (NOT %(transient_only)s OR retryable)
                      AND (%(max_attempts)s::int IS NULL OR attempts < %(max_attempts)s::int)
                    ORDER BY storage_key""",
                params,
            )
            return [JobRow.from_row(r) for r in cur]

    def requeue_failed(
        self, jobs: Sequence[JobRow], batch_key: str, reason: str, *, reset_attempts: bool
    ) -> list[uuid.UUID]:
        """Put failed versions into `batch_key` for another attempt, with a `retry` event each.

        reset_attempts: a person asked for it (`docpipe retry`), so the dead-letter count starts
        over; an automatic retry keeps counting.
        """
        ids = [job.job_id for job in jobs]
        if not ids:
            return []
        with self.transaction() as conn:
            moved = [
                row[0]
                for row in conn.execute(
                    f"""UPDATE {S}.upload_jobs SET state = 'uploaded', batch_key = %s,
                        next_attempt_at = NULL,
                        attempts = CASE WHEN %s THEN 0 ELSE attempts END, updated_at = now()
                        WHERE job_id = ANY(%s) AND state = 'failed' RETURNING job_id""",
                    (batch_key, reset_attempts, ids),
                )
            ]
            payload = {"batch": batch_key, "reason": reason, "attempts_reset": reset_attempts}
            self._events(conn, [(job_id, "intake", "retry", payload) for job_id in moved])
        return moved

    def requested_batches(self, uploads_older_than: timedelta | None = None) -> list[str]:
        """Open batches made by a person's retry request (`docpipe retry`, the UI job) and,
        with `uploads_older_than`, the API's upload batches registered that long ago or more
        (their launch may have failed): those still holding jobs in `uploaded`."""
        # A NULL age leaves the upload batches out (the comparison is never true).
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT batch_key FROM {S}.upload_jobs WHERE state = 'uploaded'"
                " AND (batch_key LIKE %s OR (batch_key LIKE %s"
                " AND registered_at < now() - %s::interval)) ORDER BY batch_key",
                (REQUEUE_PREFIX + "%", UPLOAD_PREFIX + "%", uploads_older_than),
            ).fetchall()
        return [r[0] for r in rows]

    def batch_documents(self, batch_key: str) -> list[DocumentRow]:
        """Every version registered in one batch, by storage key."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT storage_key, state, failed_stage AS stage, failure_reason AS reason,
                    attempts, chunk_count AS chunks, batch_key, updated_at,
                    (SELECT ev.payload->>'parser' FROM {S}.events ev WHERE ev.job_id = j.job_id
                        AND ev.event_type = 'parsed' ORDER BY ev.event_id DESC LIMIT 1)
                        AS parser
                FROM {S}.upload_jobs j WHERE batch_key = %s ORDER BY storage_key""",
                (batch_key,),
            )
            return [DocumentRow(**r) for r in cur]

    def recent_documents(self, limit: int = 500) -> list[DocumentRow]:
        """The newest version of each document, most recently changed first."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT storage_key, state, failed_stage AS stage, failure_reason AS reason,
                    attempts, chunk_count AS chunks, batch_key, updated_at,
                    (SELECT ev.payload->>'parser' FROM {S}.events ev WHERE ev.job_id = j.job_id
                        AND ev.event_type = 'parsed' ORDER BY ev.event_id DESC LIMIT 1)
                        AS parser
                    FROM (SELECT DISTINCT ON (document_id) * FROM {S}.upload_jobs
                          ORDER BY document_id, registered_at DESC) j
                    ORDER BY updated_at DESC, storage_key LIMIT %s""",
                (limit,),
            )
            return [DocumentRow(**r) for r in cur]
