"""Reports: per-batch counts for the asset checks, `docpipe status`, the embedding check."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import (
    BatchReport,
    EmbeddingCheck,
    JobState,
    S,
)
from docpipe_dagster.store.vectors import VectorSpace


class ReportStore(StoreBase):
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
                if row["state"] == JobState.FAILED:
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
            # Which parser produced each document's newest parsed version (its parse profile,
            # recorded on the `parsed` event): local-v1:... or llamaparse-v2:...
            cur.execute(
                f"""SELECT e.payload->>'parser' AS parser, count(*) AS n
                    FROM (SELECT DISTINCT ON (document_id) job_id, state FROM {S}.upload_jobs
                          ORDER BY document_id, registered_at DESC) latest
                    CROSS JOIN LATERAL (
                        SELECT payload FROM {S}.events ev
                        WHERE ev.job_id = latest.job_id AND ev.event_type = 'parsed'
                        ORDER BY ev.event_id DESC LIMIT 1) e
                    WHERE latest.state <> 'deleted' AND e.payload ? 'parser'
                    GROUP BY 1 ORDER BY 1"""
            )
            parsers = {r["parser"]: r["n"] for r in cur}
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
            "parsers": parsers,
        }

    # --- asset-check queries --------------------------------------------------------

    def embedding_check(self, batch_key: str, space: VectorSpace) -> EmbeddingCheck:
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
        return EmbeddingCheck(
            chunks_without_vector=missing, vectors_wrong_space=wrong_space, vectors=vectors
        )
