"""Parse the batch's files to markdown (LlamaParse contract).

The parse cache is keyed by content hash and parser profile: the same bytes are never
parsed twice, across documents, batches and re-runs. Files the routing (DOCPIPE_PARSE_LOCALLY,
clients/parsing.py) keeps local are parsed in-process (no parser call, no credits) under
their own profile, so a local result and a parser's never stand in for each other.
"""

from __future__ import annotations

import asyncio
import time

from docpipe_dagster.clients.llamaparse import LlamaParseClient, ParseError
from docpipe_dagster.clients.parsing import Routing, routing
from docpipe_dagster.clients.storage import ObjectNotFoundError, StorageBackend, StorageError
from docpipe_dagster.core.breaker import ServiceUnavailable
from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.media import extension
from docpipe_dagster.logs import bound
from docpipe_dagster.pipeline.local_parse import local_profile, parse_locally
from docpipe_dagster.pipeline.report import RetrySchedule, StageReport, batch_jobs, fail_job
from docpipe_dagster.store.queries import JobRow, ParsedJob, Store


class _GroupSaver:
    """Parse results reach the database in groups: while one group is being saved (off the
    event loop, so the other parses' answers keep arriving), the results that finish queue
    up and go together in the next transaction. Fast parses (in-process, cached by the
    parser) then cost a few transactions a batch instead of one each. A group that fails
    is saved job by job, so a bad result fails alone."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self._queued: list[tuple[ParsedJob, asyncio.Future[bool]]] = []

    async def save(self, parsed: ParsedJob) -> bool:
        """True once the job is marked parsed; False if it left parsing meanwhile."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((parsed, done))
        async with self._lock:
            if not done.done():  # not taken by the group saved before this one
                await self._flush()
        return await done

    async def _flush(self) -> None:
        """Save everything queued in one group and settle each result's future."""
        group, self._queued = self._queued, []
        try:
            results = await asyncio.to_thread(self._save, [p for p, _ in group])
            for (_, future), result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            for _, future in group:
                if not future.done():  # cancelled meanwhile: nobody saved these
                    future.cancel()

    def _save(self, group: list[ParsedJob]) -> list[bool | Exception]:
        try:
            saved = self._store.save_parses(group)
            return [p.job.job_id in saved for p in group]
        except Exception:
            results: list[bool | Exception] = []
            for p in group:
                try:
                    results.append(p.job.job_id in self._store.save_parses([p]))
                except Exception as exc:  # this result's own failure, reported as before
                    results.append(exc)
            return results


def _local_name(filename: str, media_type: str | None) -> str:
    """A name the local backend dispatches on: a file without an extension (text, or intake
    would have refused it) is parsed as what its content was detected to be."""
    if extension(filename):
        return filename
    by_type = {"text/html": ".html", "message/rfc822": ".eml"}
    return filename + by_type.get(media_type or "", ".txt")


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
    routes: Routing | None = None,
    result_type: str = "markdown",
) -> StageReport:
    routes = routes or routing("text")
    report = StageReport("parse")
    retry = RetrySchedule(max_attempts, retry_base_seconds)
    jobs = batch_jobs(store, batch_key, ["uploaded", "parsing"], report)
    local_prof = local_profile(result_type)

    def local(job: JobRow) -> bool:
        return routes.is_local(job.storage_key)

    def profile_of(job: JobRow) -> str:
        return local_prof if local(job) else profile

    cached = {
        prof: store.cached_parses((j.content_sha256 for j in jobs if profile_of(j) == prof), prof)
        for prof in {profile_of(j) for j in jobs}
    }
    misses: dict[tuple[str, str], list[JobRow]] = {}
    hits: list[ParsedJob] = []
    for job in jobs:
        job_profile = profile_of(job)
        if job.content_sha256 in cached[job_profile]:
            markdown, pages = cached[job_profile][job.content_sha256]
            hits.append(ParsedJob(job, job_profile, markdown, pages, None, cache_hit=True))
        else:
            misses.setdefault((job.content_sha256, job_profile), []).append(job)
    if hits:
        saved_hits = store.save_parses(hits)
        report.succeeded += len(saved_hits)
        report.count("cache_hits", len(saved_hits))
        if len(saved_hits) < len(hits):  # deleted or superseded since listed
            report.count("settled_meanwhile", len(hits) - len(saved_hits))
    saver = _GroupSaver(store)

    def fail(jobs_: list[JobRow], reason: str, code: str | None, retryable: bool) -> None:
        for job in jobs_:
            fail_job(store, report, job, reason, code=code, retryable=retryable, retry=retry)

    async def parse_one(key: tuple[str, str], same_content: list[JobRow]) -> None:
        job_profile = key[1]
        first = same_content[0]  # the copy the bytes come from
        # Read from the first copy still in storage; a removed one is marked deleted.
        data: bytes | None = None
        while same_content:
            first = same_content[0]
            try:
                data = await asyncio.to_thread(_read_verified, backend, first)
                break
            except ObjectNotFoundError:
                store.mark_deleted([first.document_id], "file removed from storage before parsing")
                report.count("vanished")
                same_content = same_content[1:]
            except StorageError as exc:
                reason = f"could not read the file from storage: {exc}"
                fail(same_content, reason, "STORAGE_READ", True)
                return
        if not same_content:
            return
        if data is None:
            ids = [job.job_id for job in same_content]
            store.set_states(ids, "superseded", "parse", "changed_before_parse", durable=True)
            report.count("changed_before_parse", len(same_content))
            return
        # Judged at registration (pipeline/intake.py) from the same bytes; again here for a
        # job re-queued by hand under a routing that may have changed since.
        refusal = routes.refusal(first.storage_key, data)
        if refusal:
            for job in same_content:
                store.mark_failed(job.job_id, "intake", refusal, code="UNSUPPORTED")
                report.fail(job.storage_key, refusal, code="UNSUPPORTED", retryable=False)
            return
        started = time.perf_counter()
        filename = first.storage_key.rsplit("/", 1)[-1]
        try:
            if job_profile == local_prof:
                report.count("local_parses")
                name = _local_name(filename, first.media_type)
                parsed = await asyncio.to_thread(parse_locally, name, data, result_type)
            else:
                report.external_calls += 1
                with bound(job_id=first.job_id, storage_key=first.storage_key):
                    parsed = await client.parse(filename, data, first.media_type)
        except ParseError as exc:
            breaker = getattr(client, "breaker", None)
            if exc.retryable and breaker is not None and breaker.is_open:
                # The service is down, not this document: no attempt is counted.
                raise ServiceUnavailable(breaker.service, breaker.reason) from None
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
            result = ParsedJob(
                job,
                job_profile,
                parsed.markdown,
                parsed.page_count,
                parsed.job_id or None,
                cache_hit=parsed.cache_hit,
                seconds=seconds,
            )
            if await saver.save(result):
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
        *(parse_one(key, group) for key, group in misses.items()), return_exceptions=True
    )
    unavailable: list[JobRow] = []
    outage: ServiceUnavailable | None = None
    for (_key, group), outcome in zip(misses.items(), results, strict=True):
        if isinstance(outcome, ServiceUnavailable):
            unavailable += group
            outage = outcome
        elif isinstance(outcome, BaseException):
            fail(
                group,
                f"unexpected parser error: {outcome.__class__.__name__}: {outcome}",
                "INTERNAL",
                True,
            )
    if outage is not None:
        # Back in the queue with no attempt used; the run fails with the one reason, and the
        # next run (or `docpipe ingest --wait` again) picks them up.
        store.set_states(
            [job.job_id for job in unavailable],
            "uploaded",
            "parse",
            "service_unavailable",
            {"reason": outage.reason},
            expected=["parsing"],
            durable=True,
        )
        report.count("not_attempted", len(unavailable))
        report.finish()
        raise ServiceUnavailable(
            outage.service,
            f"{outage.reason}; {len(unavailable)} documents left queued, no attempt used",
        )
    return report.finish()
