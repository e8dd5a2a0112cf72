"""A corpus of every format the local backend parses, generated with the format libraries
(or written by hand where none writes the format), each with known text.

Used by the format tests, the PDF/OCR tests and `python -m benchmarks.formats`. Every sample
carries the words it contains, the heading paths its chunks must show and the phrase expected
on each page, so a test can measure recall and structure without knowing the format.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import struct
import zipfile
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from xml.sax.saxutils import escape

from docpipe_dagster_tests.support.ole_writer import write_ole

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formats"

_WORDS = (
    "harbour lantern orchard granite meadow cobalt tundra willow saffron glacier quarry "
    "falcon juniper marble nectar opal pepper quartz raven sable thistle umber velvet walnut "
    "yarrow zephyr amber basalt cedar delta ember fjord garnet hazel indigo jasper kelp "
    "lichen mosaic nickel oxide prairie quill ridge silica timber upland valley wharf beacon "
    "canyon"
)
_VOCAB = _WORDS.split()


def sentence(rng: random.Random, words: int = 12) -> str:
    picked = [rng.choice(_VOCAB) for _ in range(words)]
    return " ".join(picked).capitalize() + "."


@dataclass
class Sample:
    """One generated document and what parsing it must give."""

    filename: str
    data: bytes
    text: str  # every word the document holds (recall is measured against these)
    headings: list[tuple[str, ...]] = field(default_factory=list)  # heading paths in chunks
    pages: dict[int, str] = field(default_factory=dict)  # page number -> phrase on that page
    page_count: int | None = None


@dataclass
class _Doc:
    """The logical document every word-processor format is generated from."""

    title: str
    sections: list[tuple[str, list[str]]]  # (H2 heading, paragraphs)
    sub: tuple[str, str]  # an H3 under the last section: (heading, paragraph)
    bullets: list[str]
    table: list[list[str]]

    @property
    def words(self) -> str:
        parts = [self.title]
        for heading, paras in self.sections:
            parts += [heading, *paras]
        parts += [*self.sub, *self.bullets, *(" ".join(r) for r in self.table)]
        return " ".join(parts)

    @property
    def headings(self) -> list[tuple[str, ...]]:
        paths = [(self.title, h) for h, _ in self.sections]
        return [*paths, (self.title, self.sections[-1][0], self.sub[0])]


def document(seed: int = 1) -> _Doc:
    rng = random.Random(seed)
    return _Doc(
        title="Quarterly harbour census",
        sections=[
            ("Survey methods", [sentence(rng, 20), sentence(rng, 16)]),
            ("Regional results", [sentence(rng, 18)]),
        ],
        sub=("Northern remarks", sentence(rng, 14)),
        bullets=[sentence(rng, 5) for _ in range(3)],
        table=[["District", "Households", "Growth"]]
        + [[rng.choice(_VOCAB).capitalize(), str(rng.randint(100, 999)), str(i)] for i in range(4)],
    )


# --- word processors -------------------------------------------------------------------------


def docx(doc: _Doc) -> bytes:
    import docx as python_docx

    d = python_docx.Document()
    d.add_heading(doc.title, level=1)
    for i, (heading, paras) in enumerate(doc.sections):
        d.add_heading(heading, level=2)
        for p in paras:
            d.add_paragraph(p)
        if i == 0:
            for b in doc.bullets:
                d.add_paragraph(b, style="List Bullet")
            table = d.add_table(rows=len(doc.table), cols=len(doc.table[0]))
            for r, row in enumerate(doc.table):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
    d.add_heading(doc.sub[0], level=3)
    d.add_paragraph(doc.sub[1])
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


_WORD_MAIN = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
_PPT_MAIN = b"application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"
_XL_MAIN = b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"


def retype(data: bytes, main: bytes, new_main: bytes, vba: bool) -> bytes:
    """An OOXML package with another main content type (macro-enabled, template), and with
    a VBA project part when `vba` (never run: the extractors must only read text)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "[Content_Types].xml":
                body = body.replace(main, new_main)
                if vba:
                    body = body.replace(
                        b"</Types>",
                        b'<Default Extension="bin" ContentType="application/'
                        b'vnd.ms-office.vbaProject"/></Types>',
                    )
            dst.writestr(info, body)
        if vba:
            folder = {_WORD_MAIN: "word", _PPT_MAIN: "ppt", _XL_MAIN: "xl"}[main]
            # An AutoOpen macro's source text; a parser that executed it would be a bug.
            dst.writestr(f"{folder}/vbaProject.bin", write_ole({"VBA/Module1": b"Sub AutoOpen()"}))
    return out.getvalue()


def _odf(mimetype: str, body: str) -> bytes:
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
        ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
        ' xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"'
        ' xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"'
        f' office:version="1.3"><office:body>{body}</office:body></office:document-content>'
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), mimetype)  # stored, first: the ODF rule
        z.writestr("content.xml", content)
        z.writestr("META-INF/manifest.xml", manifest)
    return out.getvalue()


def _odf_table(rows: list[list[str]]) -> str:
    cells = "".join(
        "<table:table-row>"
        + "".join(f"<table:table-cell><text:p>{escape(c)}</text:p></table:table-cell>" for c in r)
        + "</table:table-row>"
        for r in rows
    )
    return f'<table:table table:name="T">{cells}</table:table>'


def odt(doc: _Doc) -> bytes:
    parts = [f'<text:h text:outline-level="1">{escape(doc.title)}</text:h>']
    for i, (heading, paras) in enumerate(doc.sections):
        parts.append(f'<text:h text:outline-level="2">{escape(heading)}</text:h>')
        parts += [f"<text:p>{escape(p)}</text:p>" for p in paras]
        if i == 0:
            items = "".join(
                f"<text:list-item><text:p>{escape(b)}</text:p></text:list-item>"
                for b in doc.bullets
            )
            parts.append(f"<text:list>{items}</text:list>")
            parts.append(_odf_table(doc.table))
    parts.append(f'<text:h text:outline-level="3">{escape(doc.sub[0])}</text:h>')
    parts.append(f"<text:p>{escape(doc.sub[1])}</text:p>")
    return _odf(
        "application/vnd.oasis.opendocument.text", f"<office:text>{''.join(parts)}</office:text>"
    )


def _html(doc: _Doc) -> str:
    parts = [f"<h1>{escape(doc.title)}</h1>"]
    for i, (heading, paras) in enumerate(doc.sections):
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts += [f"<p>{escape(p)}</p>" for p in paras]
        if i == 0:
            parts.append("<ul>" + "".join(f"<li>{escape(b)}</li>" for b in doc.bullets) + "</ul>")
            rows = "".join(
                "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in doc.table
            )
            parts.append(f"<table>{rows}</table>")
    parts.append(f"<h3>{escape(doc.sub[0])}</h3><p>{escape(doc.sub[1])}</p>")
    return "".join(parts)


def epub(doc: _Doc, rng: random.Random) -> tuple[bytes, list[str]]:
    """An EPUB 3 whose manifest lists the chapters out of order; the spine gives the order."""
    chapters = [
        ("ch1.xhtml", _html(doc)),
        ("ch2.xhtml", f"<h1>Epilogue</h1><p>{sentence(rng)}</p>"),
    ]
    xhtml = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>t</title></head><body>{}</body></html>"
    )
    opf = (
        '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">urn:uuid:1</dc:identifier><dc:title>Census</dc:title></metadata>'
        '<manifest><item id="b" href="text/ch2.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="a" href="text/ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
        '<spine><itemref idref="a"/><itemref idref="b"/></spine></package>'
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml", container)
        z.writestr("OEBPS/content.opf", opf)
        for name, body in chapters:
            z.writestr(f"OEBPS/text/{name}", xhtml.format(body))
    return out.getvalue(), [c for _, c in chapters]


def _rtf_escape(text: str) -> str:
    out = text.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}")
    return "".join(c if ord(c) < 128 else f"\\u{ord(c)}?" for c in out)


def rtf(doc: _Doc) -> bytes:
    def para(text: str, level: int | None = None) -> str:
        outline = f"\\s{level + 1}\\outlinelevel{level}\\b " if level is not None else ""
        return f"{{\\pard\\plain {outline}{_rtf_escape(text)}\\par}}\n"

    body = [para(doc.title, 0)]
    for i, (heading, paras) in enumerate(doc.sections):
        body.append(para(heading, 1))
        body += [para(p) for p in paras]
        if i == 0:
            body += [
                f"{{\\pard\\plain \\bullet\\tab {_rtf_escape(b)}\\par}}\n" for b in doc.bullets
            ]
            for row in doc.table:
                cells = "".join(f"\\pard\\intbl {_rtf_escape(c)}\\cell " for c in row)
                body.append(f"\\trowd\\cellx2000\\cellx4000\\cellx6000 {cells}\\row\n")
    body += [para(doc.sub[0], 2), para(doc.sub[1])]
    head = (
        "{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0 Helvetica;}}\n"
        "{\\stylesheet{\\s1\\outlinelevel0 heading 1;}{\\s2\\outlinelevel1 heading 2;}"
        "{\\s3\\outlinelevel2 heading 3;}}\n"
    )
    return (head + "".join(body) + "}").encode("ascii")


# --- presentations ---------------------------------------------------------------------------


@dataclass
class _Deck:
    slides: list[tuple[str, list[str], str]]  # (title, bullets, notes)
    table: list[list[str]]  # on the last slide

    @property
    def words(self) -> str:
        parts = [f"{t} {' '.join(b)} {n}" for t, b, n in self.slides]
        return " ".join(parts + [" ".join(r) for r in self.table])


def deck(seed: int = 2) -> _Deck:
    rng = random.Random(seed)
    titles = ["Roadmap overview", "Warehouse expansion", "Budget outlook"]
    return _Deck(
        slides=[(t, [sentence(rng, 6) for _ in range(3)], sentence(rng, 8)) for t in titles],
        table=[["Quarter", "Spend"], ["First", "120"], ["Second", "180"]],
    )


def pptx(d: _Deck) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    for i, (title, bullets, notes) in enumerate(d.slides):
        slide = prs.slides.add_slide(prs.slide_layouts[1])  # title and content
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for b in bullets[1:]:
            body.add_paragraph().text = b
        slide.notes_slide.notes_text_frame.text = notes
        if i == len(d.slides) - 1:
            rows, cols = len(d.table), len(d.table[0])
            shape = slide.shapes.add_table(rows, cols, Inches(1), Inches(5), Inches(4), Inches(1))
            for r, row in enumerate(d.table):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def odp(d: _Deck) -> bytes:
    pages = []
    for i, (title, bullets, notes) in enumerate(d.slides, start=1):
        items = "".join(
            f"<text:list-item><text:p>{escape(b)}</text:p></text:list-item>" for b in bullets
        )
        table = f"<draw:frame>{_odf_table(d.table)}</draw:frame>" if i == len(d.slides) else ""
        pages.append(
            f'<draw:page draw:name="page{i}">'
            f'<draw:frame presentation:class="title"><draw:text-box><text:p>{escape(title)}'
            "</text:p></draw:text-box></draw:frame>"
            f'<draw:frame presentation:class="outline"><draw:text-box><text:list>{items}'
            f"</text:list></draw:text-box></draw:frame>{table}"
            '<presentation:notes><draw:frame presentation:class="notes"><draw:text-box>'
            f"<text:p>{escape(notes)}</text:p></draw:text-box></draw:frame></presentation:notes>"
            "</draw:page>"
        )
    return _odf(
        "application/vnd.oasis.opendocument.presentation",
        f"<office:presentation>{''.join(pages)}</office:presentation>",
    )


# --- spreadsheets ----------------------------------------------------------------------------


def sheet_rows(rows: int, seed: int = 3) -> list[list[object]]:
    """A header row, then `rows` rows of text, numbers and dates."""
    rng = random.Random(seed)
    out: list[list[object]] = [["Region", "Product", "Units", "Shipped"]]
    for i in range(rows):
        out.append(
            [rng.choice(_VOCAB), f"item{i}", rng.randint(1, 9999), dt.date(2024, 1, 1 + i % 28)]
        )
    return out


def xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def ods(sheets: dict[str, list[list[object]]]) -> bytes:
    tables = "".join(
        f'<table:table table:name="{escape(name)}">'
        + "".join(
            "<table:table-row>"
            + "".join(
                f"<table:table-cell><text:p>{escape(str(c))}</text:p></table:table-cell>"
                for c in row
            )
            + '<table:table-cell table:number-columns-repeated="1000"/></table:table-row>'
            for row in rows
        )
        # LibreOffice pads sheets to their maximum size with one repeated empty row.
        + '<table:table-row table:number-rows-repeated="1048000"><table:table-cell/>'
        "</table:table-row></table:table>"
        for name, rows in sheets.items()
    )
    return _odf(
        "application/vnd.oasis.opendocument.spreadsheet",
        f"<office:spreadsheet>{tables}</office:spreadsheet>",
    )


def _cell_words(rows: list[list[object]]) -> str:
    def show(v: object) -> str:
        return v.isoformat() if isinstance(v, dt.date) else str(v)

    return " ".join(show(v) for row in rows for v in row)


# --- e-mail ----------------------------------------------------------------------------------


def eml(subject: str, body: str, attachment: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.org>"
    msg["To"] = "Team <team@example.org>"
    msg["Date"] = "Mon, 02 Dec 2024 09:30:00 +0000"
    msg["Subject"] = subject
    msg.set_content(body)
    msg.add_alternative(f"<p>{escape(body)}</p>", subtype="html")
    msg.add_attachment(
        b"%PDF-1.4 attached", maintype="application", subtype="pdf", filename=attachment
    )
    return msg.as_bytes()


def msg(subject: str, body: str, attachment: str) -> bytes:
    """An Outlook .msg: MAPI string properties as UTF-16 streams, one attachment storage."""

    def s(text: str) -> bytes:
        return text.encode("utf-16-le")

    # Property stream: 32-byte header, then PR_CLIENT_SUBMIT_TIME as a FILETIME.
    when = dt.datetime(2024, 12, 2, 9, 30, tzinfo=dt.timezone.utc)
    filetime = int((when - dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)).total_seconds()) * 10**7
    props = b"\0" * 32 + struct.pack("<IIQ", 0x00390040, 0, filetime)
    attach = "__attach_version1.0_#00000000"
    return write_ole(
        {
            "__substg1.0_0037001F": s(subject),
            "__substg1.0_0C1A001F": s("Ada Lovelace"),
            "__substg1.0_0C1F001F": s("ada@example.org"),
            "__substg1.0_0E04001F": s("Team"),
            "__substg1.0_1000001F": s(body),
            "__properties_version1.0": props,
            f"{attach}/__substg1.0_3707001F": s(attachment),
            f"{attach}/__substg1.0_37010102": b"%PDF-1.4 attached",
        }
    )


# --- the corpus ------------------------------------------------------------------------------

MACRO_TYPES = {
    ".docm": (_WORD_MAIN, b"application/vnd.ms-word.document.macroEnabled.main+xml"),
    ".dotx": (
        _WORD_MAIN,
        b"application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    ),
    ".dotm": (_WORD_MAIN, b"application/vnd.ms-word.template.macroEnabledTemplate.main+xml"),
    ".pptm": (_PPT_MAIN, b"application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml"),
    ".potx": (
        _PPT_MAIN,
        b"application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
    ),
    ".xlsm": (_XL_MAIN, b"application/vnd.ms-excel.sheet.macroEnabled.main+xml"),
}


def corpus(sheet_size: int = 50) -> list[Sample]:
    """One sample per generated format (and variant), each with its expectations."""
    doc = document()
    rng = random.Random(4)
    samples: list[Sample] = []
    for name, data in (
        ("report.docx", docx(doc)),
        ("report.odt", odt(doc)),
        ("report.rtf", rtf(doc)),
    ):
        samples.append(Sample(name, data, doc.words, doc.headings, {1: doc.title}, 1))
    book, _ = epub(doc, rng)
    samples.append(
        Sample(
            "book.epub",
            book,
            doc.words + " Epilogue",
            [*doc.headings, ("Epilogue",)],
            {1: doc.title, 2: "Epilogue"},
            2,
        )
    )
    samples.append(
        Sample("page.html", _html(doc).encode(), doc.words, doc.headings, {1: doc.title}, 1)
    )
    d = deck()
    slide_pages = {i: t for i, (t, _, _) in enumerate(d.slides, start=1)}
    slide_heads = [(t,) for t, _, _ in d.slides]
    n = len(d.slides)
    samples.append(Sample("deck.pptx", pptx(d), d.words, slide_heads, slide_pages, n))
    samples.append(Sample("deck.odp", odp(d), d.words, slide_heads, slide_pages, n))
    rows = sheet_rows(sheet_size)
    summary = [["Metric", "Value"], ["Total", 42], ["Mean", 7]]
    sheets = {"Orders": rows, "Summary": summary}
    words = _cell_words(rows) + " Orders Summary " + _cell_words(summary)
    sheet_pages = {1: "Orders", 2: "Summary"}
    sheet_heads = [("Orders",), ("Summary",)]
    samples.append(Sample("sales.xlsx", xlsx(sheets), words, sheet_heads, sheet_pages, 2))
    samples.append(Sample("sales.ods", ods(sheets), words, sheet_heads, sheet_pages, 2))
    csv = "\n".join(",".join(str(v) for v in r) for r in _as_text(rows)).encode()
    samples.append(Sample("sales.csv", csv, _cell_words(rows), [], {1: "Region"}, 1))
    for ext, (main, new_main) in MACRO_TYPES.items():
        base = next(s for s in samples if s.filename.endswith(
            {"_W": ".docx", "_P": ".pptx", "_X": ".xlsx"}[_family(main)]))  # fmt: skip
        variant = retype(base.data, main, new_main, vba=ext.endswith("m"))
        samples.append(
            Sample(
                Path(base.filename).stem + ext,
                variant,
                base.text,
                base.headings,
                base.pages,
                base.page_count,
            )
        )
    subject, body = "Harbour census schedule", sentence(rng, 24)
    mail_words = f"{subject} Ada Lovelace Team {body} minutes.pdf"
    samples.append(Sample("note.eml", eml(subject, body, "minutes.pdf"), mail_words,
                          [(subject,)], {1: subject}, 1))  # fmt: skip
    samples.append(Sample("note.msg", msg(subject, body, "minutes.pdf"), mail_words,
                          [(subject,)], {1: subject}, 1))  # fmt: skip
    return samples


def _family(main: bytes) -> str:
    return {_WORD_MAIN: "_W", _PPT_MAIN: "_P", _XL_MAIN: "_X"}[main]


def _as_text(rows: list[list[object]]) -> list[list[str]]:
    return [[v.isoformat() if isinstance(v, dt.date) else str(v) for v in r] for r in rows]
