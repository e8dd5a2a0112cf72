"""LlamaParse v2 routes of the mock: what the official `llama-cloud` 2.x SDK calls.

  POST   /api/v2/parse/upload        multipart `configuration` (a JSON string) + `file` -> job
  POST   /api/v2/parse               JSON {tier, version, file_id, ...} -> job
  GET    /api/v2/parse/{id}          {"job": {...}} + one key per repeated `expand=`:
                                     text, markdown, text_full, markdown_full, items, metadata,
                                     job_metadata
  GET    /api/v2/parse               ?page_size=&page_token=&status= -> {items, next_page_token}
  POST   /api/v2/parse/{id}/cancel   -> job (CANCELLED)
  DELETE /api/v2/parse/{id}          terminal jobs only -> {id, project_id}
  POST   /api/v1/beta/files          multipart `file` + `purpose` -> {id, name, project_id, ...}

A job (create, cancel, list items) is flat: {id, project_id, status, created_at, updated_at,
error_message, name, tier} with status PENDING | RUNNING | COMPLETED | FAILED | CANCELLED.
A job the "parse_stuck" fault hit stays PENDING; one still extracting is RUNNING. A failed job
also carries `error_code` (a mock extra the SDK ignores; the real v2 job has only
error_message). The "page_error" fault makes page 1 of a job come back `success: false`.
Errors are FastAPI-style `{"detail": ...}`: 401 (middleware), 404, 409, 422 (a list of
{type, loc, msg, input} like FastAPI's validation errors), 429 with Retry-After (middleware).
Job ids are deterministic (UUIDv5 of content, extension and configuration) so that tests can
aim a fault at one document; re-creating a COMPLETED job is a cache hit unless
`disable_cache` is set. Webhooks: `webhook_configurations` entries get a POST per matching
event (parse.success, parse.partial_success, parse.error, parse.cancelled), signed
`LC-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with `webhook_signing_secret` (else
the mock's --webhook-secret); targets must be loopback.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from docpipe_dagster_mocks._common import MockSettings
from docpipe_dagster_mocks.llamaparse.jobs import Job, job_id_for, page_items, webhook_url_problem
from docpipe_dagster_mocks.llamaparse.webhook import post_with_retries, sign

PROJECT_ID = "00000000-0000-4000-8000-00000000d0c5"  # the mock's one project
TIERS = ("fast", "cost_effective", "agentic", "agentic_plus")
LC_SIGNATURE_HEADER = "LC-Signature"
# Configuration keys that change delivery or caching, not the output: not in the job id.
_NON_IDENTITY = frozenset({"webhook_configurations", "disable_cache", "client_name"})
_EXPANDABLE = frozenset(
    {"text", "markdown", "text_full", "markdown_full", "items", "metadata", "job_metadata"}
)
# Also valid on the real service (llama-cloud 2.19's list); the mock accepts and omits them.
_ACCEPTED_ONLY = frozenset(
    {
        "forms",
        "usage",
        "text_content_metadata",
        "markdown_content_metadata",
        "items_content_metadata",
        "metadata_content_metadata",
        "forms_content_metadata",
        "raw_words_content_metadata",
        "xlsx_content_metadata",
        "output_pdf_content_metadata",
        "images_content_metadata",
    }
)
MAX_FILES = 2000  # uploaded files kept in memory; oldest forgotten first


@dataclass
class V2Context:
    """What the v2 routes share with the v1 app: its jobs, counters and job runner."""

    settings: MockSettings
    jobs: dict[str, Job]
    counters: dict[str, int]
    webhook_log: list[dict[str, Any]]
    run: Callable[[Job, bytes, str], None]
    track: Callable[[Any], None]
    evict: Callable[[], None]


def v2_job_id(content: bytes, filename: str, configuration: dict[str, Any]) -> str:
    """The mock's id of a v2 job for these bytes and this configuration (see module doc)."""

    identity = {k: v for k, v in configuration.items() if k not in _NON_IDENTITY}
    options = {"api": "v2", "configuration": json.dumps(identity, sort_keys=True)}
    return job_id_for(content, filename, options)


def v2_status(job: Job, now: float) -> str:
    if job.cancelled:
        return "CANCELLED"
    if job.stuck:
        return "PENDING"
    if job.running or now < job.ready_at:
        return "RUNNING"
    return "FAILED" if job.error_code else "COMPLETED"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def flat_job(job: Job, now: float) -> dict[str, Any]:
    status = v2_status(job, now)
    body: dict[str, Any] = {
        "id": job.id,
        "project_id": PROJECT_ID,
        "status": status,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "error_message": None,
        "name": job.file_name,
        "tier": job.tier,
    }
    if status == "FAILED":
        body["error_message"] = job.error_message
        body["error_code"] = job.error_code
    elif status == "CANCELLED":
        body["error_message"] = "The job was cancelled."
    if status == "COMPLETED":
        pages = 0 if job.cache_hit else len(job.pages)
        body["usage"] = {"credits": float(pages)}
    return body


def _detail(status: int, message: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _invalid(
    loc: list[str], msg: str, value: Any = None, type_: str = "value_error"
) -> JSONResponse:
    """A 422 shaped like FastAPI's request validation errors."""
    return _detail(422, [{"type": type_, "loc": loc, "msg": msg, "input": value}])


def _check_configuration(config: Any, loc: str) -> JSONResponse | None:
    if not isinstance(config, dict):
        return _invalid([loc], "Input should be a valid dictionary", config, "dict_type")
    tier = config.get("tier")
    if tier is None:
        return _invalid([loc, "tier"], "Field required", None, "missing")
    if tier not in TIERS:
        return _invalid(
            [loc, "tier"], f"Input should be {', '.join(repr(t) for t in TIERS)}", tier, "enum"
        )
    version = config.get("version")
    if version is None:
        return _invalid([loc, "version"], "Field required", None, "missing")
    if not isinstance(version, str) or not (version == "latest" or _is_date(version)):
        return _invalid([loc, "version"], "Use 'latest' or a dated version YYYY-MM-DD", version)
    hooks = config.get("webhook_configurations") or []
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        return _invalid([loc, "webhook_configurations"], "Input should be a valid list", hooks)

    for i, hook in enumerate(hooks):
        url = hook.get("webhook_url")
        problem = "webhook_url is required" if not url else webhook_url_problem(str(url))
        if problem:
            return _invalid([loc, "webhook_configurations", str(i), "webhook_url"], problem, url)
    return None


def _is_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _pages_payload(job: Job, kind: str) -> dict[str, Any]:
    pages: list[dict[str, Any]] = []
    for number, page in enumerate(job.pages, start=1):
        if kind == "markdown" and number in job.failed_pages:
            pages.append(
                {"page_number": number, "error": "Page could not be parsed.", "success": False}
            )
        elif kind == "markdown":
            pages.append({"page_number": number, "markdown": page.md, "success": True})
        else:
            text = "" if number in job.failed_pages else page.text
            pages.append({"page_number": number, "text": text})
    return {"pages": pages}


def _full(job: Job, attr: str) -> str:
    return "\n\n".join(
        getattr(p, attr) for n, p in enumerate(job.pages, start=1) if n not in job.failed_pages
    )


def _items_payload(job: Job) -> dict[str, Any]:

    return {
        "pages": [
            {"page_number": n, "items": page_items(p.md), "success": True}
            for n, p in enumerate(job.pages, start=1)
        ]
    }


def _event_for(status: str, job: Job) -> str | None:
    if status == "COMPLETED":
        return "parse.partial_success" if job.failed_pages else "parse.success"
    return {"FAILED": "parse.error", "CANCELLED": "parse.cancelled"}.get(status)


def add_v2_routes(app: FastAPI, ctx: V2Context) -> None:
    """Register the v2 routes on the mock app (one by one, so route stats see templates)."""
    files: dict[str, tuple[str, bytes]] = {}

    def v2_jobs() -> list[Job]:
        return [j for j in ctx.jobs.values() if j.api == "v2"]

    async def deliver(job: Job, hook: dict[str, Any]) -> None:
        while not job.cancelled and (job.running or time.monotonic() < job.ready_at):
            await asyncio.sleep(max(0.01, min(0.05, job.ready_at - time.monotonic())))
        now = time.monotonic()
        status = v2_status(job, now)
        event = _event_for(status, job)
        wanted = hook.get("webhook_events")
        if event is None or (wanted and event not in wanted):
            return
        body = json.dumps(
            {"event_type": event, "data": flat_job(job, now)}, ensure_ascii=False
        ).encode()
        headers = {str(k): str(v) for k, v in (hook.get("webhook_headers") or {}).items()}
        headers["content-type"] = "application/json"
        secret = hook.get("webhook_signing_secret") or ctx.settings.webhook_secret
        if secret:
            headers[LC_SIGNATURE_HEADER] = sign(str(secret), body)
        url = str(hook["webhook_url"])
        entry: dict[str, Any] = {
            "job_id": job.id,
            "url": url,
            "event": event,
            "attempts": 0,
            "status_code": None,
        }
        ctx.webhook_log.append(entry)
        await post_with_retries(url, body, headers, entry)

    def create(content: bytes, filename: str, config: dict[str, Any], path: str) -> JSONResponse:

        ctx.counters["uploads"] += 1
        ctx.counters["v2_uploads"] += 1
        job_id = v2_job_id(content, filename, config)
        job = ctx.jobs.get(job_id)
        now = time.monotonic()
        hooks = config.get("webhook_configurations") or []
        if job is not None and not config.get("disable_cache"):
            status = v2_status(job, now)
            if status == "COMPLETED":
                job.cache_hit = True
                ctx.counters["cache_hits"] += 1
            if status in ("COMPLETED", "RUNNING"):  # same job while it runs, as v1
                for hook in hooks:
                    ctx.track(deliver(job, hook))
                return JSONResponse(flat_job(job, now))
        if job is None:
            job = Job(id=job_id, file_name=filename, options={}, api="v2")
            ctx.jobs[job_id] = job
            ctx.evict()
        job.tier = str(config["tier"])
        job.configuration = config
        ctx.run(job, content, path)
        for hook in hooks:
            if not job.stuck:
                ctx.track(deliver(job, hook))
        return JSONResponse(flat_job(job, time.monotonic()))

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        upload_file = form.get("file")
        raw = form.get("configuration")
        if not isinstance(upload_file, UploadFile):
            return _invalid(["body", "file"], "Field required", None, "missing")
        if not isinstance(raw, str):
            return _invalid(["body", "configuration"], "Field required", None, "missing")
        try:
            config = json.loads(raw)
        except ValueError:
            return _invalid(["body", "configuration"], "configuration must be a JSON string", raw)
        if problem := _check_configuration(config, "configuration"):
            return problem
        content = await upload_file.read()
        return create(content, upload_file.filename or "", config, request.url.path)

    async def create_from_file(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _invalid(["body"], "JSON decode error", None, "json_invalid")
        if problem := _check_configuration(body, "body"):
            return problem
        if body.get("source_url"):
            return _detail(400, "The mock parses uploaded files only (no source_url).")
        file_id = body.get("file_id")
        if not file_id:
            return _invalid(["body"], "One of file_id or source_url is required", None)
        if file_id not in files:
            return _detail(404, f"File {file_id} not found")
        name, content = files[file_id]
        return create(content, name, body, request.url.path)

    async def get_job(job_id: str, request: Request) -> JSONResponse:
        job = ctx.jobs.get(job_id)
        if job is None or job.api != "v2":
            return _detail(404, f"Job {job_id} not found")
        now = time.monotonic()
        body: dict[str, Any] = {"job": flat_job(job, now)}
        expand = request.query_params.getlist("expand")
        unknown = [e for e in expand if e not in _EXPANDABLE | _ACCEPTED_ONLY]
        if unknown:
            return _invalid(["query", "expand"], f"Unknown expand value {unknown[0]!r}", unknown[0])
        if expand and v2_status(job, now) == "COMPLETED":
            for key in expand:
                if key in ("text", "markdown"):
                    body[key] = _pages_payload(job, key)
                elif key == "text_full":
                    body[key] = _full(job, "text")
                elif key == "markdown_full":
                    body[key] = _full(job, "md")
                elif key == "items":
                    body[key] = _items_payload(job)
                elif key == "metadata":
                    body[key] = {
                        "pages": [{"page_number": n} for n in range(1, len(job.pages) + 1)]
                    }
                elif key == "job_metadata":
                    body[key] = {"job_pages": len(job.pages), "job_is_cache_hit": job.cache_hit}
        return JSONResponse(body)

    async def list_jobs(request: Request) -> JSONResponse:
        params = request.query_params
        try:
            size = int(params.get("page_size") or 50)
            offset = (
                int(base64.urlsafe_b64decode(params["page_token"]).decode())
                if params.get("page_token")
                else 0
            )
        except (ValueError, UnicodeDecodeError):
            return _invalid(["query", "page_token"], "Invalid page_size or page_token")
        if not 1 <= size <= 1000:
            return _invalid(["query", "page_size"], "page_size must be 1..1000", size)
        now = time.monotonic()
        wanted = params.get("status")
        selected = [flat_job(j, now) for j in v2_jobs()]
        if wanted:
            selected = [j for j in selected if j["status"] == wanted]
        page = selected[offset : offset + size]
        more = offset + size < len(selected)
        token = base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else None
        return JSONResponse({"items": page, "next_page_token": token})

    async def cancel(job_id: str) -> JSONResponse:
        job = ctx.jobs.get(job_id)
        if job is None or job.api != "v2":
            return _detail(404, f"Job {job_id} not found")
        if v2_status(job, time.monotonic()) in ("PENDING", "RUNNING"):
            job.cancelled, job.stuck = True, False
            job.updated_at = time.time()
            ctx.counters["cancels"] = ctx.counters.get("cancels", 0) + 1
        return JSONResponse(flat_job(job, time.monotonic()))

    async def delete(job_id: str) -> JSONResponse:
        job = ctx.jobs.get(job_id)
        if job is None or job.api != "v2":
            return _detail(404, f"Job {job_id} not found")
        if v2_status(job, time.monotonic()) in ("PENDING", "RUNNING"):
            return _detail(409, f"Job {job_id} is still running; cancel it first.")
        del ctx.jobs[job_id]
        return JSONResponse({"id": job_id, "project_id": PROJECT_ID})

    async def upload_file(request: Request) -> JSONResponse:
        form = await request.form()
        item = form.get("file")
        if not isinstance(item, UploadFile):
            return _invalid(["body", "file"], "Field required", None, "missing")
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            return _invalid(["body", "purpose"], "Field required", None, "missing")
        content = await item.read()
        file_id = str(uuid.uuid4())
        files[file_id] = (item.filename or "", content)
        while len(files) > MAX_FILES:
            del files[next(iter(files))]
        name = item.filename or ""
        return JSONResponse(
            {
                "id": file_id,
                "name": name,
                "project_id": PROJECT_ID,
                "file_type": name.rsplit(".", 1)[-1].lower() if "." in name else None,
                "purpose": purpose,
                "expires_at": None,
                "last_modified_at": _iso(time.time()),
            }
        )

    app.add_api_route("/api/v2/parse/upload", upload, methods=["POST"])
    app.add_api_route("/api/v2/parse", create_from_file, methods=["POST"])
    app.add_api_route("/api/v2/parse", list_jobs, methods=["GET"])
    app.add_api_route("/api/v2/parse/{job_id}", get_job, methods=["GET"])
    app.add_api_route("/api/v2/parse/{job_id}", delete, methods=["DELETE"])
    app.add_api_route("/api/v2/parse/{job_id}/cancel", cancel, methods=["POST"])
    app.add_api_route("/api/v1/beta/files", upload_file, methods=["POST"])
