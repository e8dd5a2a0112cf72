"""Async client for the LlamaParse v1 parsing API (cloud.llamaindex.ai and the local mock).

v1 is legacy (DOCPIPE_PARSER_API=v1); the default is the v2 client in llamaparse_v2.py, which
reuses this module's requests, retries and errors.

One parse = upload (multipart `file`) -> poll the job with a growing interval -> fetch the JSON
result (per-page text and markdown). What it adds over the official SDK's loop:
- retries 408/409/429/5xx, timeouts, connection errors and malformed JSON with exponential
  backoff + full jitter, honouring `retry-after(-ms)`, on the shared `core.retry.Retrier`
  with the client's circuit breaker (as the embeddings client does);
- a hard deadline per job: a job still PENDING after `deadline_s` becomes
  ParseError(kind="stuck", retryable=True) instead of a poll loop that never ends;
- failed jobs become ParseError with the server's error_code and message, and `retryable`
  False for failures that the same bytes will always hit (unsupported, protected, corrupt,
  empty) and True otherwise (INTERNAL_ERROR, EXPIRED, unknown codes);
- bounded concurrency over ONE reused httpx.AsyncClient; the API key never appears in a
  message, a repr or a log line.
No dagster import here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

import httpx

from docpipe_dagster.clients._http import AsyncApiClient
from docpipe_dagster.core.breaker import CircuitBreaker
from docpipe_dagster.core.retry import Retrier, RetryPolicy, ServiceError, is_retryable_status

log = logging.getLogger(__name__)

ParseErrorKind = Literal["error", "stuck", "http", "unsupported", "timeout"]
PAGE_SEPARATOR = "\n---\n"
# Job error codes that the same bytes will hit again: retrying only spends credits.
# (Real codes: UNSUPPORTED_FILE_TYPE, PDF_IS_PROTECTED, NO_DATA_FOUND_IN_FILE; the others are
# the mock's or older names for the same failures.)
PERMANENT_ERROR_CODES = frozenset(
    {
        "UNSUPPORTED_FILE_TYPE",
        "PDF_IS_PROTECTED",
        "PDF_ENCRYPTED",
        "PDF_CORRUPTED",
        "PDF_IS_BROKEN",
        "NO_DATA_FOUND_IN_FILE",
        "EMPTY_FILE",
        "UNREADABLE_FILE",
        "FILE_TOO_LARGE",
    }
)
_TERMINAL_OK = frozenset({"SUCCESS", "PARTIAL_SUCCESS"})
_TERMINAL_FAILED = frozenset({"ERROR", "CANCELED", "CANCELLED"})
SIGNATURE_HEADER = "X-Docpipe-Signature"  # the mock's v1 webhooks
LC_SIGNATURE_HEADER = "LC-Signature"  # LlamaParse v2 webhooks (same sha256=<hex> scheme)


class ParseError(ServiceError):
    """A parse that did not produce a document.

    reason (the message): human-readable; code: the server's error_code if any; retryable:
    whether trying again later may help; kind: "error" (job failed), "stuck" (deadline passed
    while PENDING), "http" (request failed), "unsupported" (file type refused), "timeout"
    (requests timed out); job_id: the service's job, once there is one.
    """

    kind: ParseErrorKind

    def __init__(
        self,
        reason: str,
        *,
        kind: ParseErrorKind,
        retryable: bool,
        code: str | None = None,
        job_id: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            reason, retryable=retryable, status=status, code=code, headers=headers, kind=kind
        )
        self.job_id = job_id

    @property
    def reason(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"ParseError(kind={self.kind!r}, code={self.code!r}, retryable={self.retryable}, "
            f"reason={self.reason!r})"
        )


@dataclass
class ParsedDocument:
    job_id: str
    markdown: str  # pages joined by "\n---\n" (plain text when result_type="text")
    pages: list[str]  # per page, markdown (or text)
    page_count: int
    cache_hit: bool
    polls: int  # status requests made
    seconds: float  # wall time of this parse, upload to result
    job_metadata: dict[str, Any] = field(default_factory=dict)
    page_numbers: list[int] = field(default_factory=list)  # the service's, one per page


def verify_webhook_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Check a `sha256=<hex>` signature header (HMAC-SHA256 of the raw body): LlamaParse v2's
    `LC-Signature` (signed with the webhook's `webhook_signing_secret`), or the mock's v1
    `X-Docpipe-Signature`."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if isinstance(detail, (list, dict)):
            return str(detail)[:300]
        if detail:
            return str(detail)
    return str(body)[:200]


class LlamaParseClient(AsyncApiClient):
    """LlamaParse v1 client. `base_url` like "https://api.cloud.llamaindex.ai" or
    "http://127.0.0.1:8001"; requests go to f"{base_url}/api/parsing/...".

    `upload_options` are extra form fields sent with every upload (e.g. {"language": "en"},
    {"webhook_url": ...}). `retry_policy`, if given, is used as-is; otherwise
    RetryPolicy(max_attempts=max_attempts). Use one instance per event loop.
    """

    extra_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        result_type: Literal["markdown", "text"] = "markdown",
        poll_interval_s: float = 0.5,
        max_poll_interval_s: float = 5.0,
        deadline_s: float = 600.0,
        timeout_s: float = 60.0,
        max_concurrency: int = 4,
        max_attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        upload_options: dict[str, str] | None = None,
    ) -> None:
        if result_type not in ("markdown", "text"):
            raise ValueError("result_type must be 'markdown' or 'text'")
        if max_concurrency < 1 or poll_interval_s <= 0 or deadline_s <= 0:
            raise ValueError("max_concurrency, poll_interval_s and deadline_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.result_type = result_type
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max(max_poll_interval_s, poll_interval_s)
        self.deadline_s = deadline_s
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self.breaker = CircuitBreaker("parser", self.base_url)
        self.upload_options = dict(upload_options or {})
        self._api_key = api_key
        self._transport = transport
        self._rng = random.Random()
        self._init_pool()

    def __repr__(self) -> str:  # no key, ever
        return f"LlamaParseClient({self.base_url!r}, result_type={self.result_type!r})"

    # One authenticated GET that any key may make; the v2 client lists its jobs instead.
    HEALTH_REQUEST: ClassVar[tuple[str, dict[str, Any]]] = (
        "/api/parsing/supported_file_extensions",
        {},
    )

    async def health(self) -> float:
        """Latency in ms of one authenticated GET (no retries); raises ParseError otherwise."""
        client = self._http()
        path, params = self.HEALTH_REQUEST
        start = time.perf_counter()
        try:
            resp = await client.get(path, params=params)
        except httpx.TimeoutException:
            raise ParseError(
                f"health: {self.base_url} timed out", kind="timeout", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            raise ParseError(
                f"health: cannot reach {self.base_url} ({type(exc).__name__})",
                kind="http",
                retryable=True,
            ) from None
        elapsed = (time.perf_counter() - start) * 1000
        problem = self._problem(resp, "health", None, False)
        if problem is not None:
            raise problem
        return elapsed

    # --- requests --------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        job_id: str | None = None,
        validate: Callable[[Any], bool] | None = None,
        retry_not_found: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One API call with retries (core.retry.Retrier, with the breaker); returns the
        parsed JSON body."""
        client = self._http()

        async def attempt() -> Any:
            try:
                resp = await client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                raise ParseError(
                    f"{what}: no answer within {self.timeout_s:g} s",
                    kind="timeout",
                    retryable=True,
                    job_id=job_id,
                ) from None
            except httpx.TransportError as exc:
                raise ParseError(
                    f"{what}: cannot reach {self.base_url} ({type(exc).__name__})",
                    kind="http",
                    retryable=True,
                    job_id=job_id,
                ) from None
            problem = self._problem(resp, what, job_id, retry_not_found)
            if problem is not None:
                raise problem
            try:
                body = resp.json()
            except ValueError:
                ok = False
            else:
                ok = validate(body) if validate else True
            if not ok:
                raise ParseError(
                    f"{what}: malformed response (not the expected JSON)",
                    kind="http",
                    retryable=True,
                    job_id=job_id,
                    status=resp.status_code,
                    headers=resp.headers,
                )
            return body

        retrier = Retrier(
            self.retry_policy, service="llamaparse", logger=log, rng=self._rng, breaker=self.breaker
        )
        return await retrier.call_async(attempt)

    def _problem(
        self, resp: httpx.Response, what: str, job_id: str | None, retry_not_found: bool
    ) -> ParseError | None:
        status = resp.status_code
        if status < 300:
            return None
        detail = _detail(resp)
        unsupported = status in (400, 415, 422) and "support" in detail.lower()
        retryable = is_retryable_status(status) or (retry_not_found and status == 404)
        # The server's own verdict wins, as in the official SDKs.
        should_retry = resp.headers.get("x-should-retry", "").strip().lower()
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        return ParseError(
            f"{what}: HTTP {status}: {detail}",
            kind="unsupported" if unsupported else "http",
            retryable=retryable,
            code="UNSUPPORTED_FILE_TYPE" if unsupported else None,
            job_id=job_id,
            status=status,
            headers=resp.headers,
        )

    # --- the parse -------------------------------------------------------------------------
    async def parse(
        self, filename: str, content: bytes, media_type: str | None = None
    ) -> ParsedDocument:
        """Parse one document. Raises ParseError when no document can be produced."""
        self._http()
        assert self._sem is not None
        async with self._sem:
            return await self._parse(filename, content, media_type)

    async def _parse(self, filename: str, content: bytes, media_type: str | None) -> ParsedDocument:
        started = time.monotonic()
        name = PurePosixPath(filename.replace("\\", "/")).name or "document"
        mime = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        created = await self._call(
            "POST",
            "/api/parsing/upload",
            what=f"upload of {name!r}",
            files={"file": (name, content, mime)},
            data=self.upload_options,
            validate=lambda b: isinstance(b, dict) and isinstance(b.get("id"), str) and b["id"],
        )
        job_id: str = created["id"]
        polls = await self._wait(job_id, started)
        # The joined markdown (or text) result, as the official SDK fetches it: the JSON result
        # repeats the text three more times (text, md, items per page), which for a 50 MB text
        # file held 10-12x its size in memory. It is fetched only when the pages cannot be told
        # apart by the separator (a page whose own text contains it).
        kind = self.result_type
        result = await self._call(
            "GET",
            f"/api/parsing/job/{job_id}/result/{kind}",
            what=f"result of parse job {job_id}",
            job_id=job_id,
            retry_not_found=True,  # results can lag the SUCCESS status briefly
            validate=lambda b: isinstance(b, dict) and isinstance(b.get(kind), str),
        )
        meta = result.get("job_metadata") if isinstance(result.get("job_metadata"), dict) else {}
        expected_pages = int(meta.get("job_pages") or 1)
        pages = [result.pop(kind)] if expected_pages <= 1 else result[kind].split(PAGE_SEPARATOR)
        if len(pages) != expected_pages:
            result = await self._call(
                "GET",
                f"/api/parsing/job/{job_id}/result/json",
                what=f"result of parse job {job_id}",
                job_id=job_id,
                retry_not_found=True,
                validate=lambda b: isinstance(b, dict) and isinstance(b.get("pages"), list),
            )
            key = "md" if kind == "markdown" else "text"
            pages = [str(p.get(key) or "") for p in result["pages"] if isinstance(p, dict)]
        return ParsedDocument(
            job_id=job_id,
            markdown=PAGE_SEPARATOR.join(pages),
            pages=pages,
            page_count=int(meta.get("job_pages") or len(pages)),
            cache_hit=bool(meta.get("job_is_cache_hit", False)),
            polls=polls,
            seconds=time.monotonic() - started,
            job_metadata=meta,
            page_numbers=list(range(1, len(pages) + 1)),
        )

    async def _wait(self, job_id: str, started: float) -> int:
        """Poll until the job ends; returns the number of polls. Raises ParseError."""
        deadline = started + self.deadline_s
        interval = self.poll_interval_s
        polls = 0
        while True:
            body = await self._call(
                "GET",
                f"/api/parsing/job/{job_id}",
                what=f"status of parse job {job_id}",
                job_id=job_id,
                validate=lambda b: isinstance(b, dict) and isinstance(b.get("status"), str),
            )
            polls += 1
            status = body["status"].upper()
            if status in _TERMINAL_OK:
                return polls
            if status in _TERMINAL_FAILED:
                raise self._job_failed(job_id, status, body)
            # PENDING (or a status this client does not know yet): keep waiting.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ParseError(
                    f"parse job {job_id} still {status} after {self.deadline_s:g} s",
                    kind="stuck",
                    retryable=True,
                    job_id=job_id,
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval_s)

    @staticmethod
    def _job_failed(job_id: str, status: str, body: dict[str, Any]) -> ParseError:
        code = body.get("error_code") or ("CANCELED" if status != "ERROR" else None)
        message = body.get("error_message") or "no error message"
        if code == "UNSUPPORTED_FILE_TYPE":
            kind: ParseErrorKind = "unsupported"
        else:
            kind = "error"
        return ParseError(
            f"parse job {job_id} ended {status}: {code or 'no error code'}: {message}",
            kind=kind,
            retryable=code not in PERMANENT_ERROR_CODES,
            code=code,
            job_id=job_id,
        )
