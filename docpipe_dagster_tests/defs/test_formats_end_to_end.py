"""A company's document folder, as a new user drops it into storage: DOCX, PPTX, XLSX, ODT,
EPUB, RTF, a legacy .xls (and .doc when LibreOffice is installed), a scanned PDF and a photo
of a page. Every file ends `completed` and search (the SQL function `docpipe search` calls,
through api.service.answer) finds each by its own content: once with the default routing
(layout types through the LlamaParse mock) and once with DOCPIPE_PARSE_LOCALLY=all and no
parser service at all.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest

from docpipe_dagster.api.service import answer
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.services import free_ports
from docpipe_dagster.store.pool import connect
from docpipe_dagster.store.search import SearchFilters, set_search_language
from docpipe_dagster_tests.defs.conftest import Pipeline, wired_pipeline
from docpipe_dagster_tests.support import MockServer
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


def _docx() -> bytes:
    d = docx.Document()
    d.add_heading("Staff handbook", 1)
    d.add_heading("Leave", 2)
    d.add_paragraph(PHRASES["policies/handbook.docx"] + " of the following year.")
    return _saved(d)


def _pptx() -> bytes:
    deck = pptx.Presentation()
    for title, body in (("Roadmap", PHRASES["board/roadmap.pptx"]), ("Budget", "Costs fall.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    return _saved(deck)


def _xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Equipment"
    sheet.append(["item", "cost"])
    sheet.append([PHRASES["finance/budget.xlsx"], 4200])
    return _saved(book)


def _zip(members: list[tuple[str, str]]) -> bytes:
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
    return _zip(
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
    return _zip(
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
        "policies/handbook.docx": _docx(),
        "board/roadmap.pptx": _pptx(),
        "finance/budget.xlsx": _xlsx(),
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


def _search(pipeline: Pipeline, query: str) -> list[str]:
    """Storage keys of the top hits, as `docpipe search` would list them."""
    with connect(pipeline.database_url, autocommit=True) as conn:
        set_search_language(conn, "english")
        payload = asyncio.run(
            answer(conn, query, k=3, mode="hybrid", filters=SearchFilters(None, None, None))
        )
    return [r["storage_key"] for r in payload["results"]]


def _ingest_and_find_everything(pipeline: Pipeline, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        pipeline.write(key, data)
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcomes and all(o.success for o in outcomes)
    jobs = pipeline.jobs()
    states = {k: (j["state"], j["failure_reason"]) for k, j in jobs.items()}
    assert states == {k: ("completed", None) for k in files}, states
    phrases = dict(PHRASES)
    if "archive/census.doc" in files:
        phrases["archive/census.doc"] = LEGACY_DOC_PHRASE
    for key, phrase in phrases.items():
        hits = _search(pipeline, phrase)
        assert hits and hits[0] == key, (key, phrase, hits)


@pytest.mark.slow
def test_a_company_folder_through_llamaparse_by_default(pipeline: Pipeline) -> None:
    files = company_folder()
    _ingest_and_find_everything(pipeline, files)
    # Layout types went to the parser (the mock, parsing with the same local backend).
    uploads = pipeline.parser.stats()["by_route"].get("POST /api/v2/parse/upload", 0)
    assert uploads == len(files)
    with pipeline.store() as store:
        parsers = store.status()["parsers"]
    assert sum(n for p, n in parsers.items() if p.startswith("llamaparse-v2")) == len(files)


@pytest.mark.slow
def test_a_company_folder_fully_offline(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
) -> None:
    """DOCPIPE_PARSE_LOCALLY=all: no parser service is running, nothing is sent to one."""
    (nowhere,) = free_ports(1)
    with wired_pipeline(
        monkeypatch,
        tmp_path / "storage",
        database_url,
        llamaparse_mock,
        openai_mock,
        DOCPIPE_PARSE_LOCALLY="all",
        LLAMAPARSE_BASE_URL=f"http://127.0.0.1:{nowhere}",
    ) as pipeline:
        files = company_folder()
        _ingest_and_find_everything(pipeline, files)
        assert not [r for r in llamaparse_mock.stats()["by_route"] if "parse" in r]
        with pipeline.store() as store:
            parsers = store.status()["parsers"]
        assert {p.split(":")[0].split("-")[0] for p in parsers} == {"local"}, parsers
        assert sum(parsers.values()) == len(files)


def test_intake_parses_extensionless_text_and_refuses_impostors(pipeline: Pipeline) -> None:
    """A text file without an extension is parsed in-process (never a paid call that can only
    fail); a renamed program, a zip called .docx and a binary file without an extension fail
    at intake, each with a reason a person can act on. No parser call for any of them."""
    program = b"MZ" + b"\x00" * 58 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 64
    files = {
        "notes/README": b"The boiler room key hangs behind the second door.\n",
        "notes/setup.docx": program,
        "notes/archive.docx": _zip([("a.txt", "not office")]),
        "notes/blob": bytes(range(256)) * 4,
        "notes/revenue.docx": _xlsx(),
    }
    for key, data in files.items():
        pipeline.write(key, data)
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    jobs = pipeline.jobs()
    assert jobs["notes/README"]["state"] == "completed"
    assert _search(pipeline, "boiler room key")[0] == "notes/README"
    reasons = {k: (j["state"], j["failed_stage"], j["failure_reason"]) for k, j in jobs.items()}
    for key, fragment in {
        "notes/setup.docx": "Windows program",
        "notes/archive.docx": "not Office Open XML",
        "notes/blob": "has no extension",
        "notes/revenue.docx": "rename it to revenue.xlsx",
    }.items():
        state, stage, reason = reasons[key]
        assert (state, stage) == ("failed", "intake") and fragment in reason, reasons[key]
    assert not [r for r in pipeline.parser.stats()["by_route"] if "parse" in r], "no parser call"
