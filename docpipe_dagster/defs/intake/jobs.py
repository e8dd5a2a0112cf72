from __future__ import annotations

import dagster as dg

from docpipe_dagster.defs.partitions import INGEST_JOB

ingest_batch = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.groups("ingestion"),
    description="Process one batch: raw -> parsed -> chunks -> embeddings -> searchable.",
)
