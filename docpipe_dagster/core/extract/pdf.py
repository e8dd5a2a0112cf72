"""PDF: the text layer of each page with PDFium (pypdfium2), OCR for pages without one.

One page per PDF page, so page numbers stay the PDF's. A page with no text but something
drawn on it (a scan, a photo, text turned into outlines) is rendered and OCRed; a PDF that
mixes text pages and scanned pages gets both. Without an OCR engine a PDF whose pages are all
scans fails with NEEDS_OCR; one that also has text pages keeps those and leaves its scanned
pages empty (docs/PARSER.md, "OCR and PDF"). Why PDFium and not pypdf: it is several times
faster, reads more damaged files, and renders pages for OCR; it never runs a PDF's
JavaScript (pypdfium2's PDFium is built without a JavaScript engine).
"""

from __future__ import annotations

import re
import threading

from docpipe_dagster.core.extract import ocr
from docpipe_dagster.core.extract.base import (
    NEEDS_OCR,
    PDF_CORRUPTED,
    PDF_IS_PROTECTED,
    ExtractedPage,
    ExtractionError,
)

_PDF_HEADER = re.compile(rb"%PDF-\d")
# Control characters PDFium leaves in text (soft-hyphen markers, NULs); tab, LF and FF stay.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffe\uffff]")
PROTECTED = "Could not open PDF, as it seems to be protected."
# Scans are rendered so the longer side is about OCR_LONG_SIDE pixels (~180 dpi for
# A4/Letter, what the OCR models are trained near), never above OCR_MAX_SCALE (200 dpi).
OCR_LONG_SIDE = 2000
OCR_MAX_SCALE = 200 / 72
# PDFium is not thread-safe; one document at a time per process.
_pdfium_lock = threading.Lock()


def extract_pdf(data: bytes) -> list[ExtractedPage]:
    if not _PDF_HEADER.search(data[:1024]):
        raise ExtractionError(PDF_CORRUPTED, "The file is not a PDF: no %PDF header found.")
    import pypdfium2 as pdfium

    with _pdfium_lock:
        doc = _open(data)
        try:
            texts, scanned = _text_layer(doc)
            if scanned:
                engine = ocr.engine()
                if engine is None and not any(t.strip() for t in texts):
                    raise ExtractionError(
                        NEEDS_OCR,
                        f"The PDF has no text layer (scanned pages) and {ocr.NEEDS_OCR_HINT}.",
                    )
                # One page at a time: a long scan never holds all its page images at once.
                for index in scanned if engine is not None else ():
                    texts[index] = ocr.recognise(_render(doc, index), engine)
        except pdfium.PdfiumError as exc:
            raise _corrupted(exc) from None
        finally:
            doc.close()
    return [ExtractedPage(text=t, md=t) for t in texts]


def _open(data: bytes):  # -> pypdfium2.PdfDocument
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    try:
        # An owner-password-only PDF opens with the empty user password, as in viewers.
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) in (raw.FPDF_ERR_PASSWORD, raw.FPDF_ERR_SECURITY):
            raise ExtractionError(PDF_IS_PROTECTED, PROTECTED) from None
        raise _corrupted(exc) from None


def _corrupted(exc: Exception) -> ExtractionError:
    return ExtractionError(
        PDF_CORRUPTED, f"The PDF is corrupted or truncated and could not be read ({exc})."
    )


def _text_layer(doc) -> tuple[list[str], list[int]]:
    """Each page's text, and the indexes of pages to OCR (no text, something drawn)."""
    import pypdfium2.raw as raw

    if len(doc) == 0:
        raise ExtractionError(PDF_CORRUPTED, "The PDF has no readable pages.")
    texts: list[str] = []
    scanned: list[int] = []
    for index in range(len(doc)):
        page = doc[index]
        try:
            textpage = page.get_textpage()
            text = _clean(textpage.get_text_bounded())
            textpage.close()
            if not text.strip():
                drawn = page.get_objects(
                    filter=(raw.FPDF_PAGEOBJ_IMAGE, raw.FPDF_PAGEOBJ_PATH), max_depth=3
                )
                if next(iter(drawn), None) is not None:
                    scanned.append(index)
            texts.append(text)
        finally:
            page.close()
    return texts, scanned


def _render(doc, index: int):  # -> PIL.Image.Image
    page = doc[index]
    try:
        width, height = page.get_size()
        scale = min(OCR_MAX_SCALE, OCR_LONG_SIDE / max(width, height, 1.0))
        bitmap = page.render(scale=scale, grayscale=True)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        page.close()


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text).strip("\n")
