"""HTML to markdown (headings, paragraphs, lists, tables, code) with the stdlib parser."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

from docpipe_dagster.core.extract.base import ExtractedPage
from docpipe_dagster.core.extract.text import decode_text, markdown_table

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


def extract_html(data: bytes) -> list[ExtractedPage]:
    return [html_to_page(decode_text(data))]
