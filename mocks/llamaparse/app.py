"""LlamaParse mock: the v1 routes (this module) and the v2 routes (v2.py) beside them.

Routes (also served under /api/v1/parsing, the newer prefix some clients use):
  POST /api/parsing/upload                     multipart `file` + option fields -> {"id","status"}
  GET  /api/parsing/job/{id}                   {"id","status", "error_code"?, "error_message"?}
  GET  /api/parsing/job/{id}/result/text       {"text", "job_metadata"}
  GET  /api/parsing/job/{id}/result/markdown   {"markdown", "job_metadata"}
  GET  /api/parsing/job/{id}/result/json       {"pages": [...], "job_metadata": {...}}
  GET  /api/parsing/supported_file_extensions  [".pdf", ...]
Mock-only: GET /_mock/jobs (counters), GET /_mock/webhooks (delivery log),
POST /_mock/pending {"pending_seconds": s} (reset restores the start value).

Behaviour: content is really parsed (extract.py: the local backend, and the real service's
UNSUPPORTED_FILE_TYPE for a type off the SDK's list on v2). A job is PENDING for settings.pending_seconds
and then SUCCESS or ERROR. The job id is a UUIDv5 of (content sha256, extension, options), so
the same upload returns the same id; re-uploading a finished job is a cache hit
(job_is_cache_hit true, no new parse), while a failed, cancelled or stuck job is run again, as a
resubmission on the real service would be. Faults beyond the generic ones: "parse_stuck" (job
stays PENDING forever) and "parse_error" (job ends ERROR with INTERNAL_ERROR), both taken at
upload. Webhooks: see webhook.py; targets must be on this machine (loopback), so a mock can
never be made to send traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from docpipe_dagster_mocks._common import MockSettings, create_mock_app
from docpipe_dagster_mocks.llamaparse.extract import (
    SUPPORTED_EXTENSIONS,
    ExtractionError,
    parse_as_service,
)
from docpipe_dagster_mocks.llamaparse.jobs import (  # noqa: F401 (job_id_for: re-exported)
    DEFAULT_PAGE_SEPARATOR,
    Job,
    job_id_for,
    page_items,
    webhook_url_problem,
)
from docpipe_dagster_mocks.llamaparse.v2 import V2Context, add_v2_routes
from docpipe_dagster_mocks.llamaparse.webhook import (
    SIGNATURE_HEADER,
    post_with_retries,
    sign,
    verify_signature,
)

__all__ = ["SIGNATURE_HEADER", "create_app", "sign", "verify_signature"]

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "INTERNAL_ERROR"
_TRUE = frozenset({"true", "1", "yes", "on"})
# Jobs (with their parsed text) are kept in memory; past this many the oldest finished ones are
# forgotten, as the real service expires results, so a long benchmark cannot exhaust RAM.
MAX_JOBS = 5000


def _join_pages(job: Job, attr: str) -> str:
    sep = job.separator()
    parts: list[str] = []
    for i, page in enumerate(job.pages):
        if i:
            parts.append(sep.replace("{page_number}", str(i + 1)))
        parts.append(getattr(page, attr))
    return "".join(parts)


def _metadata(job: Job) -> dict[str, Any]:
    pages = len(job.pages)
    credits = 0.0 if job.cache_hit else float(pages)
    return {
        "job_pages": pages,
        "job_auto_mode_triggered_pages": 0,
        "job_is_cache_hit": job.cache_hit,
        "credits_used": credits,
        "job_credits_usage": credits,
    }


def _json_pages(job: Job) -> list[dict[str, Any]]:
    return [
        {
            "page": i + 1,
            "text": page.text,
            "md": page.md,
            "images": [],
            "charts": [],
            "tables": [],
            "layout": [],
            "items": page_items(page.md),
            "status": "OK",
            "links": [],
            "width": 612.0,
            "height": 792.0,
            "triggeredAutoMode": False,
            "parsingMode": "mock",
            "structuredData": None,
            "noStructuredContent": True,
            "noTextContent": not page.text.strip(),
        }
        for i, page in enumerate(job.pages)
    ]


def _detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(settings: MockSettings) -> FastAPI:
    app = create_mock_app("llamaparse", settings, auth="llamaparse")
    jobs: dict[str, Job] = {}
    # uploads/parses/cache_hits count both APIs; v1_uploads and v2_uploads tell them apart.
    counters = {
        "uploads": 0,
        "parses": 0,
        "cache_hits": 0,
        "v1_uploads": 0,
        "v2_uploads": 0,
        "cancels": 0,
    }
    webhook_log: list[dict[str, Any]] = []
    tasks: set[asyncio.Task] = set()

    initial_pending = settings.pending_seconds

    def evict_old_jobs() -> None:
        if len(jobs) <= MAX_JOBS:
            return
        now = time.monotonic()
        for old_id in list(jobs):  # dicts keep insertion order: oldest first
            if len(jobs) <= MAX_JOBS:
                break
            if jobs[old_id].status(now) != "PENDING":
                del jobs[old_id]

    def on_reset() -> None:
        settings.pending_seconds = initial_pending
        jobs.clear()
        webhook_log.clear()
        for key in counters:
            counters[key] = 0
        for task in list(tasks):
            task.cancel()

    app.state.on_reset = on_reset
    app.state.jobs = jobs

    async def deliver(job: Job, url: str) -> None:
        while job.running or time.monotonic() < job.ready_at:
            await asyncio.sleep(max(0.01, min(0.05, job.ready_at - time.monotonic())))
        status = job.status(time.monotonic())
        if status == "PENDING":  # stuck: nothing to report, as with the real service
            return
        payload: dict[str, Any] = {"id": job.id, "status": status, "file_name": job.file_name}
        if status == "SUCCESS":
            payload.update(
                markdown=_join_pages(job, "md"),
                text=_join_pages(job, "text"),
                job_metadata=_metadata(job),
            )
        else:
            payload.update(error_code=job.error_code, error_message=job.error_message)
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"content-type": "application/json"}
        if settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(settings.webhook_secret, body)
        entry: dict[str, Any] = {"job_id": job.id, "url": url, "attempts": 0, "status_code": None}
        webhook_log.append(entry)
        await post_with_retries(url, body, headers, entry)

    def schedule(job: Job, url: str | None) -> None:
        if url and not job.stuck:
            track(deliver(job, url))

    def track(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def extract_job(job: Job, content: bytes) -> None:
        try:
            # pypdf is CPU-bound: a thread keeps the event loop (and /health) responsive.
            job.pages = await asyncio.to_thread(
                parse_as_service,
                job.file_name,
                content,
                service_types_only=job.api == "v2",  # v1 (legacy) also parses .txt, .json
            )
        except ExtractionError as exc:
            job.error_code, job.error_message = exc.code, exc.message
        except Exception as exc:  # a parser bug must surface as a failed job, not a 500
            logger.exception("extraction crashed for job %s", job.id)
            job.error_code = INTERNAL_ERROR
            job.error_message = f"Parser failure: {type(exc).__name__}"
        finally:
            job.running = False

    def run(job: Job, content: bytes, path: str) -> None:
        """(Re)start the parse of `job` in the background, as the real service does: the
        upload answers at once and the job stays PENDING for at least pending_seconds."""
        counters["parses"] += 1
        job.runs += 1
        job.cache_hit = False
        job.pages, job.error_code, job.error_message = [], None, None
        job.cancelled, job.failed_pages = False, frozenset()
        job.created_at = job.updated_at = time.time()
        job.started = time.monotonic()
        job.ready_at = job.started + max(0.0, settings.pending_seconds)
        job.stuck = app.state.faults.take("parse_stuck", path) is not None
        if app.state.faults.take("page_error", path) is not None:
            job.failed_pages = frozenset({1})  # v2 reports page 1 with success: false
        if app.state.faults.take("parse_error", path) is not None:
            job.error_code = INTERNAL_ERROR
            job.error_message = "An internal error occurred while parsing the document."
            return
        job.running = True
        track(extract_job(job, content))

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            if form.get("input_url") or form.get("input_s3_path"):
                return _detail(400, "The mock parses uploaded files only (no input_url).")
            return _detail(400, "No file provided: send multipart form field 'file'.")
        content = await upload_file.read()
        filename = upload_file.filename or ""
        options = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
        webhook_url = options.get("webhook_url") or None
        if webhook_url and (problem := webhook_url_problem(webhook_url)):
            return _detail(400, problem)
        counters["uploads"] += 1
        counters["v1_uploads"] += 1
        job_id = job_id_for(content, filename, options)
        job = jobs.get(job_id)
        now = time.monotonic()
        invalidate = options.get("invalidate_cache", "").lower() in _TRUE
        path = request.url.path
        if job is not None and not invalidate and job.status(now) == "SUCCESS":
            job.cache_hit = True
            counters["cache_hits"] += 1
            schedule(job, webhook_url)
            return JSONResponse({"id": job.id, "status": "SUCCESS"})
        if job is not None and not invalidate and job.status(now) == "PENDING" and not job.stuck:
            schedule(job, webhook_url)  # same upload while running: same job
            return JSONResponse({"id": job.id, "status": "PENDING"})
        if job is None:
            job = Job(id=job_id, file_name=filename, options=options)
            jobs[job_id] = job
            evict_old_jobs()
        run(job, content, path)
        schedule(job, webhook_url)
        return JSONResponse({"id": job.id, "status": "PENDING"})

    async def job_status(job_id: str) -> JSONResponse:
        job = jobs.get(job_id)
        if job is None:
            return _detail(404, f"Job {job_id} not found")
        status = job.status(time.monotonic())
        body: dict[str, Any] = {"id": job.id, "status": status}
        if status == "ERROR":
            body.update(error_code=job.error_code, error_message=job.error_message)
        return JSONResponse(body)

    async def job_result(job_id: str, result_type: str) -> JSONResponse:
        job = jobs.get(job_id)
        if job is None:
            return _detail(404, f"Job {job_id} not found")
        if result_type not in ("text", "markdown", "json"):
            return _detail(400, f"Unsupported result type {result_type!r}")
        if job.status(time.monotonic()) != "SUCCESS":
            return _detail(
                404,
                f"Result for Parsing Job {job_id} not found. Check job status to see if it "
                "has completed.",
            )
        meta = _metadata(job)
        if result_type == "text":
            return JSONResponse({"text": _join_pages(job, "text"), "job_metadata": meta})
        if result_type == "markdown":
            return JSONResponse({"markdown": _join_pages(job, "md"), "job_metadata": meta})
        return JSONResponse({"pages": _json_pages(job), "job_metadata": meta})

    async def supported_file_extensions() -> list[str]:
        return list(SUPPORTED_EXTENSIONS)

    # Routes are added one by one (not via include_router) so the framework's per-route stats
    # see the route templates.
    for prefix in ("/api/parsing", "/api/v1/parsing"):
        app.add_api_route(f"{prefix}/upload", upload, methods=["POST"])
        app.add_api_route(f"{prefix}/job/{{job_id}}", job_status, methods=["GET"])
        app.add_api_route(
            f"{prefix}/job/{{job_id}}/result/{{result_type}}", job_result, methods=["GET"]
        )
        app.add_api_route(
            f"{prefix}/supported_file_extensions", supported_file_extensions, methods=["GET"]
        )

    add_v2_routes(
        app,
        V2Context(
            settings=settings,
            jobs=jobs,
            counters=counters,
            webhook_log=webhook_log,
            run=run,
            track=track,
            evict=evict_old_jobs,
        ),
    )

    @app.get("/_mock/jobs", include_in_schema=False)
    async def job_counters() -> dict[str, Any]:
        return {**counters, "jobs": len(jobs)}

    @app.post("/_mock/pending", include_in_schema=False)
    async def set_pending(request: Request) -> dict[str, float]:
        # Lets one long-running mock serve tests that need slow and fast jobs.
        body = await request.json()
        settings.pending_seconds = max(0.0, float(body.get("pending_seconds", 0.0)))
        return {"pending_seconds": settings.pending_seconds}

    @app.get("/_mock/webhooks", include_in_schema=False)
    async def webhooks() -> list[dict[str, Any]]:
        return [dict(e) for e in webhook_log]

    return app
