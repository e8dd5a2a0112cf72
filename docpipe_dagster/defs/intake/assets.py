import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.metadata import record_stage_run, report_metadata
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import DatabaseResource, PipelineSettings
from docpipe_dagster.pipeline.intake import check_raw_documents


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingestion",
    kinds={"storage"},
    description=(
        "The batch's files as registered by the storage sensor, which read and hashed each "
        "once and failed those of a type the configured parsers do not read or whose "
        "content contradicts their name. Files over the size limit fail here; a file "
        "changed or removed since registration is caught where parsing reads it."
    ),
)
@correlated
def raw_documents(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    pipeline_settings: PipelineSettings,
) -> dg.MaterializeResult:
    report = check_raw_documents(
        database.store(), context.partition_key, max_file_bytes=pipeline_settings.max_file_bytes
    )
    record_stage_run(database.store(), report, context.partition_key)
    return dg.MaterializeResult(metadata=report_metadata(report))
