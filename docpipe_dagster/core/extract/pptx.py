"""PowerPoint (.pptx/.pptm/.potx/.ppsx), one page per slide, read from the slide XML with
defusedxml: the title placeholder as heading, body placeholders as bullets (with their
levels), other text boxes as paragraphs, tables as markdown, speaker notes included. Shapes
are read top to bottom, left to right. (python-pptx would bring lxml, Pillow and XlsxWriter
for what this reads.)
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator

import defusedxml
import defusedxml.ElementTree as DET

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    UNSAFE_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import open_zip, read_member
from docpipe_dagster.core.extract.text import markdown_table

KIND = "PowerPoint file"
_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_NOTES_TYPE = "/notesSlide"
_TITLES = ("title", "ctrTitle")
_BODIES = ("body", "obj", "subTitle", None)  # None: a placeholder without a type is a body
_SKIP = ("dt", "ftr", "sldNum", "hdr", "sldImg")


def _xml(archive: zipfile.ZipFile, name: str) -> ET.Element:
    raw = read_member(archive, name, KIND)
    try:
        return DET.fromstring(raw)
    except defusedxml.DefusedXmlException as exc:
        raise ExtractionError(UNSAFE_FILE, f"The {KIND} declares XML entities; refused.") from exc
    except ET.ParseError as exc:
        raise ExtractionError(CORRUPTED_FILE, f"The {KIND} has malformed XML in {name}.") from exc


def _rels(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """Relationship id -> (type, target part path) of `part`."""
    folder, name = posixpath.split(part)
    rels_name = posixpath.join(folder, "_rels", name + ".rels")
    if rels_name not in archive.namelist():
        return {}
    out = {}
    for rel in _xml(archive, rels_name).iter(f"{_REL}Relationship"):
        target = rel.get("Target", "")
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        out[rel.get("Id", "")] = (rel.get("Type", ""), posixpath.normpath(path))
    return out


def _para_text(p: ET.Element) -> str:
    parts = []
    for el in p.iter():
        if el.tag == f"{_A}t":
            parts.append(el.text or "")
        elif el.tag == f"{_A}br":
            parts.append(" ")
    return " ".join("".join(parts).split())


def _offset(shape: ET.Element) -> tuple[int, int]:
    off = shape.find(f".//{_A}off")
    if off is None:
        return (0, 0)
    try:
        return (int(off.get("y", "0")), int(off.get("x", "0")))
    except ValueError:
        return (0, 0)


def _placeholder(shape: ET.Element) -> tuple[bool, str | None]:
    ph = shape.find(f"./{_P}nvSpPr/{_P}nvPr/{_P}ph")
    return (ph is not None, ph.get("type") if ph is not None else None)


def _shapes(tree: ET.Element) -> Iterator[tuple[str, ET.Element]]:
    """(kind, element) of the shapes in a shape tree, groups flattened, in reading order."""
    kids = [c for c in tree if c.tag in (f"{_P}sp", f"{_P}grpSp", f"{_P}graphicFrame")]
    for child in sorted(kids, key=_offset):
        if child.tag == f"{_P}grpSp":
            yield from _shapes(child)
        elif child.tag == f"{_P}graphicFrame":
            yield "table", child
        else:
            yield "shape", child


def _table(frame: ET.Element) -> str:
    rows = [
        [" ".join(_para_text(p) for p in tc.iter(f"{_A}p")) for tc in tr.findall(f"{_A}tc")]
        for tr in frame.iter(f"{_A}tr")
    ]
    return markdown_table(rows)


def _slide(archive: zipfile.ZipFile, part: str, number: int) -> ExtractedPage:
    root = _xml(archive, part)
    tree = root.find(f"./{_P}cSld/{_P}spTree")
    title = ""
    blocks: list[str] = []
    for kind, shape in _shapes(tree if tree is not None else root):
        if kind == "table":
            table = _table(shape)
            if table:
                blocks.append(table)
            continue
        is_ph, ph_type = _placeholder(shape)
        if ph_type in _SKIP:
            continue
        body = shape.find(f"./{_P}txBody")
        if body is None:
            continue
        paras = [(p, _para_text(p)) for p in body.findall(f"{_A}p")]
        paras = [(p, t) for p, t in paras if t]
        if not paras:
            continue
        if is_ph and ph_type in _TITLES and not title:
            title = " ".join(t for _, t in paras)
        elif is_ph and ph_type in _BODIES:
            lines = []
            for p, text in paras:
                ppr = p.find(f"{_A}pPr")
                level = int(ppr.get("lvl", "0")) if ppr is not None else 0
                lines.append("  " * min(level, 8) + "- " + text)
            blocks.append("\n".join(lines))
        else:
            blocks.append("\n\n".join(t for _, t in paras))
    notes = _notes(archive, part)
    if notes:
        blocks.append("Notes: " + notes)
    # Every slide opens with a heading, so no slide inherits the previous slide's title.
    heading = title or f"Slide {number}"
    md = "\n\n".join([f"# {heading}", *blocks])
    return ExtractedPage(text="\n\n".join([heading, *blocks]), md=md)


def _notes(archive: zipfile.ZipFile, slide_part: str) -> str:
    for rel_type, target in _rels(archive, slide_part).values():
        if rel_type.endswith(_NOTES_TYPE) and target in archive.namelist():
            root = _xml(archive, target)
            texts = []
            for shape in root.iter(f"{_P}sp"):
                _, ph_type = _placeholder(shape)
                if ph_type == "body":
                    texts += [_para_text(p) for p in shape.iter(f"{_A}p")]
            return "\n".join(t for t in texts if t)
    return ""


def extract_pptx(data: bytes) -> list[ExtractedPage]:
    """A presentation, one page per slide in presentation order."""
    with open_zip(data, KIND) as archive:
        names = set(archive.namelist())
        main = "ppt/presentation.xml"
        if main not in names:
            raise ExtractionError(
                CORRUPTED_FILE, f"The file is not a valid {KIND}: it has no {main}."
            )
        rels = _rels(archive, main)
        pages = []
        ids = _xml(archive, main).iter(f"{_P}sldId")
        for number, sld in enumerate(ids, start=1):
            rel = rels.get(sld.get(f"{_R}id", ""))
            if rel is None or rel[1] not in names:
                raise ExtractionError(
                    CORRUPTED_FILE, f"The {KIND} is incomplete: slide {number} is missing."
                )
            pages.append(_slide(archive, rel[1], number))
    return pages
