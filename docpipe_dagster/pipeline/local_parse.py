"""Local parsing: files parsed by docpipe itself, no parser service.

Text-like types are parsed in this process; every other type (PDF, office, images, ...) in
a worker process of the parse sandbox, bounded in memory, CPU and time, so a hostile file
fails alone and never takes the run worker down (docs/RELIABILITY.md). Same result shape as
the parser client's, so the chunks are the same; see docs/PARSER.md.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

from docpipe_dagster.clients.llamaparse import PAGE_SEPARATOR, ParsedDocument, ParseError
from docpipe_dagster.config import Settings, settings
from docpipe_dagster.core.extract import (
    TEXT_LIKE_EXTENSIONS,
    UNSUPPORTED_FILE_TYPE,
    ExtractionError,
    extract,
    file_extension,
)
from docpipe_dagster.core.extract.sandbox import (
    PARSE_MEMORY,
    PARSE_TIMEOUT,
    PARSER_CRASHED,
    Limits,
    SandboxPool,
)

# Which setting to change, said in the failure reason of a document that hit a bound.
_SETTING_OF = {
    PARSE_TIMEOUT: "DOCPIPE_PARSE_TIMEOUT_SECONDS",
    PARSE_MEMORY: "DOCPIPE_PARSE_MEMORY_MB",
    PARSER_CRASHED: "DOCPIPE_PARSE_MEMORY_MB",
}
_pool_lock = threading.Lock()
_pool: SandboxPool | None = None

# v2: PDF text by PDFium, OCR of images and scans (v1 results are not reused).
LOCAL_PROFILE_PREFIX = "local-v2"


def local_profile(result_type: str) -> str:
    """Parse-cache profile of local results: never the same as a remote parser's."""
    return f"{LOCAL_PROFILE_PREFIX}:{result_type}"


def is_local(filename: str, extensions: frozenset[str]) -> bool:
    return file_extension(filename) in extensions


def sandbox_limits() -> Limits:
    s = settings()
    return Limits(
        memory_mb=s.parse_memory_mb,
        timeout_seconds=s.parse_timeout_seconds,
        workers=max(1, s.parse_workers),
    )


def sandbox() -> SandboxPool:
    """This process's pool of parse workers, (re)started when the settings changed."""
    global _pool
    limits = sandbox_limits()
    with _pool_lock:
        if _pool is None or _pool.limits != limits:
            old, _pool = _pool, SandboxPool(limits, env=_worker_env())
            if old is not None:
                old.close()
        return _pool


def _worker_env() -> dict[str, str]:
    """This process's environment without docpipe's secrets (API keys, database URLs): a
    process that parses untrusted files has no use for them."""
    secret = {
        field.json_schema_extra["env"]  # type: ignore[index]
        for field in Settings.model_fields.values()
        if field.json_schema_extra["secret"]  # type: ignore[index]
    }
    return {k: v for k, v in os.environ.items() if k not in secret}


def _close_sandbox() -> None:
    with _pool_lock:
        if _pool is not None:
            _pool.close()


atexit.register(_close_sandbox)


def parse_locally(filename: str, data: bytes, result_type: str = "markdown") -> ParsedDocument:
    """Extract `data` by the extension of `filename`; ExtractionError becomes ParseError
    (never retryable: the same bytes fail the same way, within the same bounds)."""
    started = time.monotonic()
    try:
        if file_extension(filename) in TEXT_LIKE_EXTENSIONS or not data:
            pages = extract(filename, data)
        else:
            pages = sandbox().extract(filename, data)
    except ExtractionError as exc:
        setting = _SETTING_OF.get(exc.code)
        raise ParseError(
            f"{exc.message} ({setting})" if setting else exc.message,
            kind="unsupported" if exc.code == UNSUPPORTED_FILE_TYPE else "error",
            retryable=False,
            code=exc.code,
        ) from None
    texts = [p.md if result_type == "markdown" else p.text for p in pages]
    return ParsedDocument(
        job_id="",
        markdown=PAGE_SEPARATOR.join(texts),
        pages=texts,
        page_count=len(texts),
        cache_hit=False,
        polls=0,
        seconds=time.monotonic() - started,
        page_numbers=list(range(1, len(texts) + 1)),
    )
