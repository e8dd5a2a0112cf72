"""The Definitions the daemon loads are the ones `docpipe ingest` and the tests run."""

from __future__ import annotations

import dagster as dg

from docpipe_dagster.definitions import defs
from docpipe_dagster.defs.partitions import INGEST_JOB
from docpipe_dagster.runner import ingest_job

PIPELINE = [
    "raw_documents",
    "parsed_documents",
    "document_chunks",
    "chunk_embeddings",
    "searchable_chunks",
]


def test_defs_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs())


def test_the_runner_executes_the_production_job() -> None:
    job = ingest_job()
    assert job.name == INGEST_JOB
    assert job.executor_def is dg.in_process_executor
    keys = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert keys == set(PIPELINE)
    assert set(job.resource_defs) >= {"database", "storage", "parser", "embedder"}
    sensors = {s.name for s in defs().sensors or []}
    assert {"storage_intake_sensor", "retry_sensor", "service_health_sensor"} <= sensors
