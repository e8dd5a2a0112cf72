"""The Prometheus metrics read from a real database after real runs: they agree with
`docpipe status`, count failures by stage and code, provider requests and 429s, the breaker."""

from __future__ import annotations

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from docpipe_dagster.metrics.collector import PipelineCollector
from docpipe_dagster.metrics.names import COUNTER_NAMES, OUTCOMES, SEARCHABLE_BOUNDS
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.metrics import (
    fold_tallies,
    record_health,
    searchable_bounds,
)
from docpipe_dagster_tests.defs.conftest import Pipeline


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name + sorted labels -> value, through the text format a Prometheus reads."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(lambda: psycopg.connect(url)))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_database_and_the_exporter_use_the_same_buckets(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert searchable_bounds(conn) == [float(b) for b in SEARCHABLE_BOUNDS]


def test_metrics_agree_with_status_after_runs_with_failures(pipeline: Pipeline) -> None:
    pipeline.parse_remotely()  # the .md files go to the parser mock: its 429s and 503s count
    for i in range(6):
        pipeline.write(f"m/doc-{i}.md", f"# Doc {i}\n\nParagraph {i} about metrics.\n")
    pipeline.write("m/empty.md", "")  # fails: nothing to chunk
    pipeline.write("m/blob.bin", b"\x00\x01\x02" * 10)  # fails: unsupported type
    # Two 429s before the parser answers: counted as rate_limited and retried.
    pipeline.parser.set_faults({"kind": "http_429", "count": 2, "retry_after": 0.01})
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert all(o.success for o in outcomes)

    samples = scrape(pipeline.database_url)
    with pipeline.store() as store:
        status = store.status()
    by_state = status["documents"]["by_state"]
    assert value(samples, "docpipe_database_up") == 1
    for state in ("completed", "failed", "uploaded"):
        assert value(samples, "docpipe_documents", state=state) == by_state.get(state, 0)
    assert value(samples, "docpipe_documents_completed_total") == by_state["completed"] == 6
    assert value(samples, "docpipe_chunks_committed_total") == status["chunks"]
    model, dims = pipeline.space().model, str(pipeline.space().dims)
    assert value(samples, "docpipe_vector_space_rows", model=model, dims=dims) == status["vectors"]
    failures = {(f["stage"], f["code"] or "none") for f in status["failures"]}
    assert len(failures) == 2
    for stage, code in failures:
        assert value(samples, "docpipe_document_failures_total", stage=stage, code=code) == 1
    dead = sum(1 for f in status["failures"] if not f["retry_scheduled"])
    assert value(samples, "docpipe_dead_letter_documents") == dead == 2
    assert value(samples, "docpipe_backlog_documents") == 0
    assert value(samples, "docpipe_upload_to_searchable_seconds_count") == 6
    assert value(samples, "docpipe_upload_to_searchable_seconds_bucket", le="+Inf") == 6
    assert value(samples, "docpipe_stage_batch_seconds_count", stage="commit") == len(outcomes)
    assert (
        value(samples, "docpipe_provider_requests_total", service="parser", outcome="rate_limited")
        == 2
    )
    assert value(samples, "docpipe_provider_retries_total", service="parser") >= 2
    assert value(samples, "docpipe_provider_requests_total", service="embedder", outcome="ok") >= 1
    assert value(samples, "docpipe_provider_breaker_open", service="parser") == 0
    assert value(samples, "docpipe_embedding_tokens_total") > 0
    _folding_changes_no_number(pipeline.database_url, samples)

    # The parser down: its breaker opens, the documents wait, nothing more is committed.
    pipeline.write("m/late.md", "# Late\n\nIt waits for the parser.\n")
    pipeline.parser.set_faults({"kind": "http_503"})
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert not outcome.success
    samples = scrape(pipeline.database_url)
    assert value(samples, "docpipe_provider_breaker_open", service="parser") == 1
    assert (
        value(samples, "docpipe_provider_requests_total", service="parser", outcome="server_error")
        >= 5
    )
    assert value(samples, "docpipe_backlog_documents") == 1
    assert value(samples, "docpipe_backlog_oldest_age_seconds") > 0
    assert value(samples, "docpipe_documents_completed_total") == 6


def test_health_probes_and_a_database_that_is_down(database_url: str) -> None:
    record_health(database_url, [("parser", True, 0.012), ("embedder", False, 5.0)])
    samples = scrape(database_url)
    assert value(samples, "docpipe_service_up", service="parser") == 1
    assert value(samples, "docpipe_service_up", service="embedder") == 0
    assert value(samples, "docpipe_service_probe_seconds", service="embedder") == 5.0
    down = scrape("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert value(down, "docpipe_database_up") == 0
    assert ("docpipe_documents", (("state", "completed"),)) not in down


TALLIES = ("job_state_tallies", "event_tallies", "space_row_tallies", "stage_runs", "provider_runs")


def _folding_changes_no_number(url: str, before: dict) -> None:
    """Folding the tally tables leaves fewer rows and every metric as it was."""
    with psycopg.connect(url) as conn:
        counts = [
            conn.execute(f"SELECT count(*) FROM upload_pipeline.{t}").fetchone()[0] for t in TALLIES
        ]
        fold_tallies(conn, TALLIES, COUNTER_NAMES, OUTCOMES)
        folded = [
            conn.execute(f"SELECT count(*) FROM upload_pipeline.{t}").fetchone()[0] for t in TALLIES
        ]
    assert sum(folded) < sum(counts), (counts, folded)
    after = scrape(url)
    moving = {"docpipe_metrics_read_seconds", "docpipe_backlog_oldest_age_seconds"}
    assert {k: v for k, v in after.items() if k[0] not in moving} == {
        k: v for k, v in before.items() if k[0] not in moving
    }
