"""A company's document folder with distinct, known text in every file: DOCX, PPTX, XLSX,
ODT, EPUB, RTF (written with the format libraries or by hand), a LibreOffice-made .xls (and
.doc when LibreOffice is installed to parse it), a scanned PDF and a photo of a page."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx

from docpipe_dagster_tests.support.scans import photo_of_page, scanned_pdf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"

# Each file's own words: the query that must find it (and no other file holds them).
PHRASES = {
    "policies/handbook.docx": "Employees may carry over five vacation days into January",
    "board/roadmap.pptx": "The observatory telescope upgrade ships in autumn",
    "finance/budget.xlsx": "Greenhouse irrigation pumps",
    "legal/lease.odt": "The tenant repaints the bakery storefront every spring",
    "library/voyage.epub": "The schooner crossed the coral reef at midnight",
    "memos/kitchen.rtf": "The cafeteria serves lentil soup on rainy Thursdays",
    "finance/legacy.xls": "North 1500 Q1",
    "scans/storm-report.pdf": "The lighthouse keeper wrote storm reports",
    "photos/orchard-minutes.jpg": "Minutes of the village orchard meeting",
}
SCAN_LINES = (
    "The lighthouse keeper wrote storm reports",
    "every night about ships and the harbour",
    "Fog horns sounded twice before dawn",
)
PHOTO_LINES = (
    "Minutes of the village orchard meeting",
    "Apples were pressed into cider in October",
    "Volunteers will prune the pear trees",
)
LEGACY_DOC_PHRASE = "Population growth was strongest in Northfield near the railway"


def _saved(document: object) -> bytes:
    out = io.BytesIO()
    document.save(out)  # type: ignore[attr-defined]
    return out.getvalue()


def docx_file() -> bytes:
    d = docx.Document()
    d.add_heading("Staff handbook", 1)
    d.add_heading("Leave", 2)
    d.add_paragraph(PHRASES["policies/handbook.docx"] + " of the following year.")
    return _saved(d)


def pptx_file() -> bytes:
    deck = pptx.Presentation()
    for title, body in (("Roadmap", PHRASES["board/roadmap.pptx"]), ("Budget", "Costs fall.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    return _saved(deck)


def xlsx_file() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Equipment"
    sheet.append(["item", "cost"])
    sheet.append([PHRASES["finance/budget.xlsx"], 4200])
    return _saved(book)


def zip_members(members: list[tuple[str, str]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i, (name, body) in enumerate(members):
            kind = zipfile.ZIP_STORED if i == 0 else zipfile.ZIP_DEFLATED  # mimetype first
            zf.writestr(name, body, compress_type=kind)
    return out.getvalue()


def _odt() -> bytes:
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} '
        'office:version="1.2"><office:body><office:text>'
        '<text:h text:outline-level="1">Shop lease</text:h>'
        f"<text:p>{PHRASES['legal/lease.odt']}.</text:p>"
        "</office:text></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    return zip_members(
        [
            ("mimetype", "application/vnd.oasis.opendocument.text"),
            ("content.xml", content),
            ("META-INF/manifest.xml", manifest),
        ]
    )


def _epub() -> bytes:
    container = (
        '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0" unique-identifier="id"><metadata '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">voyage</dc:identifier>'
        "<dc:title>Voyage</dc:title><dc:language>en</dc:language></metadata><manifest>"
        '<item id="c1" href="chapter1.xhtml" media-type="application/xhtml+xml"/></manifest>'
        '<spine><itemref idref="c1"/></spine></package>'
    )
    chapter = (
        '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>Chapter 1</title></head><body><h1>The crossing</h1>"
        f"<p>{PHRASES['library/voyage.epub']}.</p></body></html>"
    )
    return zip_members(
        [
            ("mimetype", "application/epub+zip"),
            ("META-INF/container.xml", container),
            ("OEBPS/content.opf", opf),
            ("OEBPS/chapter1.xhtml", chapter),
        ]
    )


def _rtf() -> bytes:
    body = PHRASES["memos/kitchen.rtf"]
    return (
        r"{\rtf1\ansi\deff0 {\fonttbl {\f0 Times;}}\f0 Kitchen notice\par " + body + r".\par}"
    ).encode()


def company_folder() -> dict[str, bytes]:
    files = {
        "policies/handbook.docx": docx_file(),
        "board/roadmap.pptx": pptx_file(),
        "finance/budget.xlsx": xlsx_file(),
        "legal/lease.odt": _odt(),
        "library/voyage.epub": _epub(),
        "memos/kitchen.rtf": _rtf(),
        # LibreOffice-made (docpipe_dagster_tests/fixtures/formats/README.md)
        "finance/legacy.xls": (FIXTURES / "libreoffice.xls").read_bytes(),
        "scans/storm-report.pdf": scanned_pdf([list(SCAN_LINES)]),
        "photos/orchard-minutes.jpg": photo_of_page(PHOTO_LINES),
    }
    if shutil.which("soffice"):  # legacy .doc is parsed through LibreOffice when installed
        files["archive/census.doc"] = (FIXTURES / "libreoffice.doc").read_bytes()
    return files
