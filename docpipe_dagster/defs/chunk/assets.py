import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.metadata import record_stage_run, report_metadata
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import DatabaseResource, ParserResource, PipelineSettings
from docpipe_dagster.pipeline.chunk import chunk_documents


@dg.asset(
    partitions_def=batch_partitions,
    deps=["parsed_documents"],
    group_name="ingestion",
    kinds={"python"},
    description=(
        "Heading-, paragraph- and sentence-aware chunks staged in document_chunk_buffer, "
        "with ids UUIDv5(document, content hash, index)."
    ),
)
@correlated
def document_chunks(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    parser: ParserResource,
    pipeline_settings: PipelineSettings,
) -> dg.MaterializeResult:
    report = chunk_documents(
        database.store(),
        context.partition_key,
        profile=parser.profile,
        config=pipeline_settings.chunking(),
        routes=parser.routing,
        result_type=parser.result_type,
    )
    record_stage_run(database.store(), report, context.partition_key)
    return dg.MaterializeResult(metadata=report_metadata(report))
