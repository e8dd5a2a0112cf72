"""The whole asset graph over real HTTP (mocks) and a real database, run in-process."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.ids import document_id
from docpipe_dagster.pipeline.intake import even_batch_size
from docpipe_dagster.runner import BatchOutcome, ingest_pending
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick

UPLOAD_ROUTE = "POST /api/v2/parse/upload"
# Parsed in-process by default (DOCPIPE_PARSE_LOCALLY=text, no parser call): the text-like types.
LOCAL = (".txt", ".json", ".md", ".html", ".csv")

GUIDE = "\n\n".join(
    [
        "# Lighthouse keeping",
        "## Lamps",
        "The keeper trims the wick of the paraffin lamp every evening before dusk. "
        "A clean Fresnel lens throws the beam twenty nautical miles across the strait. " * 6,
        "## Fog signals",
        "When the fog rolls in the diaphone horn sounds two blasts every minute. "
        "The compressor room smells of oil and the logbook records each hour of fog. " * 6,
        "## Supplies",
        "The supply boat brings coal, paraffin, tinned food and letters once a fortnight. " * 6,
    ]
)
NOTES = (
    "Sourdough notes. Feed the starter with rye flour and water at a one to one ratio. "
    "Leave the levain to rise until it doubles, then mix the dough and rest it for autolyse. "
    "Stretch and fold four times, shape a tight boule and proof it overnight in the fridge.\n"
)
PAGE = (
    "<html><head><title>Glacier hiking</title></head><body><h1>Glacier hiking</h1>"
    "<p>Crampons bite into the blue ice while the guide probes for hidden crevasses.</p>"
    "<p>Rope teams keep ten metres apart on the moraine and carry ice screws.</p>"
    "</body></html>"
)
TABLE = (
    "volcano,country,eruption\n"
    "Eyjafjallajokull,Iceland,2010 ash cloud grounded flights\n"
    "Pinatubo,Philippines,1991 stratospheric sulfur aerosols\n"
    "Krakatoa,Indonesia,1883 caldera collapse tsunami\n"
)
DATA = json.dumps(
    {
        "topic": "beekeeping",
        "notes": [
            "The queen bee lays eggs in the brood comb of the lower hive box.",
            "Smoke calms the worker bees before the beekeeper lifts the honey super.",
        ],
    }
)
REPORT = build_text_pdf(
    [
        "Violin making\nThe luthier carves the spruce top and the maple back by hand.",
        "Varnish\nSeveral thin coats of oil varnish give the instrument its amber glow.",
    ]
)

DOCUMENTS: dict[str, str | bytes] = {
    "guide.md": GUIDE,
    "notes.txt": NOTES,
    "web/page.html": PAGE,
    "table.csv": TABLE,
    "data.json": DATA,
    "report.pdf": REPORT,
}
# A query taken verbatim from each document.
QUERIES = {
    "guide.md": "When the fog rolls in the diaphone horn sounds two blasts every minute.",
    "notes.txt": "Feed the starter with rye flour and water at a one to one ratio.",
    "web/page.html": "Crampons bite into the blue ice while the guide probes for hidden crevasses.",
    "table.csv": "Pinatubo,Philippines,1991 stratospheric sulfur aerosols",
    "data.json": "Smoke calms the worker bees before the beekeeper lifts the honey super.",
    "report.pdf": "The luthier carves the spruce top and the maple back by hand.",
}


def snapshot(pipeline: Pipeline) -> dict[str, Any]:
    """Every row a re-run could touch, with the columns that would show it."""
    return {
        "jobs": pipeline.rows(
            "SELECT job_id, state, batch_key, attempts, updated_at FROM {S}.upload_jobs"
            " ORDER BY job_id"
        ),
        "chunks": pipeline.rows(
            "SELECT chunk_id, job_id, committed_at FROM {S}.document_chunks ORDER BY chunk_id"
        ),
        "events": pipeline.rows("SELECT count(*) AS n FROM {S}.events"),
        "buffers": pipeline.rows(
            "SELECT (SELECT count(*) FROM {S}.document_chunk_buffer) AS chunks,"
            " (SELECT count(*) FROM {S}.document_vector_buffer) AS vectors"
        ),
    }


def chunk_versions(pipeline: Pipeline, key: str) -> dict[str, int]:
    rows = pipeline.rows(
        "SELECT content_sha256, count(*) AS n FROM {S}.document_chunks"
        " WHERE document_id = %s GROUP BY content_sha256",
        (document_id(key),),
    )
    return {r["content_sha256"]: r["n"] for r in rows}


def test_a_batch_of_varied_documents_becomes_searchable(pipeline: Pipeline) -> None:
    for key, data in DOCUMENTS.items():
        pipeline.write(key, data)

    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success

    jobs = pipeline.jobs()
    assert {k: j["state"] for k, j in jobs.items()} == dict.fromkeys(DOCUMENTS, "completed")
    assert jobs["guide.md"]["chunk_count"] > 1  # long enough to be split

    # One searchable vector per chunk, for every document.
    counts = pipeline.rows(
        "SELECT j.storage_key, j.chunk_count, count(c.chunk_id) AS vectors,"
        " count(DISTINCT vector_dims(c.embedding)) AS dims_kinds, min(vector_dims(c.embedding)) AS dims"
        " FROM {S}.upload_jobs j LEFT JOIN {S}.document_chunks c ON c.job_id = j.job_id"
        " GROUP BY j.storage_key, j.chunk_count"
    )
    assert len(counts) == len(DOCUMENTS)
    for row in counts:
        assert row["vectors"] == row["chunk_count"] > 0, row
        assert (row["dims_kinds"], row["dims"]) == (1, pipeline.space().dims)
    total_chunks = sum(r["vectors"] for r in counts)
    assert pipeline.rows("SELECT count(*) AS n FROM {S}.document_chunks")[0]["n"] == total_chunks

    for key, query in QUERIES.items():
        hits = pipeline.search(query, k=3)
        assert hits and hits[0].storage_key == key, (query, [h.storage_key for h in hits])

    # Every asset check ran and passed (others may be added; all must pass).
    checks = pipeline.check_results(outcome.run_id)
    assert {
        "vectors_match_chunks",
        "dimensions_match_model",
        "batch_settled",
        "one_vector_per_chunk",
        "no_duplicate_chunks",
        "buffers_empty_after_commit",
    } <= set(checks)
    assert all(checks.values()), checks
    # Each asset reports what it did.
    meta = pipeline.materializations(outcome.run_id)
    assert set(meta) == {
        "raw_documents",
        "parsed_documents",
        "document_chunks",
        "chunk_embeddings",
        "searchable_chunks",
    }
    for values in meta.values():
        assert {"documents", "external_calls", "failures"} <= set(values)
    assert meta["raw_documents"]["documents"] == len(DOCUMENTS)
    local = [k for k in DOCUMENTS if k.endswith(LOCAL)]
    assert meta["parsed_documents"]["external_calls"] == len(DOCUMENTS) - len(local)
    assert meta["parsed_documents"]["local_parses"] == len(local) == 5
    assert pipeline.parser.stats()["by_route"][UPLOAD_ROUTE] == len(DOCUMENTS) - len(local)
    assert meta["document_chunks"]["chunks"] == total_chunks
    assert meta["chunk_embeddings"]["external_calls"] >= 1
    assert meta["searchable_chunks"]["chunks"] == total_chunks
    assert meta["searchable_chunks"]["batch_completed"] == len(DOCUMENTS)


def test_a_rerun_makes_no_external_call_and_touches_no_row(pipeline: Pipeline) -> None:
    for key in ("guide.md", "notes.txt", "data.json", "report.pdf"):
        pipeline.write(key, DOCUMENTS[key])
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success
    parser_calls, embedder_calls = pipeline.calls()
    assert parser_calls > 0 and embedder_calls > 0
    before = snapshot(pipeline)

    # The same batch again, then a full intake pass over the unchanged folder.
    assert pipeline.run(outcome.batch_key).success
    assert ingest_pending(resources=pipeline.resources, instance=pipeline.instance) == []

    assert pipeline.calls() == (parser_calls, embedder_calls)
    assert snapshot(pipeline) == before


def test_a_changed_file_replaces_its_old_version_in_search(pipeline: Pipeline) -> None:
    old = "Zeppelin hangars stored hydrogen airships at the old aerodrome near the marsh."
    new = "Quokkas hop between the scrubby dunes of the island at dawn looking for leaves."
    pipeline.write("story.txt", old)
    pipeline.write("other.txt", NOTES)
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    old_job = pipeline.jobs()["story.txt"]
    assert old_job["state"] == "completed"
    assert pipeline.search(old, k=1)[0].text == old

    pipeline.write("story.txt", new)
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success

    new_job = pipeline.jobs()["story.txt"]
    assert new_job["job_id"] != old_job["job_id"]
    assert new_job["state"] == "completed"
    state = pipeline.rows(
        "SELECT state FROM {S}.upload_jobs WHERE job_id = %s", (old_job["job_id"],)
    )
    assert state == [{"state": "superseded"}]
    assert chunk_versions(pipeline, "story.txt") == {sha256_bytes(new.encode()): 1}
    contents = {hit.text for hit in pipeline.search(old, k=10)}
    assert new in contents and old not in contents
    assert pipeline.jobs()["other.txt"]["state"] == "completed"


def test_a_reader_never_sees_two_versions_or_none(pipeline: Pipeline) -> None:
    def big(word: str) -> str:
        return "\n\n".join(
            f"Paragraph {i}: the {word} ledger records shipment {i} of {word} cargo, "
            f"weighed at the {word} quay and signed by the {word} clerk on duty."
            for i in range(300)
        )

    versions = [big("copper"), big("saffron")]
    pipeline.write("ledger.txt", versions[0])
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    first = chunk_versions(pipeline, "ledger.txt")
    assert list(first) == [sha256_bytes(versions[0].encode())] and first[next(iter(first))] > 20

    observations: list[dict[str, int]] = []
    stop = threading.Event()
    doc = document_id("ledger.txt")

    def read() -> None:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT content_sha256, count(*) FROM upload_pipeline.document_chunks"
                    " WHERE document_id = %s GROUP BY content_sha256",
                    (doc,),
                ).fetchall()
                observations.append(dict(rows))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        pipeline.write("ledger.txt", versions[1])
        (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
        assert outcome.success
    finally:
        stop.set()
        reader.join(timeout=10)
    assert not reader.is_alive()

    second = chunk_versions(pipeline, "ledger.txt")
    assert list(second) == [sha256_bytes(versions[1].encode())]
    complete = {**first, **second}  # sha -> chunk count of that whole version
    assert len(observations) > 10
    for seen in observations:
        assert len(seen) == 1, f"saw {len(seen)} versions at once: {seen}"
        ((sha, count),) = seen.items()
        assert count == complete[sha], "saw a partial version"
    assert observations[0] == first and observations[-1] == second


def test_a_deleted_file_disappears_from_search(pipeline: Pipeline) -> None:
    pipeline.write("notes.txt", NOTES)
    pipeline.write("page.html", PAGE)
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert pipeline.search(QUERIES["notes.txt"], k=1)[0].storage_key == "notes.txt"

    pipeline.delete("notes.txt")
    assert ingest_pending(resources=pipeline.resources, instance=pipeline.instance) == []

    assert pipeline.jobs()["notes.txt"]["state"] == "deleted"
    assert chunk_versions(pipeline, "notes.txt") == {}
    hits = pipeline.search(QUERIES["notes.txt"], k=10)
    assert hits and {h.storage_key for h in hits} == {"page.html"}


def test_bad_documents_fail_alone_with_a_reason(pipeline: Pipeline) -> None:
    good = ["notes.txt", "data.json", "table.csv"]
    for key in good:
        pipeline.write(key, DOCUMENTS[key])
    pipeline.write("tool.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)) * 4)
    pipeline.write("empty.txt", b"")
    pipeline.write("noise.txt", random.Random(7).randbytes(4096))

    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success

    jobs = pipeline.jobs()
    for key in good:
        assert jobs[key]["state"] == "completed", (key, jobs[key]["failure_reason"])
    expected = {
        "tool.exe": "unsupported file type .exe",
        "noise.txt": "binary data",
        "empty.txt": "",
    }
    for key, phrase in expected.items():
        job = jobs[key]
        reason = job["failure_reason"] or ""
        assert job["state"] == "failed", key
        assert job["retryable"] is False and job["next_attempt_at"] is None, key
        assert phrase in reason and len(reason.split()) >= 3, (key, reason)
        events = pipeline.rows(
            "SELECT stage, payload FROM {S}.events WHERE job_id = %s AND event_type = 'failed'",
            (job["job_id"],),
        )
        assert [e["payload"]["reason"] for e in events] == [reason]
        assert events[0]["stage"] == job["failed_stage"]
        assert chunk_versions(pipeline, key) == {}
    checks = pipeline.check_results(outcome.run_id)
    assert checks["batch_settled"] is True and all(checks.values()), checks
    # Nothing was sent to the parser: the unusable files failed at intake, the rest are
    # text-like and parsed in-process.
    assert pipeline.parser.stats()["by_route"].get(UPLOAD_ROUTE, 0) == 0


def test_the_same_content_is_parsed_and_embedded_once(pipeline: Pipeline) -> None:
    pipeline.parse_remotely()
    pipeline.write("copy-a.md", GUIDE)
    pipeline.write("copy-b.md", GUIDE)
    pipeline.write("notes.txt", NOTES)
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success
    # One upload for the two copies; notes.txt is parsed locally.
    assert pipeline.parser.stats()["by_route"][UPLOAD_ROUTE] == 1
    jobs = pipeline.jobs()
    assert {k: j["state"] for k, j in jobs.items()} == dict.fromkeys(jobs, "completed")
    assert jobs["copy-a.md"]["chunk_count"] == jobs["copy-b.md"]["chunk_count"]
    # Both copies are searchable, as distinct documents with distinct chunk ids.
    hits = pipeline.search(QUERIES["guide.md"], k=2)
    assert {h.storage_key for h in hits} == {"copy-a.md", "copy-b.md"}
    assert len({uuid.UUID(h.chunk_id) for h in hits}) == 2

    # A third copy later: the parse cache and the embedding cache answer, nobody is called.
    calls = pipeline.calls()
    pipeline.write("later/copy-c.md", GUIDE)
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success
    assert pipeline.calls() == calls
    assert pipeline.jobs()["later/copy-c.md"]["state"] == "completed"
    assert chunk_versions(pipeline, "later/copy-c.md") == {
        sha256_bytes(GUIDE.encode()): jobs["copy-a.md"]["chunk_count"]
    }


def test_a_file_deleted_while_it_is_parsed_stays_deleted(pipeline: Pipeline) -> None:
    pipeline.parse_remotely()
    pipeline.write("notes.md", NOTES)
    pipeline.write("stays.md", "Kept: the tide tables for the harbour mouth.")
    (batch,) = batch_keys(tick(pipeline, None))
    # Parse jobs stay PENDING for a while: time to delete the file mid-parse.
    httpx.post(f"{pipeline.parser.base_url}/_mock/pending", json={"pending_seconds": 1.5})
    outcome: list[BatchOutcome] = []
    runner = threading.Thread(target=lambda: outcome.append(pipeline.run(batch)))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while pipeline.parser.stats()["by_route"].get(UPLOAD_ROUTE, 0) < 2:
            assert time.monotonic() < deadline, "the parser never received the uploads"
            time.sleep(0.02)
        pipeline.delete("notes.md")
        tick(pipeline, None)  # the intake sensor syncs the deletion
        assert pipeline.jobs()["notes.md"]["state"] == "deleted"
    finally:
        runner.join(timeout=30)
    _assert_deleted_stays_deleted(pipeline, outcome)


def _assert_deleted_stays_deleted(pipeline: Pipeline, outcome: list[BatchOutcome]) -> None:
    """The run succeeded with its checks, the deleted file left no trace, its neighbour completed."""
    assert outcome and outcome[0].success
    checks = pipeline.check_results(outcome[0].run_id)
    assert checks and all(checks.values()), checks
    assert pipeline.jobs()["notes.md"]["state"] == "deleted"
    assert chunk_versions(pipeline, "notes.md") == {}
    assert pipeline.jobs()["stays.md"]["state"] == "completed"


def test_a_file_deleted_while_it_is_embedded_stays_deleted(pipeline: Pipeline) -> None:
    pipeline.write("notes.md", NOTES)
    pipeline.write("stays.md", "Kept: the tide tables for the harbour mouth.")
    (batch,) = batch_keys(tick(pipeline, None))
    pipeline.embedder.set_latency(1500.0)  # time to delete the file mid-embedding
    outcome: list[BatchOutcome] = []
    runner = threading.Thread(target=lambda: outcome.append(pipeline.run(batch)))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while {j["state"] for j in pipeline.jobs().values()} != {"chunked"}:
            assert time.monotonic() < deadline, "the documents were never chunked"
            time.sleep(0.02)
        pipeline.delete("notes.md")
        tick(pipeline, None)
        assert pipeline.jobs()["notes.md"]["state"] == "deleted"
    finally:
        runner.join(timeout=30)
    _assert_deleted_stays_deleted(pipeline, outcome)


def test_ingest_pending_keeps_to_the_configured_batch_size(pipeline: Pipeline) -> None:
    for i in range(5):
        pipeline.write(f"part{i}.txt", f"Part {i} of the serial about lighthouse number {i}.")
    resources = pipeline.with_settings(batch_max_files=2)

    outcomes = ingest_pending(resources=resources, instance=pipeline.instance)
    assert [o.success for o in outcomes] == [True] * 3
    sizes = pipeline.rows(
        "SELECT count(*) AS n FROM {S}.upload_jobs GROUP BY batch_key ORDER BY n DESC"
    )
    assert [r["n"] for r in sizes] == [2, 2, 1]
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}


def test_batches_are_spread_evenly_over_the_runs_that_process_them(
    pipeline: Pipeline, monkeypatch: Any
) -> None:
    """Five files, four a batch, two runs at once: 3 + 2, not 4 + 1 (which would leave one
    run working alone on the long batch)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for i in range(5):
        pipeline.write(f"part{i}.txt", f"Part {i} of the serial about lighthouse number {i}.")
    outcomes = ingest_pending(resources=pipeline.with_settings(batch_max_files=4), runs=2)
    assert [o.success for o in outcomes] == [True, True]
    sizes = pipeline.rows(
        "SELECT count(*) AS n FROM {S}.upload_jobs GROUP BY batch_key ORDER BY n DESC"
    )
    assert [r["n"] for r in sizes] == [3, 2]


@pytest.mark.parametrize(
    ("files", "max_files", "spread_over", "size"),
    [
        (300, 200, 2, 150),  # two batches: even
        (300, 200, 1, 150),  # two batches either way: even
        (1000, 200, 2, 167),  # five batches would leave the fifth alone: six
        (1000, 200, 1, 200),
        (3, 200, 2, 2),  # fewer files than a batch each run: still two batches
        (1, 200, 4, 1),  # never more batches than files
        (0, 200, 2, 200),
    ],
)
def test_even_batch_size(files: int, max_files: int, spread_over: int, size: int) -> None:
    assert even_batch_size(files, max_files, spread_over) == size


def test_without_a_shared_instance_two_batches_run_at_once_and_both_complete(
    pipeline: Pipeline, monkeypatch: Any
) -> None:
    """`docpipe ingest --wait` runs DOCPIPE_INGEST_RUNS batches at once, each run with an
    instance of its own; a caller's instance is shared, so its batches go one at a time."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # each run: an ephemeral instance
    for i in range(6):
        pipeline.write(f"set-a/notes-{i}.txt", f"{NOTES} Loaf number {i}.")
    resources = pipeline.with_settings(batch_max_files=2)

    # three batches, two at a time: the third reuses the instance of whichever finished
    outcomes = ingest_pending(resources=resources, runs=2)

    assert [o.success for o in outcomes] == [True, True, True]
    assert len({o.batch_key for o in outcomes}) == 3
    first, second, _ = sorted(outcomes, key=lambda o: o.started)
    assert second.started < first.ended  # they overlapped
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}

    for i in range(4):
        pipeline.write(f"set-b/notes-{i}.txt", f"{NOTES} Bake number {i}.")
    shared = ingest_pending(resources=resources, instance=pipeline.instance, runs=2)
    assert [o.success for o in shared] == [True, True]
    first, second = sorted(shared, key=lambda o: o.started)
    assert second.started >= first.ended  # one instance: one run at a time
    assert len(pipeline.jobs()) == 10
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}
