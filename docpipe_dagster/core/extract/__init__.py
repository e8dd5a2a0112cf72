"""In-process content extraction: text, markdown, HTML, CSV/TSV, JSON and (text) PDF.

Two users: the pipeline parses file types locally that need no layout parsing (no parser call,
no credits; see docs/PARSER.md), and the LlamaParse mock parses what it is given with the same
code instead of returning canned text. Each supported type yields pages of (text, markdown).

Error codes follow the real service where known (its troubleshooting docs and SDK issues name
UNSUPPORTED_FILE_TYPE, PDF_IS_PROTECTED and NO_DATA_FOUND_IN_FILE); PDF_CORRUPTED and
UNREADABLE_FILE are this mock's names for failures the real service words differently.
Choices: a zero-byte file is an error (NO_DATA_FOUND_IN_FILE); a non-empty file whose text is
blank (e.g. a PDF of blank pages) succeeds with empty pages, as the real service does for
documents without extractable text.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".text", ".log")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
TABLE_EXTENSIONS = (".csv", ".tsv")
JSON_EXTENSIONS = (".json",)
PDF_EXTENSIONS = (".pdf",)
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    PDF_EXTENSIONS
    + TEXT_EXTENSIONS
    + MARKDOWN_EXTENSIONS
    + HTML_EXTENSIONS
    + TABLE_EXTENSIONS
    + JSON_EXTENSIONS
)

# Codes a caller may branch on; none of these succeed on a retry of the same bytes.
UNSUPPORTED_FILE_TYPE = "UNSUPPORTED_FILE_TYPE"
PDF_IS_PROTECTED = "PDF_IS_PROTECTED"
PDF_CORRUPTED = "PDF_CORRUPTED"
NO_DATA_FOUND_IN_FILE = "NO_DATA_FOUND_IN_FILE"
UNREADABLE_FILE = "UNREADABLE_FILE"


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


def extract(filename: str, data: bytes) -> list[ExtractedPage]:
    """Parse `data` by the extension of `filename` into one or more pages."""
    ext = file_extension(filename)
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "(no extension)"
        raise ExtractionError(
            UNSUPPORTED_FILE_TYPE,
            f"File type {shown} is not supported. Supported: {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    if not data:
        raise ExtractionError(NO_DATA_FOUND_IN_FILE, "The file is empty (0 bytes).")
    if ext in PDF_EXTENSIONS:
        return _extract_pdf(data)
    text = decode_text(data)
    if ext in HTML_EXTENSIONS:
        return [html_to_page(text)]
    if ext in TABLE_EXTENSIONS:
        return [_table_page(text, delimiter="\t" if ext == ".tsv" else ",")]
    if ext in JSON_EXTENSIONS:
        return [ExtractedPage(text=text, md=text)]
    # Plain text and markdown: a form feed is the only page break plain text has.
    return [ExtractedPage(text=p, md=p) for p in text.split("\f")]


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
                return _normalise_newlines(data[len(bom) :].decode(encoding))
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
    return _normalise_newlines(text)


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    nul = sample.count(0)
    controls = sum(1 for b in sample if (b < 32 and b not in _TEXT_CONTROLS) or b == 127)
    return nul > len(sample) * 0.01 or controls > len(sample) * 0.05


def _normalise_newlines(text: str) -> str:
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


def _table_page(text: str, delimiter: str) -> ExtractedPage:
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error:
        # Not valid CSV after all: keep the text, as the real service keeps what it can read.
        return ExtractedPage(text=text, md=text)
    return ExtractedPage(text=text, md=markdown_table(rows) or text)


# --- HTML ------------------------------------------------------------------------------------


@dataclass
class _Block:
    kind: str  # "para" | "heading" | "item" | "code" | "table"
    content: str
    level: int = 0  # heading level
    prefix: str = ""  # list marker with indentation, or blockquote marker
    rows: list[list[str]] | None = None


class _HTMLToBlocks(HTMLParser):
    """Walks HTML into blocks; inline markup is reduced to its text (links keep their text)."""

    SKIP = frozenset(
        {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "select"}
    )
    BLOCK = frozenset(
        {
            "p", "div", "section", "article", "header", "footer", "nav", "main", "aside",
            "figure", "figcaption", "form", "fieldset", "address", "dl", "dt", "dd", "hr",
            "br", "body", "html", "caption", "details", "summary", "center",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[_Block] = []
        self._buf: list[str] = []
        self._skip = 0
        self._heading = 0
        self._lists: list[list] = []  # [kind, counter]
        self._item_prefix: str | None = None
        self._quote = 0
        self._pre = 0
        self._pre_buf: list[str] = []
        self._table_depth = 0
        self._rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    # - helpers
    def _flush(self) -> None:
        content = " ".join("".join(self._buf).split())
        self._buf.clear()
        if not content:
            return
        quote = "> " * self._quote
        if self._heading:
            self.blocks.append(_Block("heading", content, level=self._heading, prefix=quote))
        elif self._item_prefix is not None or self._lists:
            indent = "  " * max(len(self._lists) - 1, 0)
            marker = self._item_prefix if self._item_prefix is not None else indent + "  "
            self.blocks.append(_Block("item", content, prefix=quote + marker))
            self._item_prefix = None
        else:
            self.blocks.append(_Block("para", content, prefix=quote))

    # - parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skip = 0  # a missing </head> must not swallow the page
        if tag in self.SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if self._pre:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self._heading = int(tag[1])
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append([tag, 0])
        elif tag == "li":
            self._flush()
            if not self._lists:
                self._lists.append(["ul", 0])
            entry = self._lists[-1]
            entry[1] += 1
            indent = "  " * (len(self._lists) - 1)
            self._item_prefix = indent + (f"{entry[1]}. " if entry[0] == "ol" else "- ")
        elif tag == "blockquote":
            self._flush()
            self._quote += 1
        elif tag == "pre":
            self._flush()
            self._pre = 1
            self._pre_buf = []
        elif tag == "table":
            self._flush()
            self._table_depth += 1
            if self._table_depth == 1:
                self._rows = []
        elif tag == "tr" and self._table_depth == 1:
            self._row = []
        elif tag in ("td", "th") and self._table_depth == 1:
            self._cell = []
        elif tag in self.BLOCK:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr") and not self._skip and not self._pre:
            if self._cell is not None:
                self._cell.append(" ")
            else:
                self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(self._skip - 1, 0)
            return
        if self._skip:
            return
        if tag == "pre" and self._pre:
            self._pre = 0
            code = "".join(self._pre_buf).strip("\n")
            if code.strip():
                self.blocks.append(_Block("code", code, prefix="> " * self._quote))
            return
        if self._pre:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self._heading = 0
        elif tag in ("ul", "ol"):
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag == "li":
            self._flush()
            self._item_prefix = None
        elif tag == "blockquote":
            self._flush()
            self._quote = max(self._quote - 1, 0)
        elif tag in ("td", "th") and self._table_depth == 1 and self._cell is not None:
            if self._row is None:
                self._row = []
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table_depth == 1 and self._row is not None:
            self._rows.append(self._row)
            self._row = None
        elif tag == "table" and self._table_depth:
            self._table_depth -= 1
            if self._table_depth == 0:
                if self._row:
                    self._rows.append(self._row)
                self._row = None
                if self._rows:
                    self.blocks.append(_Block("table", "", rows=self._rows))
                self._rows = []
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            self._pre_buf.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        else:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        if self._pre:
            self.handle_endtag("pre")
        if self._table_depth:
            self._table_depth = 1
            self.handle_endtag("table")
        self._flush()


def html_to_page(html: str) -> ExtractedPage:
    """Convert HTML to markdown (headings, paragraphs, lists, tables, code) and plain text."""
    parser = _HTMLToBlocks()
    parser.feed(html)
    parser.close()
    md_parts: list[str] = []
    text_parts: list[str] = []
    for block in parser.blocks:
        if block.kind == "heading":
            md_parts.append(f"{block.prefix}{'#' * block.level} {block.content}")
            text_parts.append(block.content)
        elif block.kind == "item":
            md_parts.append(block.prefix + block.content)
            text_parts.append(block.prefix.replace("> ", "") + block.content)
        elif block.kind == "code":
            fenced = f"```\n{block.content}\n```"
            md_parts.append(
                "\n".join(block.prefix + line for line in fenced.split("\n"))
                if block.prefix
                else fenced
            )
            text_parts.append(block.content)
        elif block.kind == "table" and block.rows:
            md_parts.append(markdown_table(block.rows))
            text_parts.append("\n".join("\t".join(r) for r in block.rows))
        else:
            md_parts.append(block.prefix + block.content)
            text_parts.append(block.content)
    # Consecutive list items belong together; everything else is its own paragraph.
    return ExtractedPage(
        text=_join_blocks(parser.blocks, text_parts),
        md=_join_blocks(parser.blocks, md_parts),
    )


def _join_blocks(blocks: list[_Block], parts: list[str]) -> str:
    out: list[str] = []
    for i, part in enumerate(parts):
        if i:
            tight = blocks[i].kind == "item" and blocks[i - 1].kind == "item"
            out.append("\n" if tight else "\n\n")
        out.append(part)
    return "".join(out)


# --- PDF -------------------------------------------------------------------------------------

_PDF_HEADER = re.compile(rb"%PDF-\d")


def _extract_pdf(data: bytes) -> list[ExtractedPage]:
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
        pages = [
            _normalise_newlines(page.extract_text() or "").strip("\n") for page in reader.pages
        ]
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
