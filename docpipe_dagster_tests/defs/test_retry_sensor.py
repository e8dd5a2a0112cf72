"""retry_sensor: transient failures come back in a new batch; permanent ones and the dead
letters stay failed. The embedder mock answers 503 to make the failures real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dagster as dg
import pytest

from docpipe_dagster.clients.embeddings import EmbeddingsClient
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster.defs.intake.sensors import retry_sensor
from docpipe_dagster.defs.partitions import BATCHES
from docpipe_dagster.defs.resources import EmbedderResource, PipelineSettings
from docpipe_dagster.runner import ingest_job, ingest_pending
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick

MAX_ATTEMPTS = 3
GOOD = {
    "alpha.md": "# Alpha\n\nAlpine meadows bloom with gentians in early summer.\n",
    "beta.txt": "Beta testers reported the kettle whistles before the water boils.",
}


class QuickRetryEmbedder(EmbedderResource):
    """The real embedder resource, but its client gives up after two quick attempts.

    (EmbedderResource has no retry knob; the client's default of six attempts with
    jittered backoff would spend seconds on every 503.)
    """

    @asynccontextmanager
    async def client(self) -> AsyncIterator[EmbeddingsClient]:
        async with EmbeddingsClient(
            self.base_url,
            self.api_key,
            self.model,
            timeout_s=5.0,
            retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.01, jitter=False),
        ) as client:
            yield client


@pytest.fixture
def resources(pipeline: Pipeline) -> dict[str, Any]:
    embedder = pipeline.resources["embedder"]
    return {
        **pipeline.resources,
        "embedder": QuickRetryEmbedder(
            base_url=embedder.base_url, api_key=embedder.api_key, model=embedder.model
        ),
        "pipeline_settings": PipelineSettings(
            settle_seconds=0.0, retry_base_seconds=0.0, max_attempts=MAX_ATTEMPTS
        ),
    }


def retry_tick(pipeline: Pipeline, resources: dict[str, Any]) -> dg.SensorResult:
    with dg.build_sensor_context(resources=resources, instance=pipeline.instance) as context:
        result = retry_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requeued_batch(result: dg.SensorResult, prefix: str = "retry-") -> str:
    """The single batch a tick asked to run, with its partition added."""
    (request,) = result.run_requests or []
    assert request.partition_key is not None and request.partition_key.startswith(prefix)
    assert request.run_key == request.partition_key
    (added,) = result.dynamic_partitions_requests or []
    assert isinstance(added, dg.AddDynamicPartitionsRequest)
    assert added.partitions_def_name == BATCHES
    assert list(added.partition_keys or []) == [request.partition_key]
    return request.partition_key


def test_transient_failures_are_requeued_and_then_complete(
    pipeline: Pipeline, resources: dict[str, Any]
) -> None:
    for key, text in GOOD.items():
        pipeline.write(key, text)
    pipeline.write("setup.exe", b"MZ\x90\x00" + bytes(200))
    pipeline.embedder.set_faults({"kind": "http_503"})

    (first,) = ingest_pending(resources=resources, instance=pipeline.instance)
    assert first.success  # document failures do not fail the run
    assert pipeline.embedder.stats()["by_status"].get("503", 0) >= 2
    jobs = pipeline.jobs()
    for key in GOOD:
        job = jobs[key]
        assert (job["state"], job["failed_stage"], job["retryable"]) == ("failed", "embed", True)
        assert job["attempts"] == 1 and job["next_attempt_at"] is not None
        assert "503" in job["failure_reason"]
    unsupported = jobs["setup.exe"]
    assert (unsupported["state"], unsupported["retryable"]) == ("failed", False)
    assert unsupported["next_attempt_at"] is None
    assert pipeline.check_results(first.run_id)["batch_settled"] is True

    pipeline.embedder.clear_faults()
    parser_calls = pipeline.parser.stats()["total"]
    batch = requeued_batch(retry_tick(pipeline, resources))

    jobs = pipeline.jobs()
    for key in GOOD:
        assert (jobs[key]["state"], jobs[key]["batch_key"]) == ("uploaded", batch)
        assert jobs[key]["next_attempt_at"] is None
    # The permanent failure is never re-queued.
    assert jobs["setup.exe"]["state"] == "failed"
    assert jobs["setup.exe"]["batch_key"] == first.batch_key
    retry_events = pipeline.rows("SELECT job_id FROM {S}.events WHERE event_type = 'retry'")
    assert {r["job_id"] for r in retry_events} == {jobs[k]["job_id"] for k in GOOD}

    assert pipeline.run(batch, resources).success
    jobs = pipeline.jobs()
    for key in GOOD:
        assert jobs[key]["state"] == "completed"
        assert jobs[key]["failure_reason"] is None
    assert pipeline.search(GOOD["beta.txt"], k=1)[0].storage_key == "beta.txt"
    assert pipeline.parser.stats()["total"] == parser_calls  # the retry hit the parse cache

    # Nothing left to retry: the unsupported file stays where it is.
    idle = retry_tick(pipeline, resources)
    assert not idle.run_requests and idle.skip_reason is not None
    assert pipeline.jobs()["setup.exe"]["state"] == "failed"


def test_after_the_last_attempt_a_document_stays_failed(
    pipeline: Pipeline, resources: dict[str, Any]
) -> None:
    pipeline.write("alpha.md", GOOD["alpha.md"])
    pipeline.embedder.set_faults({"kind": "http_503"})

    ingest_pending(resources=resources, instance=pipeline.instance)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        batch = requeued_batch(retry_tick(pipeline, resources))
        assert pipeline.run(batch, resources).success
        job = pipeline.jobs()["alpha.md"]
        assert (job["state"], job["attempts"]) == ("failed", attempt)

    job = pipeline.jobs()["alpha.md"]
    assert job["retryable"] is True and job["next_attempt_at"] is None  # dead letter
    last = pipeline.rows(
        "SELECT payload FROM {S}.events WHERE job_id = %s AND event_type = 'failed'"
        " ORDER BY event_id",
        (job["job_id"],),
    )
    assert [e["payload"]["attempts"] for e in last] == list(range(1, MAX_ATTEMPTS + 1))
    assert last[-1]["payload"]["next_attempt_at"] is None

    # Even once the service is back, the dead letter is not picked up again.
    pipeline.embedder.clear_faults()
    idle = retry_tick(pipeline, resources)
    assert not idle.run_requests and idle.skip_reason is not None
    assert pipeline.jobs()["alpha.md"]["state"] == "failed"
    with pipeline.store() as store:
        (failure,) = store.status()["failures"]
    assert failure["storage_key"] == "alpha.md" and failure["retry_scheduled"] is False


def test_documents_stuck_in_flight_resume_in_a_new_batch(
    pipeline: Pipeline, resources: dict[str, Any]
) -> None:
    for key, text in GOOD.items():
        pipeline.write(key, text)
    (batch,) = batch_keys(tick(pipeline, None, resources))
    # A run that got as far as parsing, then died.
    pipeline.instance.add_dynamic_partitions(BATCHES, [batch])
    partial = ingest_job(resources).execute_in_process(
        partition_key=batch,
        instance=pipeline.instance,
        asset_selection=[dg.AssetKey("raw_documents"), dg.AssetKey("parsed_documents")],
    )
    assert partial.success
    assert {j["state"] for j in pipeline.jobs().values()} == {"parsed"}
    assert (
        pipeline.execute("UPDATE {S}.upload_jobs SET updated_at = now() - interval '1 hour'") == 2
    )

    # While a run of the batch is still live, nothing is touched.
    live = pipeline.instance.add_run(
        dg.DagsterRun(
            job_name="ingest_batch",
            tags={"dagster/partition": batch},
            status=dg.DagsterRunStatus.STARTED,
        )
    )
    assert not retry_tick(pipeline, resources).run_requests
    assert {j["batch_key"] for j in pipeline.jobs().values()} == {batch}

    pipeline.instance.delete_run(live.run_id)
    resumed = requeued_batch(retry_tick(pipeline, resources), prefix="resume-")
    jobs = pipeline.jobs()
    assert {(j["state"], j["batch_key"]) for j in jobs.values()} == {("parsed", resumed)}
    moved = pipeline.rows("SELECT job_id FROM {S}.events WHERE event_type = 'rebatched'")
    assert sorted(r["job_id"] for r in moved) == sorted(j["job_id"] for j in jobs.values())

    parser_calls = pipeline.parser.stats()["total"]
    assert pipeline.run(resumed, resources).success
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}
    assert pipeline.parser.stats()["total"] == parser_calls  # resumed after parsing

    # A job that settled in the meantime is not moved, and no event says it was.
    with pipeline.store() as store:
        assert store.move_to_batch([jobs["alpha.md"]["job_id"]], "resume-late", "test") == 0
    assert len(pipeline.rows("SELECT 1 FROM {S}.events WHERE event_type = 'rebatched'")) == 2


def test_a_dead_letter_retried_from_the_ui_is_launched_by_the_retry_sensor(
    pipeline: Pipeline, resources: dict[str, Any]
) -> None:
    from docpipe_dagster.defs.intake.retry_job import retry_failed_documents

    pipeline.write("alpha.md", GOOD["alpha.md"])
    pipeline.embedder.set_faults({"kind": "insufficient_quota"})  # permanent: dead letter
    ingest_pending(resources=resources, instance=pipeline.instance)
    assert pipeline.jobs()["alpha.md"]["state"] == "failed"
    assert not retry_tick(pipeline, resources).run_requests  # nothing automatic revives it
    pipeline.embedder.clear_faults()

    result = retry_failed_documents.execute_in_process(
        run_config={
            "ops": {"requeue_failed_documents": {"config": {"storage_keys": ["alpha.md"]}}}
        },
        resources={"database": resources["database"]},
        instance=pipeline.instance,
    )
    assert result.success and result.output_for_node("requeue_failed_documents") == 1
    job = pipeline.jobs()["alpha.md"]
    assert (job["state"], job["attempts"]) == ("uploaded", 0)

    batch = requeued_batch(retry_tick(pipeline, resources), prefix="requeue-")
    assert batch == job["batch_key"]
    assert pipeline.run(batch, resources).success
    assert pipeline.jobs()["alpha.md"]["state"] == "completed"
    # Once its run exists the sensor does not launch it again.
    assert not retry_tick(pipeline, resources).run_requests


def test_an_upload_whose_launch_failed_is_launched_once_it_is_old_enough(
    pipeline: Pipeline, resources: dict[str, Any]
) -> None:
    """The API registered an upload (batch `upload-...`) but could not launch its run: the
    sensor leaves it alone while a launch may still be in flight, then launches it once."""
    from docpipe_dagster.clients.storage.folder import FolderStorage
    from docpipe_dagster.pipeline.intake import register_upload

    data = GOOD["alpha.md"].encode()
    stored = FolderStorage(pipeline.storage_dir).write("alpha.md", data)
    with pipeline.store() as store:
        registration = register_upload(store, stored, data)
    assert registration.needs_run and registration.batch_key
    assert not retry_tick(pipeline, resources).run_requests  # a launch may be in flight

    pipeline.execute(
        "UPDATE {S}.upload_jobs SET registered_at = now() - interval '1 minute'"
        " WHERE batch_key = %s",
        (registration.batch_key,),
    )
    batch = requeued_batch(retry_tick(pipeline, resources), prefix="upload-")
    assert batch == registration.batch_key
    assert pipeline.run(batch, resources).success
    assert pipeline.jobs()["alpha.md"]["state"] == "completed"
    assert not retry_tick(pipeline, resources).run_requests  # it has a run: never again
    # and the intake sensor, which sees the same file, registers nothing
    assert not batch_keys(tick(pipeline, None, pipeline.with_settings()))
