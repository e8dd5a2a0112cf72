"""The mock's extraction is the product's local extractor (docpipe_dagster.core.extract):
one implementation, so a locally parsed file and a mock-parsed one give the same text."""

from docpipe_dagster.core.extract import (  # noqa: F401  (re-exported for the mock and tests)
    HTML_EXTENSIONS,
    JSON_EXTENSIONS,
    MARKDOWN_EXTENSIONS,
    NO_DATA_FOUND_IN_FILE,
    PDF_CORRUPTED,
    PDF_EXTENSIONS,
    PDF_IS_PROTECTED,
    SUPPORTED_EXTENSIONS,
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
