"""Recovery follows the service and the run, not the stale timer; parked documents are visible.

A parser (or embedder) answering 503 parks the batch's documents: `docpipe status` (text and
JSON), `docpipe validate`'s check, the documents view and `docpipe verify` all say they wait
for that service; parked_documents_sensor leaves them while it is down and re-launches them on the first
tick that finds it healthy. A run that failed for another reason and that Dagster will not
retry is re-queued by dead_run_sensor at once; after DOCPIPE_MAX_ATTEMPTS dead runs its
documents end failed with the reason. (The same under the daemon, with real processes and
timings: docpipe_dagster_tests/deploy/test_topology.py.)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner

from docpipe_dagster.cli import main as cli_main
from docpipe_dagster.defs.documents.views import document_status_sensor
from docpipe_dagster.defs.intake.recovery import (
    dead_run_sensor,
    park_pause_seconds,
    parked_documents_sensor,
)
from docpipe_dagster.defs.resources import FolderStorageResource, PipelineSettings
from docpipe_dagster.health import parked_check
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster.store.parked import DEAD_RUN_REASON
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick

DOCS = 12


def _write_docs(pipeline: Pipeline, prefix: str = "parked") -> None:
    for i in range(DOCS):
        pipeline.write(f"{prefix}/doc-{i:02d}.md", f"# Doc {i}\n\nParagraph {i} on topic {i}.\n")


def _parked_tick(pipeline: Pipeline, **settings: Any) -> dg.SensorResult:
    resources = {
        **pipeline.resources,
        "pipeline_settings": PipelineSettings(settle_seconds=0.0, **settings),
    }
    with dg.build_sensor_context(resources=resources, instance=pipeline.instance) as context:
        result = parked_documents_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(cli_main, list(args), catch_exceptions=False)
    return result


def test_a_parser_outage_parks_documents_in_plain_sight_and_its_end_relaunches_them(
    pipeline: Pipeline,
) -> None:
    pipeline.parse_remotely()  # .md goes to the parser (text-like types are local by default)
    _write_docs(pipeline)
    pipeline.parser.set_faults({"kind": "http_503"})
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert not outcome.success

    with pipeline.store() as store:
        (waiting,) = store.parked_services()
    assert (waiting.service, waiting.documents) == ("parser", DOCS)
    assert "503" in waiting.reason
    assert datetime.now(timezone.utc) - waiting.since < timedelta(minutes=1)

    # `docpipe status`, text and JSON
    text = _cli("status")
    assert text.exit_code == 0, text.output
    assert f"{DOCS} waiting for parser (unavailable since " in text.output
    assert "docpipe ingest <folder> --wait" in text.output
    shown = json.loads(_cli("status", "--json").output)
    assert shown["waiting"][0]["service"] == "parser"
    assert shown["waiting"][0]["documents"] == DOCS

    retry = _cli("retry", "--all-failed")
    assert "nothing to retry" in retry.output
    assert f"{DOCS} waiting for parser" in retry.output and "not failed" in retry.output

    # `docpipe validate` names the service as the cause
    check = parked_check(pipeline.database_url)
    assert check is not None and not check.ok
    assert f"{DOCS} waiting for parser" in check.detail and "503" in check.detail

    # the documents view in the UI
    with dg.build_sensor_context(
        resources=pipeline.resources, instance=pipeline.instance
    ) as context:
        view = document_status_sensor(context)
    (observation,) = view.asset_events
    metadata = observation.metadata
    assert metadata["documents_waiting_for_parser"].value == DOCS
    assert f"{DOCS} waiting for parser" in metadata["waiting"].value
    states = {r.data["state"] for r in metadata["documents"].value.records}
    assert states == {"uploaded (waiting for parser)"}

    # `docpipe verify`: the run that parked them is over, yet they are not stranded
    with psycopg.connect(pipeline.database_url) as conn:
        report = check_invariants(conn, run_states={outcome.batch_key: "dead"})
    assert report.ok, report.render()
    assert report.waiting == DOCS and "waiting for a service" in report.render()

    # still down: the sensor leaves them and says so
    quiet = _parked_tick(pipeline)
    assert not quiet.run_requests
    assert f"{DOCS} waiting for parser" in (quiet.skip_reason or "")

    # back: the next tick re-launches them, the run completes them all
    pipeline.parser.clear_faults()
    resumed = _parked_tick(pipeline)
    keys = batch_keys(resumed)
    assert keys and all(k.startswith("resume-") for k in keys)
    for key in keys:
        assert pipeline.run(key).success
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}
    with pipeline.store() as store:
        assert store.parked_services() == []
    assert parked_check(pipeline.database_url) is None


def test_an_embedder_outage_parks_chunked_documents_until_it_answers(pipeline: Pipeline) -> None:
    _write_docs(pipeline, "emb")
    pipeline.embedder.set_faults({"kind": "http_503"})
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert not outcome.success
    with pipeline.store() as store:
        (waiting,) = store.parked_services()
    assert (waiting.service, waiting.documents) == ("embedder", DOCS)
    assert {j["state"] for j in pipeline.jobs().values()} == {"chunked"}

    pipeline.embedder.clear_faults()
    keys = batch_keys(_parked_tick(pipeline))
    assert keys
    for key in keys:
        assert pipeline.run(key).success
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}


def test_a_service_that_fails_again_and_again_is_retried_with_a_growing_pause() -> None:
    assert park_pause_seconds(1, 30) == 0
    assert park_pause_seconds(2, 30) == 30
    assert park_pause_seconds(4, 30) == 120
    assert park_pause_seconds(50, 30) == 600


class BrokenStorage(FolderStorageResource):
    """Storage that cannot be opened: the run's first step fails, as a crash would."""

    def open(self):  # type: ignore[override]
        raise RuntimeError("storage mount vanished")


def _failed_run_context(pipeline: Pipeline, batch: str, resources: dict[str, Any]) -> Any:
    outcome = pipeline.run(batch, resources)
    assert not outcome.success
    run = pipeline.instance.get_run_by_id(outcome.run_id)
    assert run is not None
    (failure,) = pipeline.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name="dead_run_sensor",
        dagster_event=failure.dagster_event,
        dagster_instance=pipeline.instance,
        dagster_run=run,
        resources=pipeline.resources,
    ).for_run_failure()


@pytest.mark.parametrize("dead_runs_before", [0, 3])
def test_a_dead_run_is_requeued_at_once_and_a_run_that_keeps_dying_fails_its_documents(
    pipeline: Pipeline, dead_runs_before: int
) -> None:
    _write_docs(pipeline, "dead")
    (batch,) = batch_keys(tick(pipeline, None))
    broken = {
        **pipeline.resources,
        "storage": BrokenStorage(root=str(pipeline.storage_dir)),
    }
    context = _failed_run_context(pipeline, batch, broken)
    with pipeline.store() as store:
        ids = store.in_flight_in_batch(batch)
        assert len(ids) == DOCS
        for _ in range(dead_runs_before):
            store.move_to_batch(ids, batch, f"{DEAD_RUN_REASON} (earlier)")

    with context as entered:
        result = dead_run_sensor(entered)
    if dead_runs_before >= 3:  # DOCPIPE_MAX_ATTEMPTS
        assert isinstance(result, dg.SkipReason)
        jobs = pipeline.jobs().values()
        assert {j["state"] for j in jobs} == {"failed"}
        reason = next(iter(jobs))["failure_reason"]
        assert DEAD_RUN_REASON in reason and "storage mount vanished" in reason, reason
        return
    assert isinstance(result, dg.SensorResult)
    (key,) = batch_keys(result)
    assert key.startswith("resume-")
    assert pipeline.run(key).success
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}
