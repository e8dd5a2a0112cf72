"""The schema's constraints carry the invariants; pgvector search uses the HNSW index."""

from __future__ import annotations

import hashlib
import math
import random
import uuid

import psycopg
import pytest
from pgvector import Vector

from docpipe_dagster.store.pool import connect

SHA = hashlib.sha256(b"doc").hexdigest()


def _insert_job(conn: psycopg.Connection, state: str = "uploaded", **extra: object) -> uuid.UUID:
    job_id = uuid.uuid4()
    columns = {
        "job_id": job_id,
        "document_id": uuid.uuid4(),
        "storage_key": f"docs/{job_id}.txt",
        "content_sha256": SHA,
        "size_bytes": 3,
        "state": state,
        **extra,
    }
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    conn.execute(
        f"INSERT INTO upload_pipeline.upload_jobs ({names}) VALUES ({marks})",
        list(columns.values()),
    )
    return job_id


def _insert_chunk(
    conn: psycopg.Connection, job_id: uuid.UUID, chunk_id: uuid.UUID, index: int
) -> None:
    conn.execute(
        "INSERT INTO upload_pipeline.document_chunk_buffer"
        " (chunk_id, job_id, chunk_index, content, text_sha256, token_estimate, char_start, char_end)"
        " VALUES (%s, %s, %s, 'text', 'x', 1, 0, 4)",
        (chunk_id, job_id, index),
    )


def test_duplicate_chunk_id_rejected(database_url: str) -> None:
    with connect(database_url) as conn:
        job = _insert_job(conn)
        chunk = uuid.uuid4()
        _insert_chunk(conn, job, chunk, 0)
        with pytest.raises(psycopg.errors.UniqueViolation):
            _insert_chunk(conn, job, chunk, 1)


def test_invalid_state_rejected(database_url: str) -> None:
    with connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        _insert_job(conn, state="half-done")


def test_failed_job_needs_a_reason(database_url: str) -> None:
    with connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="failed_has_reason"):
            _insert_job(conn, state="failed", failed_stage="parse")
        conn.rollback()
        _insert_job(conn, state="failed", failed_stage="parse", failure_reason="unsupported .exe")


def test_event_for_unknown_job_rejected(database_url: str) -> None:
    with connect(database_url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(
            "INSERT INTO upload_pipeline.events (job_id, stage, event_type) VALUES (%s, 'parse', 'x')",
            (uuid.uuid4(),),
        )


def test_events_are_append_only(database_url: str) -> None:
    with connect(database_url) as conn:
        job = _insert_job(conn)
        conn.execute(
            "INSERT INTO upload_pipeline.events (job_id, stage, event_type) VALUES (%s, 'intake', 'registered')",
            (job,),
        )
        conn.commit()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE upload_pipeline.events SET event_type = 'rewritten'")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM upload_pipeline.events")


def test_vector_dims_must_match_declared_dims(database_url: str) -> None:
    with connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO upload_pipeline.embedding_cache (embedding_model, dims, text_sha256, embedding)"
            " VALUES ('m', 3, 'h', %s)",
            (Vector([1.0, 2.0]),),
        )


def _unit(rng: random.Random, dims: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_pgvector_round_trip_and_hnsw_top_k(database_url: str) -> None:
    rng = random.Random(7)
    dims = 1536
    vectors = [_unit(rng, dims) for _ in range(60)]
    with connect(database_url) as conn:
        job = _insert_job(conn, state="completed")
        with conn.cursor() as cur:
            for i, vec in enumerate(vectors):
                cur.execute(
                    "INSERT INTO upload_pipeline.document_chunks (chunk_id, document_id, job_id,"
                    " storage_key, content_sha256, chunk_index, content, token_estimate,"
                    " embedding_model, dims, embedding)"
                    " VALUES (%s, %s, %s, 'k', %s, %s, %s, 1, 'text-embedding-3-small', %s, %s)",
                    (uuid.uuid4(), uuid.uuid4(), job, SHA, i, f"chunk {i}", dims, Vector(vec)),
                )
        conn.commit()
        stored = conn.execute(
            "SELECT embedding FROM upload_pipeline.document_chunks WHERE content = 'chunk 5'"
        ).fetchone()[0]
        assert stored.to_list() == pytest.approx(vectors[5], rel=1e-5, abs=1e-6)

        noise = _unit(rng, dims)
        query = Vector([a + 0.01 * b for a, b in zip(vectors[17], noise, strict=False)])
        top_k_sql = (
            "SELECT content, 1 - (embedding::vector(1536) <=> %s::vector(1536)) AS score"
            " FROM upload_pipeline.document_chunks"
            " WHERE embedding_model = 'text-embedding-3-small' AND dims = 1536"
            " ORDER BY embedding::vector(1536) <=> %s::vector(1536) LIMIT 3"
        )
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN " + top_k_sql, (query, query)).fetchall()
        )
        assert "document_chunks_hnsw_te3s_1536" in plan, plan
        rows = conn.execute(top_k_sql, (query, query)).fetchall()
        assert rows[0][0] == "chunk 17"
        assert rows[0][1] > 0.99
