"""Split parsed markdown into chunks and stage them; ids are stable UUIDv5s.

Documents are handled in groups: one query reads a group's parsed text, one transaction
stages its chunks (one COPY) and moves its jobs to `chunked`.
"""

from __future__ import annotations

from docpipe_dagster.clients.parsing import Routing, routing
from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.core.hashing import sha256_text
from docpipe_dagster.core.ids import chunk_id
from docpipe_dagster.core.pages import page_ranges
from docpipe_dagster.core.text import normalise_text
from docpipe_dagster.pipeline.local_parse import local_profile
from docpipe_dagster.pipeline.report import StageReport, batch_jobs, fail_job
from docpipe_dagster.store.queries import ChunkRow, JobRow, Store


def chunk_documents(
    store: Store,
    batch_key: str,
    *,
    profile: str,
    config: ChunkingConfig,
    group_size: int = 50,
    routes: Routing | None = None,
    result_type: str = "markdown",
) -> StageReport:
    """`profile` is the parser's parse-cache profile; files `routes` parses locally are read
    from the local profile instead, as the parse stage wrote them."""
    routes = routes or routing("text")
    report = StageReport("chunk")
    jobs = batch_jobs(store, batch_key, ["parsed"], report)
    by_profile: dict[str, list[JobRow]] = {}
    for job in jobs:
        local = routes.is_local(job.storage_key)
        by_profile.setdefault(local_profile(result_type) if local else profile, []).append(job)
    for job_profile, group in by_profile.items():
        for start in range(0, len(group), group_size):
            _chunk_group(store, group[start : start + group_size], job_profile, config, report)
    return report.finish()


def _chunk_group(
    store: Store, jobs: list[JobRow], profile: str, config: ChunkingConfig, report: StageReport
) -> None:
    parses = store.cached_parses((job.content_sha256 for job in jobs), profile)
    items: list[tuple[JobRow, list[ChunkRow], int]] = []
    for job in jobs:
        parsed = parses.get(job.content_sha256)
        if parsed is None:
            reason = (
                "parsed text is missing from the parse cache; the document will be parsed again"
            )
            fail_job(store, report, job, reason, code="PARSE_CACHE_MISS", retryable=True)
            continue
        markdown, page_count = parsed
        # Offsets are into the normalised text, so the page separators are looked up there.
        text = normalise_text(markdown)
        chunks = split_into_chunks(text, config, normalised=True)
        if not chunks:
            reason = "the document has no text to index (empty or whitespace only after parsing)"
            fail_job(store, report, job, reason, code="NO_CHUNKS")
            continue
        pages = page_ranges(text, page_count or 0, [(c.start, c.end) for c in chunks])
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
                page_start=p[0] if p else None,
                page_end=p[1] if p else None,
            )
            for c, p in zip(chunks, pages, strict=True)
        ]
        items.append((job, rows, sum(c.token_estimate for c in chunks)))
    saved = store.save_chunks(items)
    for job, rows, tokens in items:
        if job.job_id not in saved:
            report.count("settled_meanwhile")  # deleted or superseded since listed
            continue
        report.succeeded += 1
        report.count("chunks", len(rows))
        report.count("tokens_estimated", tokens)
