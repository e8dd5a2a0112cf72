"""Plain text, markdown, CSV/TSV and JSON: decoding and markdown tables."""

from __future__ import annotations

import csv
import io

from docpipe_dagster.core.extract.base import UNREADABLE_FILE, ExtractedPage, ExtractionError

# --- text decoding ---------------------------------------------------------------------------

_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# Control bytes that real text files contain: tab, LF, FF, CR, ESC (ANSI colour in logs).
_TEXT_CONTROLS = frozenset({8, 9, 10, 12, 13, 27})


def decode_text(data: bytes) -> str:
    """Decode bytes as text: BOM first, then UTF-8, then Latin-1; binary noise is an error."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return normalise_newlines(data[len(bom) :].decode(encoding))
            except UnicodeDecodeError as exc:
                raise ExtractionError(
                    UNREADABLE_FILE,
                    f"The file starts with a {encoding} byte-order mark "
                    "but is not valid in that encoding.",
                ) from exc
    if _looks_binary(data):
        raise ExtractionError(
            UNREADABLE_FILE,
            "The file is unreadable: it looks like binary data, not text.",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Every byte sequence is valid Latin-1; the binary check above keeps this honest.
        text = data.decode("latin-1")
    return normalise_newlines(text)


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    nul = sample.count(0)
    controls = sum(1 for b in sample if (b < 32 and b not in _TEXT_CONTROLS) or b == 127)
    return nul > len(sample) * 0.01 or controls > len(sample) * 0.05


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- tables ----------------------------------------------------------------------------------


def _md_cell(value: str) -> str:
    return " ".join(value.split()).replace("|", "\\|")


def markdown_table(rows: list[list[str]]) -> str:
    """Render rows as a GitHub-style markdown table; the first row is the header."""
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    padded = [[_md_cell(c) for c in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in padded[1:]]
    return "\n".join(lines)


def table_page(text: str, delimiter: str) -> ExtractedPage:
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error:
        # Not valid CSV after all: keep the text, as the real service keeps what it can read.
        return ExtractedPage(text=text, md=text)
    return ExtractedPage(text=text, md=markdown_table(rows) or text)


def extract_text(data: bytes) -> list[ExtractedPage]:
    """Plain text and markdown: a form feed is the only page break plain text has."""
    text = decode_text(data)
    return [ExtractedPage(text=p, md=p) for p in text.split("\f")]


def extract_json(data: bytes) -> list[ExtractedPage]:
    text = decode_text(data)
    return [ExtractedPage(text=text, md=text)]


def extract_csv(data: bytes) -> list[ExtractedPage]:
    return [table_page(decode_text(data), delimiter=",")]


def extract_tsv(data: bytes) -> list[ExtractedPage]:
    return [table_page(decode_text(data), delimiter="\t")]
