import asyncio

import dagster as dg

from docpipe_dagster.defs.metadata import report_metadata
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import (
    DatabaseResource,
    ParserResource,
    PipelineSettings,
    StorageResource,
)
from docpipe_dagster.pipeline.parse import parse_documents


@dg.asset(
    partitions_def=batch_partitions,
    deps=["raw_documents"],
    group_name="ingestion",
    kinds={"llamaparse"},
    pool="parser",  # one provider limit shared by all concurrent batch runs
    description=(
        "Markdown of each document (LlamaParse v1 API). Cached by content hash: the same "
        "bytes are never parsed twice."
    ),
)
def parsed_documents(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    storage: StorageResource,
    parser: ParserResource,
    pipeline_settings: PipelineSettings,
) -> dg.MaterializeResult:
    async def run():
        async with parser.client() as client:
            return await parse_documents(
                database.store(),
                storage.open(),
                client,
                context.partition_key,
                profile=parser.profile,
                max_attempts=pipeline_settings.max_attempts,
                retry_base_seconds=pipeline_settings.retry_base_seconds,
            )

    report = asyncio.run(run())
    return dg.MaterializeResult(metadata=report_metadata(report))
