"""embed_chunks over a real Store and the mock embedder: vectors staged, cache, failures."""

from __future__ import annotations

import tracemalloc

import pytest

from docpipe_dagster.store.queries import VectorSpace
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


@pytest.mark.slow  # tracemalloc over 300 requests: a few seconds
def test_a_large_batch_holds_the_parts_in_flight_not_every_vector(
    stages: Stages, openai_mock: MockServer
) -> None:
    # 1,200 distinct chunks at 3,072 dimensions: 15 MB of float32 vectors in all.
    docs = {
        f"d{d}.md": "\n\n".join(f"Doc {d}, point {p}: " + f"w{d}x{p} " * 20 for p in range(12))
        for d in range(100)
    }
    batch = stages.parsed(docs)
    stages.chunk(batch)
    wide = VectorSpace("text-embedding-3-large", 3072)

    tracemalloc.start()
    try:
        report = stages.embed(batch, openai_mock, space=wide, part_size=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (report.succeeded, report.counters["texts_sent"]) == (100, 1200)
    every_vector = 1200 * wide.dims * 4
    # Each part's vectors are cached as it answers and then let go: what the stage holds at
    # once is the parts between asking and caching, not the whole batch's vectors.
    assert peak < every_vector / 2, (peak, every_vector)
