"""The mock's extraction is the product's local extractor (docpipe_dagster.core.extract):
one implementation, so a locally parsed file and a mock-parsed one give the same text.

What the mock accepts is what the real service reads: the `llama-cloud` SDK's
LlamaParseSupportedFileExtensions (core/llamaparse_extensions.py, generated from it). A type
off that list fails the job with UNSUPPORTED_FILE_TYPE, as the service does; a type on it that
the local backend cannot read (.key, .mp3, ...) fails with the same code, saying the mock
cannot parse it. The legacy v1 routes also parse what only the local backend reads (.txt).
"""

from docpipe_dagster.core.extract import (  # noqa: F401  (re-exported for the mock and tests)
    HTML_EXTENSIONS,
    JSON_EXTENSIONS,
    LOCAL_EXTENSIONS,
    MARKDOWN_EXTENSIONS,
    NO_DATA_FOUND_IN_FILE,
    PDF_CORRUPTED,
    PDF_EXTENSIONS,
    PDF_IS_PROTECTED,
    TABLE_EXTENSIONS,
    TEXT_EXTENSIONS,
    UNREADABLE_FILE,
    UNSUPPORTED_FILE_TYPE,
    ExtractedPage,
    ExtractionError,
    decode_text,
    extract,
    file_extension,
    html_to_page,
    markdown_table,
)
from docpipe_dagster.core.llamaparse_extensions import LLAMAPARSE_EXTENSIONS

# What the mock advertises (GET .../supported_file_extensions): the real service's list.
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(LLAMAPARSE_EXTENSIONS))


def parse_as_service(
    filename: str, data: bytes, *, service_types_only: bool = True
) -> list[ExtractedPage]:
    """Parse as the service would: a type it does not read fails as it fails there."""
    ext = file_extension(filename)
    if service_types_only and ext not in LLAMAPARSE_EXTENSIONS:
        raise ExtractionError(
            UNSUPPORTED_FILE_TYPE, f"Unsupported file type: {ext or '(no extension)'}"
        )
    if ext not in LOCAL_EXTENSIONS:
        raise ExtractionError(
            UNSUPPORTED_FILE_TYPE,
            f"The mock cannot parse {ext} files (LlamaParse reads them; docpipe's local "
            "backend, which the mock parses with, does not).",
        )
    return extract(filename, data)
