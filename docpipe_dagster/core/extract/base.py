"""What every extractor shares: the page type, the error type and its codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# Codes a caller may branch on; none of these succeed on a retry of the same bytes.
# Named after the real service where it has a name (UNSUPPORTED_FILE_TYPE, PDF_IS_PROTECTED,
# NO_DATA_FOUND_IN_FILE); the others are docpipe's (docs/PARSER.md, "Local backend").
UNSUPPORTED_FILE_TYPE = "UNSUPPORTED_FILE_TYPE"
PDF_IS_PROTECTED = "PDF_IS_PROTECTED"
PDF_CORRUPTED = "PDF_CORRUPTED"
NO_DATA_FOUND_IN_FILE = "NO_DATA_FOUND_IN_FILE"
UNREADABLE_FILE = "UNREADABLE_FILE"
# A password-protected (encrypted) office document, e-book or archive.
PROTECTED_FILE = "PROTECTED_FILE"
# Truncated or broken container/XML, or content that contradicts the extension.
CORRUPTED_FILE = "CORRUPTED_FILE"
# A size bound was hit: a zip bomb, too many members, too many cells.
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
# Content docpipe refuses to parse: XML with entity declarations (an entity bomb).
UNSAFE_FILE = "UNSAFE_FILE"
# Legacy binary Office (.doc/.ppt) without LibreOffice installed.
NEEDS_LIBREOFFICE = "NEEDS_LIBREOFFICE"
# An image or scanned page without an OCR engine installed.
NEEDS_OCR = "NEEDS_OCR"


@dataclass(frozen=True)
class ExtractedPage:
    text: str
    md: str


class ExtractionError(Exception):
    """The document cannot be parsed; `code` is what the job reports as error_code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def file_extension(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def page(md: str, text: str | None = None) -> ExtractedPage:
    """A page from its markdown; the text form is the markdown unless given."""
    return ExtractedPage(text=md if text is None else text, md=md)
