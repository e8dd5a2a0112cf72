"""Placeholder: being written on branch formats-backend."""

from __future__ import annotations

from docpipe_dagster.core.extract.base import UNSUPPORTED_FILE_TYPE, ExtractedPage, ExtractionError


def extract_epub(data: bytes) -> list[ExtractedPage]:
    raise ExtractionError(UNSUPPORTED_FILE_TYPE, "This file type is not parsed locally yet.")
