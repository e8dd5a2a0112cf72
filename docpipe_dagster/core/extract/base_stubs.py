"""Extractors for types whose engine is not installed (OCR is an optional extra)."""

from __future__ import annotations

from docpipe_dagster.core.extract.base import NEEDS_OCR, ExtractedPage, ExtractionError


def needs_ocr(data: bytes) -> list[ExtractedPage]:
    raise ExtractionError(
        NEEDS_OCR,
        "The image needs OCR: pip install 'docpipe_dagster[ocr]', or parse with LlamaParse.",
    )
