"""embed_chunks over a real Store and the mock embedder: vectors staged, cache, failures."""

from __future__ import annotations

from docpipe_dagster_tests.pipeline.conftest import SPACE, Stages
from docpipe_dagster_tests.support import MockServer

TEXT = "# Notes\n\n" + "\n\n".join(f"Point {i}: " + "detail " * 15 for i in range(4))


def test_every_chunk_gets_a_vector_and_the_job_moves_to_embedded(
    stages: Stages, openai_mock: MockServer
) -> None:
    batch = stages.parsed({"a.md": TEXT, "b.md": "# B\n\nshort"})
    stages.chunk(batch)
    report = stages.embed(batch, openai_mock)

    assert (report.documents, report.succeeded, report.failed) == (2, 2, 0)
    staged = stages.rows("SELECT chunk_id FROM {S}.document_chunk_buffer")
    vectors = stages.rows(
        "SELECT chunk_id, embedding_model, dims, vector_dims(embedding) AS n"
        " FROM {S}.document_vector_buffer"
    )
    assert {v["chunk_id"] for v in vectors} == {c["chunk_id"] for c in staged}
    assert {(v["embedding_model"], v["dims"], v["n"]) for v in vectors} == {
        (SPACE.model, SPACE.dims, SPACE.dims)
    }
    texts = stages.rows("SELECT DISTINCT text_sha256 FROM {S}.document_chunk_buffer")
    cached = stages.rows(
        "SELECT text_sha256 FROM {S}.embedding_cache WHERE dims = %s", (SPACE.dims,)
    )
    assert {r["text_sha256"] for r in cached} == {r["text_sha256"] for r in texts}
    assert report.counters["texts_sent"] == len(texts) and report.counters["cache_hits"] == 0
    assert report.external_calls == openai_mock.stats()["total"] >= 1
    for job in stages.jobs().values():
        assert job["state"] == "embedded"
        assert stages.events(job["job_id"])[-1] == ("embed", "embedded")


def test_texts_already_embedded_are_not_sent_again(stages: Stages, openai_mock: MockServer) -> None:
    first = stages.parsed({"a.md": TEXT})
    stages.chunk(first)
    stages.embed(first, openai_mock)
    calls = openai_mock.stats()["total"]

    second = stages.parsed({"copy.md": TEXT})  # same text under another name
    stages.chunk(second)
    report = stages.embed(second, openai_mock)

    assert report.succeeded == 1 and report.counters["texts_sent"] == 0
    assert report.counters["cache_hits"] == report.counters["chunks"] > 0
    assert openai_mock.stats()["total"] == calls
    copy = stages.jobs()["copy.md"]
    assert copy["state"] == "embedded"
    assert (
        len(
            stages.rows(
                "SELECT 1 FROM {S}.document_vector_buffer WHERE job_id = %s", (copy["job_id"],)
            )
        )
        == copy["chunk_count"]
    )


def test_a_refusing_service_fails_the_documents_with_its_reason(
    stages: Stages, openai_mock: MockServer
) -> None:
    batch = stages.parsed({"a.md": TEXT})
    stages.chunk(batch)
    openai_mock.set_faults({"kind": "insufficient_quota"})
    report = stages.embed(batch, openai_mock)

    job = stages.jobs()["a.md"]
    assert report.failed == 1 and report.succeeded == 0
    assert (job["state"], job["failed_stage"], job["retryable"]) == ("failed", "embed", False)
    assert job["failure_reason"].startswith("embedding service error:")
    assert "quota" in job["failure_reason"]
    assert stages.events(job["job_id"])[-1] == ("embed", "failed")
    assert not stages.rows("SELECT 1 FROM {S}.document_vector_buffer")
