"""Runs are per batch of documents, not per document: a run launch costs seconds."""

from __future__ import annotations

import dagster as dg

BATCHES = "batches"
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

INGEST_JOB = "ingest_batch"
