import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.metadata import (
    record_provider_run,
    record_stage_run,
    report_metadata,
    run_or_fail_fast,
)
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
        "Markdown of each document: LlamaParse (v2 API) for layout types, the in-process "
        "backend for text-like ones (DOCPIPE_PARSE_LOCALLY). Cached by content hash: the "
        "same bytes are never parsed twice."
    ),
)
@correlated
def parsed_documents(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    storage: StorageResource,
    parser: ParserResource,
    pipeline_settings: PipelineSettings,
) -> dg.MaterializeResult:
    async def run():
        async with parser.client() as client:
            try:
                return await parse_documents(
                    database.store(),
                    storage.open(),
                    client,
                    context.partition_key,
                    profile=parser.profile,
                    max_attempts=pipeline_settings.max_attempts,
                    retry_base_seconds=pipeline_settings.retry_base_seconds,
                    routes=parser.routing,
                    result_type=parser.result_type,
                )
            finally:
                record_provider_run(database.store(), client)

    report = run_or_fail_fast(run)
    record_stage_run(database.store(), report, context.partition_key)
    return dg.MaterializeResult(metadata=report_metadata(report))
