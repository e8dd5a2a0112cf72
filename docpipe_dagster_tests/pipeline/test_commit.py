"""commit_documents over a real Store: chunks become searchable, versions swap atomically."""

from __future__ import annotations

from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster.store.pool import connect
from docpipe_dagster_tests.pipeline.conftest import SPACE, Stages, commit, through_embed
from docpipe_dagster_tests.support import MockServer

TEXT = "# Manual\n\n" + "\n\n".join(f"Step {i}: " + "turn the knob " * 8 for i in range(5))


def invariants_hold(stages: Stages) -> None:
    with connect(stages.database_url) as conn:
        report = check_invariants(conn)
    assert report.ok, report.violations


def test_committed_documents_are_searchable_and_the_buffers_empty(
    stages: Stages, openai_mock: MockServer
) -> None:
    batch = through_embed(stages, openai_mock, {"manual.md": TEXT, "note.md": "# N\n\nhello"})
    staged = {
        r["chunk_id"]: r
        for r in stages.rows("SELECT chunk_id, job_id FROM {S}.document_chunk_buffer")
    }
    report = commit(stages, batch)

    assert (report.documents, report.succeeded, report.failed) == (2, 2, 0)
    rows = stages.rows(
        "SELECT chunk_id, job_id, storage_key, embedding_model, dims FROM {S}.document_chunks"
    )
    assert {r["chunk_id"] for r in rows} == set(staged)
    assert report.counters["chunks"] == len(rows)
    assert {(r["embedding_model"], r["dims"]) for r in rows} == {(SPACE.model, SPACE.dims)}
    for key, job in stages.jobs().items():
        assert job["state"] == "completed"
        assert stages.events(job["job_id"])[-1] == ("commit", "completed")
        assert {r["storage_key"] for r in rows if r["job_id"] == job["job_id"]} == {key}
    assert not stages.rows("SELECT 1 FROM {S}.document_chunk_buffer")
    assert not stages.rows("SELECT 1 FROM {S}.document_vector_buffer")
    invariants_hold(stages)


def test_a_new_version_replaces_the_old_chunks(stages: Stages, openai_mock: MockServer) -> None:
    commit(stages, through_embed(stages, openai_mock, {"manual.md": TEXT}))
    old = stages.jobs()["manual.md"]

    report = commit(
        stages, through_embed(stages, openai_mock, {"manual.md": "# Manual v2\n\nNew."})
    )

    new = stages.jobs()["manual.md"]
    assert new["job_id"] != old["job_id"] and report.succeeded == 1
    states = {
        r["job_id"]: r["state"] for r in stages.rows("SELECT job_id, state FROM {S}.upload_jobs")
    }
    assert states == {old["job_id"]: "superseded", new["job_id"]: "completed"}
    rows = stages.rows("SELECT job_id, content FROM {S}.document_chunks")
    assert {r["job_id"] for r in rows} == {new["job_id"]}
    assert [r["content"] for r in rows] == ["# Manual v2\n\nNew."]
    assert report.counters["chunks_replaced"] == old["chunk_count"] > 1
    invariants_hold(stages)


def test_a_rerun_commits_nothing_twice(stages: Stages, openai_mock: MockServer) -> None:
    batch = through_embed(stages, openai_mock, {"manual.md": TEXT})
    commit(stages, batch)
    before = stages.rows("SELECT chunk_id, committed_at FROM {S}.document_chunks ORDER BY 1")

    again = commit(stages, batch)

    assert (again.documents, again.skipped, again.succeeded) == (0, 1, 0)
    assert (
        stages.rows("SELECT chunk_id, committed_at FROM {S}.document_chunks ORDER BY 1") == before
    )
    invariants_hold(stages)
