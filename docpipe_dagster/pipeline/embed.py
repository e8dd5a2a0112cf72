"""Embed staged chunks: the cache first, then only the misses, each distinct text once.

The misses go out in parts of `part_size` texts, several requests at a time; each part's
vectors are written to the embedding cache as soon as it answers (off the event loop, so
the next answers keep arriving meanwhile). The staged vectors are then copied from the
cache inside the database: a vector crosses the wire once, and cached ones never do.
"""

from __future__ import annotations

import asyncio
import uuid

from docpipe_dagster.clients.embeddings import EmbeddingBatch, EmbeddingError, EmbeddingsClient
from docpipe_dagster.core.breaker import ServiceUnavailable
from docpipe_dagster.pipeline.report import RetrySchedule, StageReport, batch_jobs, fail_job
from docpipe_dagster.store.queries import Store, VectorSpace


async def embed_chunks(
    store: Store,
    client: EmbeddingsClient,
    batch_key: str,
    *,
    space: VectorSpace,
    max_attempts: int,
    retry_base_seconds: float,
    part_size: int = 256,
) -> StageReport:
    report = StageReport("embed")
    retry = RetrySchedule(max_attempts, retry_base_seconds)
    jobs = {j.job_id: j for j in batch_jobs(store, batch_key, ["chunked"], report)}
    if not jobs:
        return report.finish()

    pending = store.chunks_to_embed(list(jobs), space)
    report.count("chunks", len(pending))
    cached = store.cached_text_shas((c.text_sha256 for c in pending), space)
    report.count("cache_hits", sum(1 for c in pending if c.text_sha256 in cached))

    texts: dict[str, str] = {}
    for c in pending:
        if c.text_sha256 not in cached:
            texts.setdefault(c.text_sha256, c.content)
    report.count("texts_sent", len(texts))

    failed: dict[uuid.UUID, tuple[str, str | None, bool]] = {}
    untouched: set[uuid.UUID] = set()  # left queued because the service is down
    outage: ServiceUnavailable | None = None
    available = set(cached)
    if texts:
        shas = list(texts)
        parts = [shas[i : i + part_size] for i in range(0, len(shas), part_size)]

        # Parts answered but not yet cached hold their vectors: at most this many parts are
        # between asking and caching, so a large batch's memory does not grow with it when
        # the database writes slower than the service answers.
        in_hand = asyncio.Semaphore(2 * client.max_concurrency)

        async def embed_part(part: list[str]) -> tuple[EmbeddingBatch, list[str]]:
            async with in_hand:
                batch = await client.embed([texts[s] for s in part])
                fresh = {s: v for s, v in zip(part, batch.vectors, strict=True) if v is not None}
                await asyncio.to_thread(store.cache_embeddings, fresh, space)
            # A finished task keeps only which texts got a vector, not the vectors.
            batch.vectors.clear()
            return batch, list(fresh)

        tasks = [asyncio.ensure_future(embed_part(p)) for p in parts]
        service_error: EmbeddingError | None = None
        for part, task in zip(parts, tasks, strict=True):
            try:
                batch, answered = await task
            except ServiceUnavailable as exc:
                outage = outage or exc
                for t in tasks:
                    t.cancel()
                continue
            except EmbeddingError as exc:
                # The service refused (auth, quota, outage after retries): stop asking, and
                # every document still waiting for a new vector fails with this reason.
                service_error = service_error or exc
                for t in tasks:
                    t.cancel()
                continue
            except asyncio.CancelledError:
                if service_error is None and outage is None:
                    raise
                continue
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise
            report.external_calls += batch.requests
            report.count("requests", batch.requests)
            report.count("retries", batch.retries)
            report.count("tokens", batch.prompt_tokens)
            available.update(answered)
            bad_texts = {part[i]: err for i, err in batch.errors.items()}
            for c in pending:
                if c.text_sha256 in bad_texts and c.job_id not in failed:
                    err = bad_texts[c.text_sha256]
                    failed[c.job_id] = (f"chunk could not be embedded: {err}", err.code, False)
        if outage is not None:
            # The service is down, not these documents: they stay `chunked`, no attempt used.
            waiting = {c.job_id for c in pending if c.text_sha256 not in available}
            untouched.update(j for j in waiting if j not in failed)
        elif service_error is not None:
            for c in pending:
                if c.text_sha256 not in available and c.job_id not in failed:
                    failed[c.job_id] = (
                        f"embedding service error: {service_error}",
                        service_error.code,
                        service_error.retryable,
                    )

    staged = await asyncio.to_thread(
        store.stage_cached_vectors,
        [
            (c.chunk_id, c.job_id, c.text_sha256)
            for c in pending
            if c.job_id not in failed and c.text_sha256 in available
        ],
        space,
    )
    embedded = store.mark_embedded(
        [job_id for job_id in jobs if job_id not in failed and job_id not in untouched],
        {"model": space.model, "dims": space.dims},
    )
    for job_id, job in jobs.items():
        if job_id in untouched:
            continue
        if job_id in failed:
            reason, code, retryable = failed[job_id]
            fail_job(store, report, job, reason, code=code, retryable=retryable, retry=retry)
        elif job_id in embedded:
            report.succeeded += 1
        else:
            reason = "some chunks have no vector after embedding; will retry"
            fail_job(
                store, report, job, reason, code="MISSING_VECTORS", retryable=True, retry=retry
            )
    report.count("vectors_staged", staged)
    if outage is not None:
        # Parked: the event says why they wait, so status shows it and recovery finds them.
        store.set_states(
            sorted(untouched),
            "chunked",
            "embed",
            "service_unavailable",
            {"reason": outage.reason},
            expected=["chunked"],
            durable=True,
        )
        report.count("not_attempted", len(untouched))
        report.finish()
        raise ServiceUnavailable(
            outage.service,
            f"{outage.reason}; {len(untouched)} documents left queued, no attempt used",
        )
    return report.finish()
