"""RTF with striprtf, keeping headings, bullets and tables.

striprtf turns RTF into plain text. Before it runs, each paragraph's outline level (the
`\\outlinelevelN` that Word, LibreOffice and pandoc write into heading paragraphs) gets a marker
that survives as text; after it, marked lines become markdown headings, bullet lines list items
and runs of table rows (cells end with "|") markdown tables. The marker in the style sheet is
dropped with the style sheet.
"""

from __future__ import annotations

import codecs
import contextlib
import re

from docpipe_dagster.core.extract.base import CORRUPTED_FILE, ExtractedPage, ExtractionError
from docpipe_dagster.core.extract.text import markdown_table

_OUTLINE = re.compile(r"\\outlinelevel(\d)(?![0-9])")
_CODEPAGE = re.compile(r"\\ansicpg(\d+)")
_MARK = "\x01H"
_MARKED = re.compile("\x01H(\\d)\x01\\s*")
_CELL_BREAK = re.compile(r"\n+\|")
_NESTED_BULLETS = "\u25e6\u25aa\u2013"
_BULLET = re.compile("^\\s*[\u2022\u25e6\u25aa\u2013\u00b7\u2014-]\\t\\s*")


def extract_rtf(data: bytes) -> list[ExtractedPage]:
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip().startswith(b"{\\rtf"):
        raise ExtractionError(CORRUPTED_FILE, "The file is not RTF: it does not start {\\rtf.")
    # RTF is 7-bit text; non-ASCII arrives as \'xx or \uN escapes decoded below.
    source = data.decode("latin-1")
    match = _CODEPAGE.search(source[:4096])
    encoding = "cp1252"
    if match:
        with contextlib.suppress(LookupError):
            encoding = codecs.lookup(f"cp{match.group(1)}").name
    source = _OUTLINE.sub(lambda m: f"{m.group(0)} {_MARK}{m.group(1)}\x01", source)
    try:
        text = rtf_to_text(source, encoding=encoding, errors="replace")
    except Exception as exc:  # the converter's errors on malformed input have no common base
        raise ExtractionError(
            CORRUPTED_FILE, f"The RTF is malformed ({type(exc).__name__}: {exc})."
        ) from exc
    md = _to_markdown(text)
    return [ExtractedPage(text=_MARKED.sub("", text).replace("\x01", "").strip(), md=md)]


def _to_markdown(text: str) -> str:
    blocks: list[str] = []
    items: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if items:
            blocks.append("\n".join(items))
            items.clear()
        if rows:
            blocks.append(markdown_table(rows))
            rows.clear()

    # A cell's own paragraph mark (pandoc writes one) puts its "|" on the next line.
    text = _CELL_BREAK.sub("|", text.replace("\r", ""))
    for line in text.split("\n"):
        marked = _MARKED.search(line)
        if marked:
            flush()
            title = " ".join(_MARKED.sub("", line).split())
            if title:
                level = min(int(marked.group(1)) + 1, 6)
                blocks.append("#" * level + " " + title)
            continue
        if line.rstrip().endswith("|") and line.count("|") >= 1:
            if items:
                flush()
            rows.append([c.strip() for c in line.rstrip()[:-1].split("|")])
            continue
        bullet = _BULLET.match(line)
        if bullet:
            if rows:
                flush()
            depth = 1 if line[bullet.start() : bullet.end()].strip()[:1] in _NESTED_BULLETS else 0
            items.append("  " * depth + "- " + " ".join(line[bullet.end() :].split()))
            continue
        flush()
        if line.strip():
            blocks.append(line.strip())
    flush()
    return "\n\n".join(blocks)
