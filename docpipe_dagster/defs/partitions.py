"""Runs are per batch of documents, not per document: a run launch costs seconds."""

from __future__ import annotations

import dagster as dg

from docpipe_dagster.clients.webserver import JOB_NAME, PARTITIONS_NAME

# One spelling, shared with the webserver client (which imports no Dagster).
BATCHES = PARTITIONS_NAME
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

INGEST_JOB = JOB_NAME


def batch_run_requests(batch_keys: list[str], reason: str) -> dict:
    """Run requests and the partition additions they need, for SensorResult(**...)."""
    return {
        "run_requests": [
            dg.RunRequest(partition_key=key, run_key=key, tags={"docpipe/reason": reason})
            for key in batch_keys
        ],
        "dynamic_partitions_requests": [batch_partitions.build_add_request(batch_keys)]
        if batch_keys
        else [],
    }
