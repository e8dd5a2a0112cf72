"""Validate the batch's files, then parse them to markdown (LlamaParse contract).

The parse cache is keyed by content hash and parser profile: the same bytes are never
parsed twice, across documents, batches and re-runs.
"""

from __future__ import annotations

import asyncio
import time

from docpipe_dagster.clients.llamaparse import LlamaParseClient, ParseError
from docpipe_dagster.clients.storage import StorageBackend, StorageError
from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.media import unsupported_reason
from docpipe_dagster.pipeline.report import StageReport
from docpipe_dagster.store.queries import JobRow, Store


def check_raw_documents(
    store: Store,
    backend: StorageBackend,
    batch_key: str,
    *,
    max_file_bytes: int,
) -> StageReport:
    """Reject what cannot be parsed before paying for it: gone, changed, unsupported, too big."""
    report = StageReport("intake")
    for job in store.jobs_in_batch(batch_key, ["uploaded"]):
        report.documents += 1
        report.count("bytes", job.size_bytes)
        if job.size_bytes > max_file_bytes:
            reason = (
                f"file is {job.size_bytes / 1e6:.1f} MB, over the {max_file_bytes / 1e6:.0f} MB "
                "limit (DOCPIPE_MAX_FILE_BYTES)"
            )
            store.mark_failed(job.job_id, "intake", reason, code="TOO_LARGE", retryable=False)
            report.fail(job.storage_key, reason)
            continue
        try:
            data = backend.read(job.storage_key)
        except StorageError:
            data = None
        if data is None or not backend.exists(job.storage_key):
            store.mark_deleted(job.document_id, "file removed from storage before parsing")
            report.count("vanished")
            continue
        if sha256_bytes(data) != job.content_sha256:
            # the sensor registers the new content as a new version on its next tick
            store.set_state(job.job_id, "superseded", "intake", "changed_before_parse")
            report.count("changed_before_parse")
            continue
        reason = unsupported_reason(job.storage_key, data[:4096])
        if reason:
            store.mark_failed(job.job_id, "intake", reason, code="UNSUPPORTED", retryable=False)
            report.fail(job.storage_key, reason)
            continue
        report.succeeded += 1
    report.skipped = len(store.jobs_in_batch(batch_key)) - report.documents
    return report.finish()


def _read_verified(backend: StorageBackend, job: JobRow) -> bytes | None:
    """The registered version's bytes, or None when the file changed since registration."""
    data = backend.read(job.storage_key)
    return data if sha256_bytes(data) == job.content_sha256 else None


async def parse_documents(
    store: Store,
    backend: StorageBackend,
    client: LlamaParseClient,
    batch_key: str,
    *,
    profile: str,
    max_attempts: int,
    retry_base_seconds: float,
) -> StageReport:
    report = StageReport("parse")
    jobs = store.jobs_in_batch(batch_key, ["uploaded", "parsing"])
    report.skipped = len(store.jobs_in_batch(batch_key)) - len(jobs)
    report.documents = len(jobs)
    cached = store.cached_parses((j.content_sha256 for j in jobs), profile)
    misses: dict[str, list[JobRow]] = {}
    for job in jobs:
        if job.content_sha256 in cached:
            markdown, pages = cached[job.content_sha256]
            if store.save_parse(job, profile, markdown, pages, None, cache_hit=True):
                report.succeeded += 1
                report.count("cache_hits")
            else:
                report.count("settled_meanwhile")  # deleted or superseded since listed
        else:
            misses.setdefault(job.content_sha256, []).append(job)

    def fail(jobs_: list[JobRow], reason: str, code: str | None, retryable: bool) -> None:
        for job in jobs_:
            store.mark_failed(
                job.job_id,
                "parse",
                reason,
                code=code,
                retryable=retryable,
                max_attempts=max_attempts,
                retry_base_seconds=retry_base_seconds,
            )
            report.fail(job.storage_key, reason, code=code, retryable=retryable)

    async def parse_one(sha: str, same_content: list[JobRow]) -> None:
        first = same_content[0]
        try:
            data = await asyncio.to_thread(_read_verified, backend, first)
        except StorageError as exc:
            fail(same_content, f"could not read the file from storage: {exc}", "STORAGE_READ", True)
            return
        if data is None:
            for job in same_content:
                store.set_state(job.job_id, "superseded", "parse", "changed_before_parse")
            report.count("changed_before_parse", len(same_content))
            return
        started = time.perf_counter()
        report.external_calls += 1
        try:
            parsed = await client.parse(
                first.storage_key.rsplit("/", 1)[-1], data, first.media_type
            )
        except ParseError as exc:
            if exc.kind == "stuck":  # say so, and which deadline gave up on it
                reason = f"parser stuck: {exc.reason} (DOCPIPE_PARSE_DEADLINE_SECONDS)"
                fail(same_content, reason, "PARSE_STUCK", exc.retryable)
                return
            fail(same_content, exc.reason, exc.code, exc.retryable)
            return
        seconds = time.perf_counter() - started
        report.count("parse_seconds", round(seconds, 3))
        report.count("pages", parsed.page_count)
        if not parsed.markdown.strip():
            fail(same_content, "the parser found no text in this document", "NO_TEXT", False)
            return
        for job in same_content:
            # off the event loop: the other parses' answers keep arriving meanwhile
            saved = await asyncio.to_thread(
                store.save_parse,
                job,
                profile,
                parsed.markdown,
                parsed.page_count,
                parsed.job_id,
                cache_hit=parsed.cache_hit,
                seconds=seconds,
            )
            if saved:
                report.succeeded += 1
            else:  # deleted or superseded while the parser ran: leave it so
                report.count("settled_meanwhile")

    # Every miss is handed to the parser now (one statement for all of them); the client
    # bounds concurrency itself; gather keeps one failure from stopping the others.
    store.set_states(
        [job.job_id for group in misses.values() for job in group],
        "parsing",
        "parse",
        "started",
        expected=["uploaded", "parsing"],
    )
    results = await asyncio.gather(
        *(parse_one(sha, group) for sha, group in misses.items()), return_exceptions=True
    )
    for (_sha, group), outcome in zip(misses.items(), results, strict=True):
        if isinstance(outcome, BaseException):
            fail(
                group,
                f"unexpected parser error: {outcome.__class__.__name__}: {outcome}",
                "INTERNAL",
                True,
            )
    return report.finish()
