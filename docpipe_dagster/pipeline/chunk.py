"""Split parsed markdown into chunks and stage them; ids are stable UUIDv5s."""

from __future__ import annotations

from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.core.hashing import sha256_text
from docpipe_dagster.core.ids import chunk_id
from docpipe_dagster.pipeline.report import StageReport
from docpipe_dagster.store.queries import ChunkRow, Store


def chunk_documents(
    store: Store, batch_key: str, *, profile: str, config: ChunkingConfig
) -> StageReport:
    report = StageReport("chunk")
    jobs = store.jobs_in_batch(batch_key, ["parsed"])
    report.skipped = len(store.jobs_in_batch(batch_key)) - len(jobs)
    report.documents = len(jobs)
    for job in jobs:
        markdown = store.parsed_markdown(job, profile)
        if markdown is None:
            reason = (
                "parsed text is missing from the parse cache; the document will be parsed again"
            )
            store.mark_failed(job.job_id, "chunk", reason, code="PARSE_CACHE_MISS", retryable=True)
            report.fail(job.storage_key, reason)
            continue
        chunks = split_into_chunks(markdown, config)
        if not chunks:
            reason = "the document has no text to index (empty or whitespace only after parsing)"
            store.mark_failed(job.job_id, "chunk", reason, code="NO_CHUNKS", retryable=False)
            report.fail(job.storage_key, reason)
            continue
        rows = [
            ChunkRow(
                chunk_id=chunk_id(job.document_id, job.content_sha256, c.index),
                job_id=job.job_id,
                chunk_index=c.index,
                content=c.text,
                text_sha256=sha256_text(c.text),
                token_estimate=c.token_estimate,
                heading_path=c.heading_path,
                char_start=c.start,
                char_end=c.end,
            )
            for c in chunks
        ]
        tokens = sum(c.token_estimate for c in chunks)
        store.save_chunks(job, rows, tokens)
        report.succeeded += 1
        report.count("chunks", len(rows))
        report.count("tokens_estimated", tokens)
    return report.finish()
