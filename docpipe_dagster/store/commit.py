"""The commit: each document's old searchable chunks swapped for its new ones at once."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import (
    GONE_STATES,
    CommitOutcome,
    JobRow,
    JobState,
    S,
)
from docpipe_dagster.store.vectors import VectorSpace


class CommitStore(StoreBase):
    # --- commit ---------------------------------------------------------------------

    def commit_document(self, job: JobRow, space: VectorSpace) -> CommitOutcome:
        """Swap the document's searchable chunks for this version's, atomically.

        Locks the document's job rows so two commits of one document serialize; a
        version older than the newest registered one is superseded instead of committed.
        """
        return self.commit_documents([job], space)[job.job_id]

    def commit_documents(
        self, jobs: Sequence[JobRow], space: VectorSpace
    ) -> dict[uuid.UUID, CommitOutcome]:
        """commit_document for several documents in ONE transaction and a fixed number of
        statements: each document's old chunks are still swapped for its new ones at once
        (the whole group becomes visible together). Raises if any statement fails; the
        caller then commits the documents one by one, so a bad one fails alone.

        Returns job id -> its CommitOutcome.
        """
        if not jobs:
            return {}
        outcomes: dict[uuid.UUID, CommitOutcome] = {}
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
                if mine is None or mine[2] != JobState.EMBEDDED:
                    state = mine[2] if mine else "missing"
                    outcomes[job.job_id] = CommitOutcome(False, reason=f"state is {state}")
                    continue
                newer = [
                    r
                    for r in versions[job.document_id]
                    if r[3] > mine[3] and r[2] not in GONE_STATES
                ]
                if newer:
                    dropped[job.job_id] = newer[-1][0]
                    outcomes[job.job_id] = CommitOutcome(False, reason="a newer version exists")
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
                    # Offsets and pages named here, so the offsets trigger (for writers
                    # that name none) looks nothing up row by row.
                    f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id,
                            storage_key, content_sha256, chunk_index, content, heading_path,
                            token_estimate, embedding_model, dims, embedding, char_start,
                            char_end, page_start, page_end)
                        SELECT c.chunk_id, j.document_id, c.job_id, j.storage_key,
                            j.content_sha256, c.chunk_index, c.content, c.heading_path,
                            c.token_estimate, v.embedding_model, v.dims, v.embedding,
                            c.char_start, c.char_end, c.page_start, c.page_end
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
                if r[0] != job.job_id and r[2] not in GONE_STATES and r[0] not in dropped
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
                outcomes[job.job_id] = CommitOutcome(True, **payload)
            self._events(conn, events)
        return outcomes
