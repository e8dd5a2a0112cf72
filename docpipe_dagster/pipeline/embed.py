"""Embed staged chunks: the cache first, then only the misses, each distinct text once."""

from __future__ import annotations

import uuid
from collections import defaultdict

from docpipe_dagster.clients.embeddings import EmbeddingError, EmbeddingsClient
from docpipe_dagster.pipeline.report import StageReport
from docpipe_dagster.store.queries import JobRow, Store, VectorSpace


async def embed_chunks(
    store: Store,
    client: EmbeddingsClient,
    batch_key: str,
    *,
    space: VectorSpace,
    max_attempts: int,
    retry_base_seconds: float,
) -> StageReport:
    report = StageReport("embed")
    jobs = {j.job_id: j for j in store.jobs_in_batch(batch_key, ["chunked"])}
    report.skipped = len(store.jobs_in_batch(batch_key)) - len(jobs)
    report.documents = len(jobs)
    if not jobs:
        return report.finish()

    pending = store.chunks_to_embed(list(jobs), space)
    report.count("chunks", len(pending))
    vectors = store.cached_embeddings((c.text_sha256 for c in pending), space)
    report.count("cache_hits", sum(1 for c in pending if c.text_sha256 in vectors))

    texts: dict[str, str] = {}
    for c in pending:
        if c.text_sha256 not in vectors:
            texts.setdefault(c.text_sha256, c.content)
    report.count("texts_sent", len(texts))

    failed: dict[uuid.UUID, tuple[str, str | None, bool]] = {}
    if texts:
        shas = list(texts)
        try:
            batch = await client.embed([texts[s] for s in shas])
        except EmbeddingError as exc:
            # The whole service refused (auth, quota, outage after retries): every
            # document waiting for a new vector fails with the same, readable reason.
            for c in pending:
                if c.text_sha256 not in vectors:
                    failed[c.job_id] = (f"embedding service error: {exc}", exc.code, exc.retryable)
        else:
            report.external_calls += batch.requests
            report.count("requests", batch.requests)
            report.count("retries", batch.retries)
            report.count("tokens", batch.prompt_tokens)
            fresh = {s: v for s, v in zip(shas, batch.vectors, strict=True) if v is not None}
            store.cache_embeddings(fresh, space)
            vectors.update(fresh)
            bad_texts = {shas[i]: err for i, err in batch.errors.items()}
            for c in pending:
                if c.text_sha256 in bad_texts and c.job_id not in failed:
                    err = bad_texts[c.text_sha256]
                    failed[c.job_id] = (f"chunk could not be embedded: {err}", err.code, False)

    by_job: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID, list[float]]]] = defaultdict(list)
    for c in pending:
        if c.job_id not in failed and c.text_sha256 in vectors:
            by_job[c.job_id].append((c.chunk_id, c.job_id, vectors[c.text_sha256]))
    staged = [row for job_id in by_job for row in by_job[job_id]]
    store.stage_vectors(staged, space)

    for job_id, job in jobs.items():
        if job_id in failed:
            reason, code, retryable = failed[job_id]
            _fail(store, report, job, reason, code, retryable, max_attempts, retry_base_seconds)
            continue
        if store.mark_embedded(job_id, {"model": space.model, "dims": space.dims}):
            report.succeeded += 1
        else:
            reason = "some chunks have no vector after embedding; will retry"
            _fail(
                store,
                report,
                job,
                reason,
                "MISSING_VECTORS",
                True,
                max_attempts,
                retry_base_seconds,
            )
    report.count("vectors_staged", len(staged))
    return report.finish()


def _fail(
    store: Store,
    report: StageReport,
    job: JobRow,
    reason: str,
    code: str | None,
    retryable: bool,
    max_attempts: int,
    retry_base_seconds: float,
) -> None:
    store.mark_failed(
        job.job_id,
        "embed",
        reason,
        code=code,
        retryable=retryable,
        max_attempts=max_attempts,
        retry_base_seconds=retry_base_seconds,
    )
    report.fail(job.storage_key, reason, code=code, retryable=retryable)
