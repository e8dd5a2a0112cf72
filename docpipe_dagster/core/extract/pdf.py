"""Text PDFs with pypdf, one page per PDF page."""

from __future__ import annotations

import io
import logging
import re

from docpipe_dagster.core.extract.base import (
    PDF_CORRUPTED,
    PDF_IS_PROTECTED,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.text import normalise_newlines

logger = logging.getLogger(__name__)

# --- PDF -------------------------------------------------------------------------------------

_PDF_HEADER = re.compile(rb"%PDF-\d")


def extract_pdf(data: bytes) -> list[ExtractedPage]:
    # Imported here so the rest of the mock works without pypdf.
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not _PDF_HEADER.search(data[:1024]):
        raise ExtractionError(PDF_CORRUPTED, "The file is not a PDF: no %PDF header found.")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # An owner-password-only PDF opens with the empty user password; anything else is
            # protected, as on the real service.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                raise ExtractionError(
                    PDF_IS_PROTECTED, "Could not open PDF, as it seems to be protected."
                ) from exc
            if not opened:
                raise ExtractionError(
                    PDF_IS_PROTECTED, "Could not open PDF, as it seems to be protected."
                )
        pages = [normalise_newlines(page.extract_text() or "").strip("\n") for page in reader.pages]
    except ExtractionError:
        raise
    except FileNotDecryptedError as exc:
        raise ExtractionError(
            PDF_IS_PROTECTED, "Could not open PDF, as it seems to be protected."
        ) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        logger.debug("pypdf failed: %s", exc)
        raise ExtractionError(
            PDF_CORRUPTED, f"The PDF is corrupted or truncated and could not be read ({exc})."
        ) from exc
    if not pages:
        raise ExtractionError(PDF_CORRUPTED, "The PDF has no readable pages.")
    return [ExtractedPage(text=p, md=p) for p in pages]
