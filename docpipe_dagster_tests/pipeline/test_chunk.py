"""chunk_documents over a real Store: what it stages, the states and events it writes."""

from __future__ import annotations

from docpipe_dagster.core.hashing import sha256_text
from docpipe_dagster.core.ids import chunk_id, document_id
from docpipe_dagster_tests.pipeline.conftest import CHUNKING, Stages

LONG = "# Guide\n\n" + "\n\n".join(f"Paragraph {i} " + "words " * 20 for i in range(6))


def test_chunks_are_staged_with_stable_ids_and_jobs_move_to_chunked(stages: Stages) -> None:
    batch = stages.parsed({"a/guide.md": LONG, "b.md": "# Short\n\nOne line."})
    report = stages.chunk(batch)

    assert (report.documents, report.succeeded, report.failed) == (2, 2, 0)
    jobs = stages.jobs()
    staged = stages.rows("SELECT * FROM {S}.document_chunk_buffer ORDER BY job_id, chunk_index")
    assert report.counters["chunks"] == len(staged)
    for key, job in jobs.items():
        mine = [r for r in staged if r["job_id"] == job["job_id"]]
        assert job["state"] == "chunked" and job["chunk_count"] == len(mine) > 0
        assert [r["chunk_index"] for r in mine] == list(range(len(mine)))
        for r in mine:
            assert r["chunk_id"] == chunk_id(
                document_id(key), job["content_sha256"], r["chunk_index"]
            )
            assert r["text_sha256"] == sha256_text(r["content"])
            assert len(r["content"]) <= CHUNKING.max_chars
        assert stages.events(job["job_id"])[-1] == ("chunk", "chunked")
    guide = [r for r in staged if r["job_id"] == jobs["a/guide.md"]["job_id"]]
    assert len(guide) > 1  # long enough to be split at this size
    assert all(r["heading_path"] == ["Guide"] for r in guide)


def test_a_document_without_text_fails_alone(stages: Stages) -> None:
    batch = stages.parsed({"empty.md": "  \n\n  ", "ok.md": "# Fine\n\nSome text."})
    report = stages.chunk(batch)

    assert (report.succeeded, report.failed) == (1, 1)
    jobs = stages.jobs()
    empty, ok = jobs["empty.md"], jobs["ok.md"]
    assert ok["state"] == "chunked"
    assert empty["state"] == "failed" and empty["failed_stage"] == "chunk"
    assert empty["failure_code"] == "NO_CHUNKS" and not empty["retryable"]
    assert "no text to index" in empty["failure_reason"]
    assert stages.events(empty["job_id"])[-1] == ("chunk", "failed")
    assert not stages.rows(
        "SELECT 1 FROM {S}.document_chunk_buffer WHERE job_id = %s", (empty["job_id"],)
    )
    assert report.failures == [
        {
            "storage_key": "empty.md",
            "stage": "chunk",
            "reason": empty["failure_reason"],
            "code": "NO_CHUNKS",
            "retryable": False,
        }
    ]


def test_a_missing_parse_is_a_retryable_failure(stages: Stages) -> None:
    batch = stages.parsed({"gone.md": "# Gone\n\ntext", "kept.md": "# Kept\n\ntext"})
    gone = stages.jobs()["gone.md"]
    deleted = stages.execute(
        "DELETE FROM {S}.parse_cache WHERE content_sha256 = %s", (gone["content_sha256"],)
    )
    assert deleted == 1
    report = stages.chunk(batch)

    jobs = stages.jobs()
    assert jobs["kept.md"]["state"] == "chunked"
    assert jobs["gone.md"]["state"] == "failed"
    assert jobs["gone.md"]["failure_code"] == "PARSE_CACHE_MISS"
    assert jobs["gone.md"]["retryable"] and jobs["gone.md"]["next_attempt_at"] is not None
    assert report.failed == 1


def test_a_rerun_changes_nothing(stages: Stages) -> None:
    batch = stages.parsed({"a.md": LONG})
    stages.chunk(batch)
    before = stages.rows("SELECT chunk_id, content FROM {S}.document_chunk_buffer ORDER BY 1")
    events = stages.rows("SELECT count(*) AS n FROM {S}.events")[0]["n"]

    again = stages.chunk(batch)

    assert (again.documents, again.skipped, again.succeeded) == (0, 1, 0)
    assert (
        stages.rows("SELECT chunk_id, content FROM {S}.document_chunk_buffer ORDER BY 1") == before
    )
    assert stages.rows("SELECT count(*) AS n FROM {S}.events")[0]["n"] == events
