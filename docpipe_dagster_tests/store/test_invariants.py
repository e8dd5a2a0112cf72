"""The invariant checker finds each kind of broken promise, and passes a healthy database."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from datetime import timedelta

import psycopg
import pytest
from pgvector import Vector

from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster.store.pool import connect

S = "upload_pipeline"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _job(
    conn: psycopg.Connection,
    key: str,
    state: str,
    *,
    version: str = "v1",
    chunks: int | None = None,
    events: list[tuple[str, str]] | None = None,
    document: uuid.UUID | None = None,
    stale: bool = False,
) -> tuple[uuid.UUID, uuid.UUID]:
    job_id, document = uuid.uuid4(), document or uuid.uuid5(uuid.NAMESPACE_URL, key)
    conn.execute(
        f"""INSERT INTO {S}.upload_jobs (job_id, document_id, storage_key, content_sha256, size_bytes,
            state, batch_key, chunk_count, failed_stage, failure_reason, updated_at)
            VALUES (%s, %s, %s, %s, 1, %s, 'b1', %s, %s, %s, now() - %s)""",
        (
            job_id,
            document,
            key,
            _sha(version),
            state,
            chunks,
            "parse" if state == "failed" else None,
            "broken" if state == "failed" else None,
            timedelta(hours=1) if stale else timedelta(0),
        ),
    )
    story = events if events is not None else [("intake", "registered"), *_closing(state)]
    for stage, kind in story:
        conn.execute(
            f"INSERT INTO {S}.events (job_id, stage, event_type) VALUES (%s, %s, %s)",
            (job_id, stage, kind),
        )
    return job_id, document


def _closing(state: str) -> list[tuple[str, str]]:
    return {
        "completed": [
            ("parse", "parsed"),
            ("chunk", "chunked"),
            ("embed", "embedded"),
            ("commit", "completed"),
        ],
        "failed": [("parse", "failed")],
        "deleted": [("intake", "deleted")],
    }.get(state, [])


def _chunk(
    conn: psycopg.Connection,
    job: uuid.UUID,
    document: uuid.UUID,
    key: str,
    index: int,
    version: str = "v1",
) -> None:
    conn.execute(
        f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id, storage_key, content_sha256,
            chunk_index, content, token_estimate, embedding_model, dims, embedding)
            VALUES (%s, %s, %s, %s, %s, %s, 'text', 1, 'm', 3, %s)""",
        (uuid.uuid4(), document, job, key, _sha(version), index, Vector([1.0, 0.0, 0.0])),
    )


def _violations(url: str, **kwargs) -> dict[str, int]:
    with connect(url) as conn:
        return check_invariants(conn, **kwargs).counts()


def test_healthy_database_passes(database_url: str) -> None:
    with connect(database_url) as conn:
        job, doc = _job(conn, "a.md", "completed", chunks=2)
        _chunk(conn, job, doc, "a.md", 0)
        _chunk(conn, job, doc, "a.md", 1)
        _job(conn, "b.exe", "failed")
        _job(conn, "c.md", "deleted")
        _job(conn, "d.md", "parsed")  # in flight, moved just now
        conn.commit()
    assert _violations(database_url) == {}


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("stuck", lambda c: _job(c, "s.md", "chunked", stale=True), "in_flight_without_run"),
        (
            "no story",
            lambda c: _job(c, "n.md", "completed", chunks=0, events=[]),
            "events_out_of_order",
        ),
        (
            "wrong ending",
            lambda c: _job(
                c,
                "w.md",
                "completed",
                chunks=0,
                events=[("intake", "registered"), ("parse", "failed")],
            ),
            "events_out_of_order",
        ),
    ],
)
def test_job_level_violations(database_url: str, name: str, build, expected: str) -> None:
    with connect(database_url) as conn:
        build(conn)
        conn.commit()
    assert _violations(database_url) == {expected: 1}, name


def test_in_flight_job_with_a_live_run_is_fine(database_url: str) -> None:
    with connect(database_url) as conn:
        _job(conn, "s.md", "chunked", stale=True)
        conn.commit()
    assert _violations(database_url, live_batches={"b1"}) == {}
    assert _violations(database_url, live_batches=set()) == {"in_flight_without_run": 1}


def test_visibility_violations(database_url: str) -> None:
    with connect(database_url) as conn:
        job, doc = _job(conn, "two.md", "completed", chunks=2)
        _chunk(conn, job, doc, "two.md", 0, "v1")
        _chunk(conn, job, doc, "two.md", 1, "v2")  # a second version's chunk
        short, sdoc = _job(conn, "short.md", "completed", chunks=3)
        _chunk(conn, short, sdoc, "short.md", 0)
        failed, fdoc = _job(conn, "f.md", "failed")
        _chunk(conn, failed, fdoc, "f.md", 0)
        done, _ = _job(conn, "buf.md", "completed", chunks=0)
        conn.execute(
            f"""INSERT INTO {S}.document_chunk_buffer (chunk_id, job_id, chunk_index, content, text_sha256,
                token_estimate, char_start, char_end) VALUES (%s, %s, 0, 'x', 'h', 1, 0, 1)""",
            (uuid.uuid4(), done),
        )
        conn.commit()
    assert _violations(database_url) == {
        "two_versions_visible": 1,
        "vectors_differ_from_chunks": 1,
        "uncommitted_version_visible": 1,
        "buffer_not_cleared": 1,
    }


def test_deleted_document_still_visible(database_url: str) -> None:
    with connect(database_url) as conn:
        job, doc = _job(conn, "gone.md", "deleted")
        _chunk(conn, job, doc, "gone.md", 0)
        conn.commit()
    counts = _violations(database_url)
    assert counts["deleted_still_visible"] == 1


@pytest.mark.slow  # runs the CLI as subprocesses
def test_docpipe_verify_exit_codes(database_url: str, tmp_path) -> None:
    env = {
        "DOCPIPE_DATABASE_URL": database_url,
        "DOCPIPE_HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    ok = subprocess.run(
        [sys.executable, "-m", "docpipe_dagster.cli", "verify"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "all invariants hold" in ok.stdout
    with connect(database_url) as conn:
        _job(conn, "stuck.md", "embedded", stale=True)
        conn.commit()
    bad = subprocess.run(
        [sys.executable, "-m", "docpipe_dagster.cli", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert report["violations"][0]["invariant"] == "in_flight_without_run"
    assert report["violations"][0]["storage_key"] == "stuck.md"


def test_batch_scope_sees_only_that_batchs_jobs_and_documents(database_url: str) -> None:
    with connect(database_url) as conn:
        job, doc = _job(conn, "two.md", "completed", chunks=2)  # batch b1
        _chunk(conn, job, doc, "two.md", 0, "v1")
        _chunk(conn, job, doc, "two.md", 1, "v2")
        conn.commit()
    assert _violations(database_url, batch_key="b1") == {"two_versions_visible": 1}
    assert _violations(database_url, batch_key="other") == {}
