from collections.abc import Iterator

import dagster as dg

from docpipe_dagster.defs.correlation import correlated
from docpipe_dagster.defs.metadata import (
    record_provider_run,
    record_stage_run,
    report_metadata,
    run_or_fail_fast,
)
from docpipe_dagster.defs.partitions import batch_partitions
from docpipe_dagster.defs.resources import DatabaseResource, EmbedderResource, PipelineSettings
from docpipe_dagster.pipeline.embed import embed_chunks

VECTORS_MATCH_CHUNKS = "vectors_match_chunks"
DIMENSIONS_MATCH_MODEL = "dimensions_match_model"


@dg.asset(
    partitions_def=batch_partitions,
    deps=["document_chunks"],
    group_name="ingestion",
    kinds={"openai"},
    pool="embedder",  # one provider limit shared by all concurrent batch runs
    description=(
        "One vector per staged chunk (OpenAI embeddings API), staged in "
        "document_vector_buffer. The embedding cache is looked up first: the same text is "
        "never paid for twice."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            VECTORS_MATCH_CHUNKS,
            asset="chunk_embeddings",
            blocking=True,
            description="Every staged chunk of an embedded document has exactly one vector.",
        ),
        dg.AssetCheckSpec(
            DIMENSIONS_MATCH_MODEL,
            asset="chunk_embeddings",
            blocking=True,
            description="Every staged vector belongs to the configured model and dimension.",
        ),
    ],
)
@correlated
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedder: EmbedderResource,
    pipeline_settings: PipelineSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    store = database.store()
    space = embedder.space()

    async def run():
        async with embedder.client() as client:
            try:
                return await embed_chunks(
                    store,
                    client,
                    context.partition_key,
                    space=space,
                    max_attempts=pipeline_settings.max_attempts,
                    retry_base_seconds=pipeline_settings.retry_base_seconds,
                )
            finally:
                record_provider_run(store, client)

    report = run_or_fail_fast(run)
    record_stage_run(store, report, context.partition_key)
    yield dg.MaterializeResult(
        metadata=report_metadata(report, model=embedder.model, dimensions=space.dims)
    )
    check = store.embedding_check(context.partition_key, space)
    yield dg.AssetCheckResult(
        check_name=VECTORS_MATCH_CHUNKS,
        passed=check.chunks_without_vector == 0,
        metadata={
            "chunks_without_vector": check.chunks_without_vector,
            "vectors": check.vectors,
        },
    )
    yield dg.AssetCheckResult(
        check_name=DIMENSIONS_MATCH_MODEL,
        passed=check.vectors_wrong_space == 0,
        metadata={"vectors_wrong_space": check.vectors_wrong_space, "dimensions": space.dims},
    )
