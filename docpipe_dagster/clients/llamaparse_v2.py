"""Async client for the LlamaParse v2 parse API (the current one; what `llama-cloud` 2.x calls).

One parse = `POST /api/v2/parse/upload` (multipart: `configuration` as a JSON string + `file`)
-> poll `GET /api/v2/parse/{id}` with a growing interval -> `GET /api/v2/parse/{id}` with
`expand=markdown` (or text) and `expand=job_metadata` -> pages joined in page-number order.
Requests, retries (408/409/429/5xx, timeouts, malformed JSON; `retry-after(-ms)` and
`x-should-retry` honoured) and errors are the v1 client's (llamaparse.py). On top:
- FAILED / CANCELLED jobs become ParseError with the service's error_message;
- a page the service reports `success: false` fails the document (code PAGES_FAILED,
  retryable): a document with a hole in it must not become searchable as if it were whole;
- past the deadline the job is cancelled on the service (`POST /api/v2/parse/{id}/cancel`, so
  it stops spending credits) and the document fails as stuck.
See docs/PARSER.md. No dagster import here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import re
import time
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

import httpx

from docpipe_dagster.clients.llamaparse import (
    PAGE_SEPARATOR,
    PERMANENT_ERROR_CODES,
    LlamaParseClient,
    ParsedDocument,
    ParseError,
    ParseErrorKind,
)
from docpipe_dagster.core.retry import RetryPolicy

log = logging.getLogger("docpipe_dagster.clients.llamaparse")

_ACTIVE = frozenset({"PENDING", "RUNNING"})
_CODE_PREFIX = re.compile(r"^([A-Z][A-Z0-9_]{3,}):\s*")


def _is_job(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("id"), str) and bool(body["id"])


def _has_status(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("job"), dict)
        and isinstance(body["job"].get("status"), str)
    )


class LlamaParseV2Client(LlamaParseClient):
    """LlamaParse v2 client. `base_url` like "https://api.cloud.llamaindex.ai" or
    "http://127.0.0.1:8001"; `tier` and `version` go into every job's configuration, and
    `configuration` adds more of it (e.g. {"processing_options": {...}} or
    {"webhook_configurations": [...]}). Use one instance per event loop."""

    api_version = "v2"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        tier: str = "cost_effective",
        version: str = "latest",
        configuration: dict[str, Any] | None = None,
        result_type: Literal["markdown", "text"] = "markdown",
        poll_interval_s: float = 0.5,
        max_poll_interval_s: float = 5.0,
        deadline_s: float = 600.0,
        timeout_s: float = 60.0,
        max_concurrency: int = 4,
        max_attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            result_type=result_type,
            poll_interval_s=poll_interval_s,
            max_poll_interval_s=max_poll_interval_s,
            deadline_s=deadline_s,
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            transport=transport,
            retry_policy=retry_policy,
        )
        self.tier = tier
        self.version = version
        self.configuration = {**(configuration or {}), "tier": tier, "version": version}

    HEALTH_REQUEST: ClassVar[tuple[str, dict[str, Any]]] = ("/api/v2/parse", {"page_size": 1})

    def __repr__(self) -> str:  # no key, ever
        return f"LlamaParseV2Client({self.base_url!r}, tier={self.tier!r})"

    async def _parse(self, filename: str, content: bytes, media_type: str | None) -> ParsedDocument:
        started = time.monotonic()
        name = PurePosixPath(filename.replace("\\", "/")).name or "document"
        mime = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        created = await self._call(
            "POST",
            "/api/v2/parse/upload",
            what=f"upload of {name!r}",
            files={"file": (name, content, mime)},
            data={"configuration": json.dumps(self.configuration)},
            validate=_is_job,
        )
        job_id: str = created["id"]
        status = str(created.get("status") or "PENDING").upper()
        polls, result = 0, None
        kind = self.result_type
        expand = [("expand", kind), ("expand", "job_metadata")]

        def has_result(body: Any) -> bool:
            return (
                _has_status(body)
                and isinstance(body.get(kind), dict)
                and isinstance(body[kind].get("pages"), list)
            )

        if status != "COMPLETED":  # a cached job answers COMPLETED at once: no poll
            if status in ("FAILED", "CANCELLED"):
                raise self._job_failed(job_id, status, created)
            # Polls ask for the result too: the poll that sees COMPLETED usually carries
            # it, which saves a request per document.
            polls, last = await self._poll(job_id, started, expand)
            result = last if has_result(last) else None
        if result is None:
            result = await self._call(
                "GET",
                f"/api/v2/parse/{job_id}",
                what=f"result of parse job {job_id}",
                job_id=job_id,
                retry_not_found=True,  # results can lag the COMPLETED status briefly
                params=expand,
                validate=has_result,
            )
        numbers, pages = self._pages(job_id, result[kind]["pages"])
        meta = result.get("job_metadata") if isinstance(result.get("job_metadata"), dict) else {}
        return ParsedDocument(
            job_id=job_id,
            markdown=PAGE_SEPARATOR.join(pages),
            pages=pages,
            page_count=len(pages),
            cache_hit=bool(meta.get("job_is_cache_hit", False)),
            polls=polls,
            seconds=time.monotonic() - started,
            job_metadata=meta,
            page_numbers=numbers,
        )

    def _pages(self, job_id: str, raw: list[Any]) -> tuple[list[int], list[str]]:
        """Pages in page-number order; any `success: false` page fails the document."""
        key = "markdown" if self.result_type == "markdown" else "text"
        entries = [p for p in raw if isinstance(p, dict)]
        entries.sort(key=lambda p: int(p.get("page_number") or 0))
        failed = [p for p in entries if p.get("success") is False]
        if failed:
            shown = "; ".join(
                f"page {p.get('page_number')}: {p.get('error') or 'no error message'}"
                for p in failed[:5]
            )
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise ParseError(
                f"parse job {job_id}: {len(failed)} of {len(entries)} pages failed: {shown}{more}",
                kind="error",
                retryable=True,
                code="PAGES_FAILED",
                job_id=job_id,
            )
        numbers = [int(p.get("page_number") or i) for i, p in enumerate(entries, start=1)]
        return numbers, [str(p.get(key) or "") for p in entries]

    async def _poll(
        self, job_id: str, started: float, params: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any]]:
        """Poll until the job ends; returns the number of polls and the last answer.
        Raises ParseError."""
        deadline = started + self.deadline_s
        interval = self.poll_interval_s
        polls = 0
        while True:
            body = await self._call(
                "GET",
                f"/api/v2/parse/{job_id}",
                what=f"status of parse job {job_id}",
                job_id=job_id,
                params=params,
                validate=_has_status,
            )
            polls += 1
            job = body["job"]
            status = job["status"].upper()
            if status == "COMPLETED":
                return polls, body
            if status not in _ACTIVE:  # FAILED, CANCELLED, or one this client does not know
                raise self._job_failed(job_id, status, job)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._cancel(job_id)
                raise ParseError(
                    f"parse job {job_id} still {status} after {self.deadline_s:g} s "
                    "(cancelled on the service)",
                    kind="stuck",
                    retryable=True,
                    job_id=job_id,
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval_s)

    async def _cancel(self, job_id: str) -> None:
        """Ask the service to stop the job; a failure is logged, never raised (the
        document fails as stuck either way)."""
        try:
            await self._call(
                "POST",
                f"/api/v2/parse/{job_id}/cancel",
                what=f"cancel of parse job {job_id}",
                job_id=job_id,
                validate=_is_job,
            )
        except ParseError as exc:
            log.warning("llamaparse: could not cancel stuck job %s: %s", job_id, exc.reason)

    @staticmethod
    def _job_failed(job_id: str, status: str, job: dict[str, Any]) -> ParseError:
        message = str(job.get("error_message") or "no error message")
        code = job.get("error_code")
        if not code and (m := _CODE_PREFIX.match(message)):
            code, message = m.group(1), message[m.end() :]
        if not code and status == "CANCELLED":
            code = "CANCELLED"
        kind: ParseErrorKind = "unsupported" if code == "UNSUPPORTED_FILE_TYPE" else "error"
        return ParseError(
            f"parse job {job_id} ended {status}: {code or 'no error code'}: {message}",
            kind=kind,
            retryable=code not in PERMANENT_ERROR_CODES,
            code=code,
            job_id=job_id,
        )
