"""OpenDocument text, spreadsheets and presentations, read from content.xml with defusedxml.

ODT: text:h outline levels become markdown headings, lists and tables markdown. ODS: one page
per sheet (rows streamed with iterparse, repeated empty rows never expanded). ODP: one page per
slide, the title frame as heading, speaker notes included.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator

import defusedxml
import defusedxml.ElementTree as DET

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    PROTECTED_FILE,
    UNSAFE_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import open_zip, read_member
from docpipe_dagster.core.extract.sheets import MAX_CELLS, _SheetWriter
from docpipe_dagster.core.extract.text import markdown_table

_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
}


def _q(name: str) -> str:
    prefix, _, local = name.partition(":")
    return f"{{{_NS[prefix]}}}{local}"


H, P, LIST, ITEM, HEADER_ITEM = (
    _q("text:h"),
    _q("text:p"),
    _q("text:list"),
    _q("text:list-item"),
    _q("text:list-header"),
)
SPACE, TAB, BREAK = _q("text:s"), _q("text:tab"), _q("text:line-break")
NOTE_CITATION, TOC = _q("text:note-citation"), _q("text:table-of-content")
TABLE, ROW, CELL, COVERED = (
    _q("table:table"),
    _q("table:table-row"),
    _q("table:table-cell"),
    _q("table:covered-table-cell"),
)
FRAME, PAGE, NOTES = _q("draw:frame"), _q("draw:page"), _q("presentation:notes")
CLASS, LEVEL, NAME = _q("presentation:class"), _q("text:outline-level"), _q("table:name")
ROWS_REPEATED, COLS_REPEATED = _q("table:number-rows-repeated"), _q("table:number-columns-repeated")
# Repeats beyond this are layout filler (an ODS pads sheets to 1,048,576 rows and 1,024 columns).
_MAX_REPEAT = 100


def _open(data: bytes, kind: str) -> zipfile.ZipFile:
    archive = open_zip(data, kind)
    if "META-INF/manifest.xml" in archive.namelist():
        manifest = read_member(archive, "META-INF/manifest.xml", kind)
        if b"encryption-data" in manifest:
            archive.close()
            raise ExtractionError(PROTECTED_FILE, f"The {kind} is password-protected.")
    return archive


def _parse_error(kind: str, exc: Exception) -> ExtractionError:
    if isinstance(exc, defusedxml.DefusedXmlException):
        return ExtractionError(UNSAFE_FILE, f"The {kind} declares XML entities; refused.")
    return ExtractionError(CORRUPTED_FILE, f"The {kind} has malformed XML ({exc}).")


def _content(data: bytes, kind: str) -> ET.Element:
    with _open(data, kind) as archive:
        xml = read_member(archive, "content.xml", kind)
    try:
        return DET.fromstring(xml)
    except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
        raise _parse_error(kind, exc) from exc


def _inline(el: ET.Element) -> str:
    """The text of a paragraph-like element with its spans, spaces, tabs and breaks."""
    out: list[str] = [el.text or ""]
    for child in el:
        if child.tag == SPACE:
            out.append(" " * min(int(child.get(_q("text:c"), "1") or 1), 100))
        elif child.tag == TAB:
            out.append("\t")
        elif child.tag == BREAK:
            out.append("\n")
        elif child.tag != NOTE_CITATION:
            out.append(_inline(child))
        out.append(child.tail or "")
    return "".join(out)


def _one_line(el: ET.Element) -> str:
    return " ".join(_inline(el).split())


def _table(el: ET.Element) -> str:
    rows: list[list[str]] = []
    for row in el.iter(ROW):
        cells: list[str] = []
        for cell in row:
            if cell.tag not in (CELL, COVERED):
                continue
            text = " ".join(_one_line(p) for p in cell if p.tag in (P, H))
            repeat = min(int(cell.get(COLS_REPEATED, "1") or 1), _MAX_REPEAT if text else 1)
            cells += [text] * repeat
        rows.append(cells)
    return markdown_table(rows)


def _blocks(el: ET.Element, depth: int = 0) -> Iterator[str]:
    """Markdown blocks of a text container in document order."""
    for child in el:
        if child.tag == H:
            level = min(max(int(child.get(LEVEL, "1") or 1), 1), 6)
            text = _one_line(child)
            if text:
                yield "#" * level + " " + text
        elif child.tag == P:
            text = _inline(child).strip()
            if text:
                yield text
        elif child.tag == LIST:
            lines = list(_list_items(child, depth))
            if lines:
                yield "\n".join(lines)
        elif child.tag == TABLE:
            table = _table(child)
            if table:
                yield table
        elif child.tag == TOC:
            continue  # repeats the headings that follow
        else:
            yield from _blocks(child, depth)  # sections, frames, text boxes, change tracking


def _list_items(el: ET.Element, depth: int) -> Iterator[str]:
    for item in el:
        if item.tag not in (ITEM, HEADER_ITEM):
            continue
        for child in item:
            if child.tag == LIST:
                yield from _list_items(child, depth + 1)
            elif child.tag in (P, H):
                text = _one_line(child)
                if text:
                    yield "  " * depth + "- " + text


def _page(parts: list[str]) -> ExtractedPage:
    md = "\n\n".join(parts)
    return ExtractedPage(text=md, md=md)


def extract_odt(data: bytes) -> list[ExtractedPage]:
    """An OpenDocument text as one page of markdown."""
    root = _content(data, "OpenDocument text")
    body = root.find("office:body/office:text", _NS)
    if body is None:
        raise ExtractionError(CORRUPTED_FILE, "The OpenDocument text has no text body.")
    return [_page(list(_blocks(body)))]


def extract_odp(data: bytes) -> list[ExtractedPage]:
    """An OpenDocument presentation, one page per slide (title as heading, notes included)."""
    root = _content(data, "OpenDocument presentation")
    pages = []
    for number, slide in enumerate(root.iter(PAGE), start=1):
        title = ""
        parts: list[str] = []
        for frame in slide.findall(FRAME):
            role = frame.get(CLASS, "")
            text = "\n\n".join(_blocks(frame))
            if role == "title" and not title:
                title = " ".join(text.split())
            elif text:
                parts.append(text)
        notes = slide.find(NOTES)
        if notes is not None:
            note_text = "\n\n".join(
                "\n\n".join(_blocks(f)) for f in notes.iter(FRAME) if f.get(CLASS) == "notes"
            ).strip()
            if note_text:
                parts.append("Notes: " + note_text)
        pages.append(_page([f"# {title or f'Slide {number}'}", *parts]))
    return pages


def extract_ods(data: bytes) -> list[ExtractedPage]:
    """An OpenDocument spreadsheet, one page per sheet, rows streamed."""
    kind = "OpenDocument spreadsheet"
    with _open(data, kind) as archive:
        xml = read_member(archive, "content.xml", kind)
    pages: list[ExtractedPage] = []
    budget = [MAX_CELLS]
    writer: _SheetWriter | None = None
    try:
        for event, el in DET.iterparse(io.BytesIO(xml), events=("start", "end")):
            if event == "start":
                if el.tag == TABLE and writer is None:
                    writer = _SheetWriter(el.get(NAME, f"Sheet {len(pages) + 1}"), budget)
                continue
            if el.tag == ROW and writer is not None:
                cells: list[str] = []
                for cell in el:
                    if cell.tag in (CELL, COVERED):
                        text = " ".join(_one_line(p) for p in cell if p.tag in (P, H))
                        repeat = int(cell.get(COLS_REPEATED, "1") or 1)
                        cells += [text] * min(repeat, _MAX_REPEAT if text else 1)
                repeat = int(el.get(ROWS_REPEATED, "1") or 1)
                for _ in range(min(repeat, _MAX_REPEAT if any(cells) else 1)):
                    writer.add(cells)
                el.clear()
            elif el.tag == TABLE and writer is not None:
                pages.append(writer.page())
                writer = None
                el.clear()
    except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
        raise _parse_error(kind, exc) from exc
    return pages
