"""In-process content extraction: text, markdown, HTML, CSV/TSV, JSON, PDF and office formats.

Two users: the pipeline parses file types in-process (no parser call, no credits; see
docs/PARSER.md, "Local backend"), and the LlamaParse mock parses what it is given with the same
code instead of returning canned text. Each supported type yields pages of (text, markdown).

`EXTRACTORS` maps an extension to "module:function" in this package, imported on first use
(the office libraries are not loaded to parse a .txt). Choices: a zero-byte file is an error
(NO_DATA_FOUND_IN_FILE); a non-empty file whose text is blank (e.g. a PDF of blank pages)
succeeds with empty pages, as the real service does for documents without extractable text.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    LIMIT_EXCEEDED,
    NEEDS_LIBREOFFICE,
    NEEDS_OCR,
    NO_DATA_FOUND_IN_FILE,
    PDF_CORRUPTED,
    PDF_IS_PROTECTED,
    PROTECTED_FILE,
    UNREADABLE_FILE,
    UNSAFE_FILE,
    UNSUPPORTED_FILE_TYPE,
    ExtractedPage,
    ExtractionError,
    file_extension,
)
from docpipe_dagster.core.extract.html import html_to_page
from docpipe_dagster.core.extract.text import decode_text, markdown_table

__all__ = [
    "CORRUPTED_FILE",
    "EXTRACTORS",
    "LIMIT_EXCEEDED",
    "LOCAL_EXTENSIONS",
    "NEEDS_LIBREOFFICE",
    "NEEDS_OCR",
    "NO_DATA_FOUND_IN_FILE",
    "PDF_CORRUPTED",
    "PDF_IS_PROTECTED",
    "PROTECTED_FILE",
    "TEXT_LIKE_EXTENSIONS",
    "UNREADABLE_FILE",
    "UNSAFE_FILE",
    "UNSUPPORTED_FILE_TYPE",
    "ExtractedPage",
    "ExtractionError",
    "decode_text",
    "extract",
    "file_extension",
    "html_to_page",
    "markdown_table",
]

# Older names, kept for the mock and its tests.
TEXT_EXTENSIONS = (".txt", ".text", ".log")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
TABLE_EXTENSIONS = (".csv", ".tsv")
JSON_EXTENSIONS = (".json",)
PDF_EXTENSIONS = (".pdf",)

_TEXT = "text:extract_text"
_OOXML_WORD = "office:extract_docx"
_OOXML_SLIDES = "pptx:extract_pptx"
_IMAGE = "images:extract_image"

# extension -> "module:function" (module relative to this package; the function takes bytes).
EXTRACTORS: dict[str, str] = {
    # text-like: no layout to parse
    ".txt": _TEXT,
    ".text": _TEXT,
    ".log": _TEXT,
    ".md": _TEXT,
    ".markdown": _TEXT,
    ".rst": _TEXT,
    ".xml": _TEXT,
    ".yaml": _TEXT,
    ".yml": _TEXT,
    ".json": "text:extract_json",
    ".jsonl": _TEXT,
    ".ndjson": _TEXT,
    ".csv": "text:extract_csv",
    ".tsv": "text:extract_tsv",
    ".html": "html:extract_html",
    ".htm": "html:extract_html",
    ".xhtml": "html:extract_html",
    # layout formats
    ".pdf": "pdf:extract_pdf",
    ".docx": _OOXML_WORD,
    ".docm": _OOXML_WORD,
    ".dotx": _OOXML_WORD,
    ".dotm": _OOXML_WORD,
    ".pptx": _OOXML_SLIDES,
    ".pptm": _OOXML_SLIDES,
    ".potx": _OOXML_SLIDES,
    ".ppsx": _OOXML_SLIDES,
    ".xlsx": "sheets:extract_xlsx",
    ".xlsm": "sheets:extract_xlsx",
    ".xltx": "sheets:extract_xlsx",
    ".xls": "sheets:extract_xls",
    ".odt": "odf:extract_odt",
    ".ods": "odf:extract_ods",
    ".odp": "odf:extract_odp",
    ".epub": "epub:extract_epub",
    ".rtf": "rtf:extract_rtf",
    ".eml": "email:extract_eml",
    ".msg": "email:extract_msg",
    ".doc": "legacy:extract_doc",
    ".ppt": "legacy:extract_ppt",
    # images (OCR)
    ".png": _IMAGE,
    ".jpg": _IMAGE,
    ".jpeg": _IMAGE,
    ".tif": _IMAGE,
    ".tiff": _IMAGE,
    ".webp": _IMAGE,
    ".bmp": _IMAGE,
    ".gif": _IMAGE,
}

# Parsed in-process by default: they need no layout parsing (docs/PARSER.md).
TEXT_LIKE_EXTENSIONS: frozenset[str] = frozenset(
    ext for ext, target in EXTRACTORS.items() if target.split(":")[0] in ("text", "html")
)
# Everything the local backend can parse.
LOCAL_EXTENSIONS: frozenset[str] = frozenset(EXTRACTORS)


def _extractor(target: str) -> Callable[[bytes], list[ExtractedPage]]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)


def extract(filename: str, data: bytes) -> list[ExtractedPage]:
    """Parse `data` by the extension of `filename` into one or more pages."""
    ext = file_extension(filename)
    target = EXTRACTORS.get(ext)
    if target is None:
        shown = ext or "(no extension)"
        raise ExtractionError(
            UNSUPPORTED_FILE_TYPE,
            f"File type {shown} is not supported. Supported: {', '.join(sorted(EXTRACTORS))}",
        )
    if not data:
        raise ExtractionError(NO_DATA_FOUND_IN_FILE, "The file is empty (0 bytes).")
    return _extractor(target)(data)
