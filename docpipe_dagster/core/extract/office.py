"""Word (mammoth -> HTML -> markdown) and PowerPoint (python-pptx, one page per slide).

Macro-enabled variants (.docm, .pptm) are read like the others: the libraries read the XML
parts and never run the VBA project, which stays an unread binary part.
"""

from __future__ import annotations

import io
import logging
import zipfile

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import open_zip, read_member
from docpipe_dagster.core.extract.html import html_to_page
from docpipe_dagster.core.extract.text import markdown_table

logger = logging.getLogger(__name__)

# Besides mammoth's defaults (Heading 1-6 -> h1-h6, lists, tables): a Title paragraph is the
# document's top heading.
_STYLE_MAP = """
p[style-name='Title'] => h1:fresh
p[style-name='Subtitle'] => p:fresh
"""


def library_failure(kind: str, exc: Exception) -> ExtractionError:
    """A parser library's exception on a file that passed the container checks."""
    logger.debug("%s parser failed", kind, exc_info=exc)
    return ExtractionError(
        CORRUPTED_FILE,
        f"The {kind} is corrupted or malformed and could not be read "
        f"({type(exc).__name__}: {exc}).",
    )


def extract_docx(data: bytes) -> list[ExtractedPage]:
    """A Word document as one page: headings, lists, tables and footnotes kept as markdown."""
    import mammoth

    kind = "Word document"
    open_zip(data, kind).close()
    try:
        result = mammoth.convert_to_html(
            io.BytesIO(data),
            style_map=_STYLE_MAP,
            # Images would become base64 data URIs; only their alt text matters here.
            convert_image=mammoth.images.img_element(lambda image: {"alt": image.alt_text or ""}),
        )
    except ExtractionError:
        raise
    except Exception as exc:  # the library's errors on malformed input have no common base
        raise library_failure(kind, exc) from exc
    return [html_to_page(result.value)]


# --- PowerPoint ------------------------------------------------------------------------------

_PPTX_MAIN = "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"
# Templates and slide shows are presentations with another content type; python-pptx opens
# only the presentation type, so theirs is rewritten in a copy.
_PPTX_OTHER_MAINS = (
    b"application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
    b"application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",
    b"application/vnd.ms-powerpoint.template.macroEnabled.main+xml",
    b"application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml",
)


def _as_presentation(archive: zipfile.ZipFile, data: bytes) -> bytes:
    types = read_member(archive, "[Content_Types].xml", "PowerPoint file")
    if not any(t in types for t in _PPTX_OTHER_MAINS):
        return data
    for other in _PPTX_OTHER_MAINS:
        types = types.replace(other, _PPTX_MAIN.encode())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in archive.infolist():
            body = types if info.filename == "[Content_Types].xml" else archive.read(info)
            copy.writestr(info, body)
    return out.getvalue()


def _shape_blocks(shape, is_body: bool) -> list[str]:  # type: ignore[no-untyped-def]
    """Markdown blocks of one shape (groups recursively, in reading order)."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    blocks: list[str] = []
    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for child in _reading_order(shape.shapes):
            blocks += _shape_blocks(child, is_body=False)
        return blocks
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
        table = markdown_table(rows)
        return [table] if table else []
    if getattr(shape, "has_chart", False) and shape.has_chart:
        chart = shape.chart
        if chart.has_title and chart.chart_title.has_text_frame:
            title = chart.chart_title.text_frame.text.strip()
            return [f"Chart: {title}"] if title else []
        return []
    if not getattr(shape, "has_text_frame", False) or not shape.has_text_frame:
        return []
    lines: list[str] = []
    for para in shape.text_frame.paragraphs:
        text = " ".join(para.text.split())
        if not text:
            continue
        # Body placeholders hold bullet points; other text boxes hold prose.
        lines.append(("  " * para.level + "- " + text) if is_body else text)
    if lines:
        blocks.append("\n".join(lines) if is_body else "\n\n".join(lines))
    return blocks


def _reading_order(shapes):  # type: ignore[no-untyped-def]
    return sorted(shapes, key=lambda s: ((s.top or 0), (s.left or 0)))


def _slide_page(slide, number: int) -> ExtractedPage:  # type: ignore[no-untyped-def]
    from pptx.enum.shapes import PP_PLACEHOLDER

    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
    # Every slide opens with a heading, so no slide inherits the previous slide's title.
    parts = [f"# {title or f'Slide {number}'}"]
    for shape in _reading_order(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        is_body = bool(
            shape.is_placeholder
            and shape.placeholder_format.type in (PP_PLACEHOLDER.BODY, PP_PLACEHOLDER.OBJECT)
        )
        parts += _shape_blocks(shape, is_body)
    if slide.has_notes_slide:
        notes_frame = slide.notes_slide.notes_text_frame
        notes = notes_frame.text.strip() if notes_frame is not None else ""
        if notes:
            parts.append("Notes: " + notes)
    md = "\n\n".join(parts)
    return ExtractedPage(text=md.removeprefix("# "), md=md)


def extract_pptx(data: bytes) -> list[ExtractedPage]:
    """A presentation, one page per slide: the title as heading, text, tables, notes."""
    from pptx import Presentation

    kind = "PowerPoint file"
    archive = open_zip(data, kind)
    try:
        data = _as_presentation(archive, data)
    finally:
        archive.close()
    try:
        prs = Presentation(io.BytesIO(data))
        return [_slide_page(slide, i) for i, slide in enumerate(prs.slides, start=1)]
    except ExtractionError:
        raise
    except Exception as exc:  # the library's errors on malformed input have no common base
        raise library_failure(kind, exc) from exc
