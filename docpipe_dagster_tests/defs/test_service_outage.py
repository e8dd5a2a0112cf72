"""A dead service fails fast and costs no document an attempt: the circuit breaker, end to end.

The parser (or embedder) mock answers 503 to everything; the run gives up after a handful of
requests, every document stays queued with no attempt counted and no failure recorded, the
run's failure names the service; once the service is back the same ingest completes all."""

from __future__ import annotations

from docpipe_dagster.core.breaker import DEFAULT_THRESHOLD
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster_tests.defs.conftest import Pipeline

DOCS = 60


def _write_docs(pipeline: Pipeline) -> None:
    pipeline.parse_remotely()  # .md goes to the parser (text-like types are local by default)
    for i in range(DOCS):
        pipeline.write(
            f"outage/doc-{i:03d}.md", f"# Doc {i}\n\nParagraph {i} about topic {i % 7}.\n"
        )


def _run_failure_message(pipeline: Pipeline, run_id: str) -> str:
    import dagster as dg

    records = pipeline.instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    return " ".join(str(r.event_log_entry.dagster_event.event_specific_data.error) for r in records)


def test_a_parser_answering_503_stops_the_run_and_leaves_documents_queued(
    pipeline: Pipeline,
) -> None:
    _write_docs(pipeline)
    pipeline.parser.set_faults({"kind": "http_503"})
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert not outcome.success

    requests = pipeline.parser.stats()["total"]
    # Without the breaker: 60 documents x 5 attempts; with it, about the threshold plus the
    # requests already in flight when it opened.
    assert requests <= DEFAULT_THRESHOLD + 16, requests
    jobs = pipeline.jobs()
    assert {j["state"] for j in jobs.values()} == {"uploaded"}
    assert all(j["attempts"] == 0 and j["failure_reason"] is None for j in jobs.values())
    message = _run_failure_message(pipeline, outcome.run_id)
    assert "parser at" in message and "unavailable" in message and "503" in message, message
    assert f"{DOCS} documents left queued, no attempt used" in message
    events = pipeline.rows(
        "SELECT count(*) AS n FROM {S}.events WHERE event_type = 'service_unavailable'"
    )
    assert events[0]["n"] == DOCS

    pipeline.parser.clear_faults()
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert all(o.success for o in outcomes)
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}


def test_an_embedder_answering_503_leaves_documents_chunked_with_no_attempt_used(
    pipeline: Pipeline,
) -> None:
    _write_docs(pipeline)
    pipeline.embedder.set_faults({"kind": "http_503"})
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert not outcome.success
    assert pipeline.embedder.stats()["total"] <= DEFAULT_THRESHOLD + 8
    jobs = pipeline.jobs()
    assert {j["state"] for j in jobs.values()} == {"chunked"}
    assert all(j["attempts"] == 0 for j in jobs.values())
    assert "embedder at" in _run_failure_message(pipeline, outcome.run_id)

    pipeline.embedder.clear_faults()
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert all(o.success for o in outcomes)
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}
