"""In-process parsing of files that need no parser service (plain text, JSON, ...).

Same result shape as the parser client's, so the chunks are the same; see docs/PARSER.md.
"""

from __future__ import annotations

import time

from docpipe_dagster.clients.llamaparse import PAGE_SEPARATOR, ParsedDocument, ParseError
from docpipe_dagster.core.extract import (
    UNSUPPORTED_FILE_TYPE,
    ExtractionError,
    extract,
    file_extension,
)

LOCAL_PROFILE_PREFIX = "local-v1"


def local_profile(result_type: str) -> str:
    """Parse-cache profile of local results: never the same as a remote parser's."""
    return f"{LOCAL_PROFILE_PREFIX}:{result_type}"


def is_local(filename: str, extensions: frozenset[str]) -> bool:
    return file_extension(filename) in extensions


def parse_locally(filename: str, data: bytes, result_type: str = "markdown") -> ParsedDocument:
    """Extract `data` by the extension of `filename`; ExtractionError becomes ParseError
    (never retryable: the same bytes fail the same way)."""
    started = time.monotonic()
    try:
        pages = extract(filename, data)
    except ExtractionError as exc:
        raise ParseError(
            exc.message,
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
