from __future__ import annotations

import dagster as dg

from docpipe_dagster.defs.partitions import INGEST_JOB, batch_partitions

ingest_batch = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.groups("ingestion"),
    partitions_def=batch_partitions,
    description="Process one batch: raw -> parsed -> chunks -> embeddings -> searchable.",
)
