import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.metadata import record_stage_run, report_metadata
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import (
    DatabaseResource,
    ParserResource,
    PipelineSettings,
    StorageResource,
)
from docpipe_dagster.pipeline.parse import check_raw_documents


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingestion",
    kinds={"storage"},
    description=(
        "The batch's files as registered by the storage sensor. Files that are gone, "
        "too large, of a type the configured parsers do not read, or whose content "
        "contradicts their name are settled here, before anything is paid for."
    ),
)
@correlated
def raw_documents(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    storage: StorageResource,
    pipeline_settings: PipelineSettings,
    parser: ParserResource,
) -> dg.MaterializeResult:
    report = check_raw_documents(
        database.store(),
        storage.open(),
        context.partition_key,
        max_file_bytes=pipeline_settings.max_file_bytes,
        routes=parser.routing,
    )
    record_stage_run(database.store(), report, context.partition_key)
    return dg.MaterializeResult(metadata=report_metadata(report))
