"""The local parser backend over a generated corpus of every office/document format:
text recall, heading paths in chunks, a page per slide and per sheet, the header row in every
chunk of a large sheet, and each hostile input ending in its clear error."""

from __future__ import annotations

import io
import random
import re
import time
import tracemalloc
import zipfile
from collections import Counter

import pytest

from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.core.extract import (
    CORRUPTED_FILE,
    LIMIT_EXCEEDED,
    LOCAL_EXTENSIONS,
    PROTECTED_FILE,
    TEXT_LIKE_EXTENSIONS,
    UNSAFE_FILE,
    ExtractedPage,
    ExtractionError,
    extract,
)
from docpipe_dagster_tests.support import formats_corpus as fc
from docpipe_dagster_tests.support import formats_hostile as hostile
from docpipe_dagster_tests.support.ole_writer import write_ole

# Every binary format through the extractors: heavy, so out of the fast lane (CI runs it).
pytestmark = pytest.mark.slow

_WORD = re.compile(r"\w+")
CORPUS = fc.corpus()


def recall(known: str, got: str) -> float:
    """Share of the known words (with repeats) found in the output."""
    want = Counter(w.lower() for w in _WORD.findall(known))
    have = Counter(w.lower() for w in _WORD.findall(got))
    return sum((want & have).values()) / sum(want.values())


def chunk_pages(pages: list[ExtractedPage], max_chars: int = 400):  # type: ignore[no-untyped-def]
    """Chunks of the joined markdown, as the pipeline makes them (pages joined by blank lines)."""
    return split_into_chunks("\n\n".join(p.md for p in pages), ChunkingConfig(max_chars, 60))


def test_every_local_format_is_in_the_corpus() -> None:
    made = {"." + s.filename.rsplit(".", 1)[1] for s in CORPUS}
    office = LOCAL_EXTENSIONS - TEXT_LIKE_EXTENSIONS
    # .pdf and images belong to the PDF/OCR tests; .xls/.doc/.ppt come from committed fixtures
    # (no maintained library writes them); .xltx/.ppsx are .xlsx/.pptx with another type name.
    elsewhere = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
    elsewhere |= {".xls", ".doc", ".ppt", ".xltx", ".ppsx"}
    assert office - elsewhere <= made, sorted(office - elsewhere - made)
    assert TEXT_LIKE_EXTENSIONS <= LOCAL_EXTENSIONS
    assert {".docx", ".pdf", ".png"} <= LOCAL_EXTENSIONS - TEXT_LIKE_EXTENSIONS


@pytest.mark.parametrize("sample", CORPUS, ids=lambda s: s.filename)
def test_recall_structure_and_pages(sample: fc.Sample) -> None:
    pages = extract(sample.filename, sample.data)
    joined_md = "\n\n".join(p.md for p in pages)
    joined_text = "\n\n".join(p.text for p in pages)
    assert recall(sample.text, joined_md) >= 0.95, joined_md[:500]
    assert recall(sample.text, joined_text) >= 0.95, joined_text[:500]
    if sample.page_count is not None:
        assert len(pages) == sample.page_count
    for number, phrase in sample.pages.items():
        assert phrase in pages[number - 1].md, (number, pages[number - 1].md[:200])
    paths = {c.heading_path for c in chunk_pages(pages)}
    for path in sample.headings:
        assert path in paths, (path, sorted(paths))


@pytest.mark.parametrize("name", ["report.docx", "report.odt", "report.rtf", "book.epub"])
def test_word_processor_lists_and_tables_are_markdown(name: str) -> None:
    sample = next(s for s in CORPUS if s.filename == name)
    md = extract(name, sample.data)[0].md
    doc = fc.document()
    for bullet in doc.bullets:
        assert f"- {bullet}" in md
    assert "| " + " | ".join(doc.table[0]) + " |" in md
    assert "| " + " | ".join(doc.table[1]) + " |" in md


@pytest.mark.parametrize("name", ["deck.pptx", "deck.odp", "deck.pptm", "deck.potx"])
def test_a_page_per_slide_with_title_heading_and_notes(name: str) -> None:
    sample = next(s for s in CORPUS if s.filename == name)
    pages = extract(name, sample.data)
    d = fc.deck()
    for page, (title, bullets, notes) in zip(pages, d.slides, strict=True):
        assert page.md.startswith(f"# {title}\n")
        assert all(b in page.md for b in bullets)
        assert f"Notes: {notes}" in page.md
    assert "| Quarter | Spend |" in pages[-1].md


@pytest.mark.parametrize("name", ["sales.xlsx", "sales.ods", "sales.xlsm"])
def test_a_page_per_sheet_as_a_markdown_table(name: str) -> None:
    sample = next(s for s in CORPUS if s.filename == name)
    pages = extract(name, sample.data)
    assert [p.md.split("\n", 1)[0] for p in pages] == ["# Orders", "# Summary"]
    assert "| Region | Product | Units | Shipped |\n|---|---|---|---|" in pages[0].md
    assert "| item0 |" in pages[0].md and "2024-01-01" in pages[0].md
    assert "| Total | 42 |" in pages[1].md


def test_mail_headers_body_and_attachments() -> None:
    for name in ("note.eml", "note.msg"):
        sample = next(s for s in CORPUS if s.filename == name)
        md = extract(name, sample.data)[0].md
        assert md.startswith("# Harbour census schedule\n")
        assert "From: Ada Lovelace" in md and "ada@example.org" in md
        assert "Date: Mon, 02 Dec 2024 09:30:00 +0000" in md
        assert "Attachments: minutes.pdf" in md


def test_epub_chapters_follow_the_spine_not_the_manifest() -> None:
    sample = next(s for s in CORPUS if s.filename == "book.epub")
    pages = extract("book.epub", sample.data)
    assert pages[0].md.startswith("# Quarterly harbour census")
    assert pages[1].md.startswith("# Epilogue")


def test_macro_enabled_files_are_read_and_nothing_runs() -> None:
    for name in ("report.docm", "deck.pptm", "sales.xlsm"):
        sample = next(s for s in CORPUS if s.filename == name)
        assert b"vbaProject.bin" in sample.data
        md = "\n".join(p.md for p in extract(name, sample.data))
        assert "AutoOpen" not in md  # the macro is neither run nor shown as text


def _sheet_chunks_all_have_the_header(rows: int) -> list:  # type: ignore[type-arg]
    pages = extract("big.xlsx", fc.xlsx({"Big": fc.sheet_rows(rows)}))
    assert pages[0].md.count("\n| ") == rows + 1  # the header row and every data row
    chunks = chunk_pages(pages, max_chars=1200)
    header = "| Region | Product | Units | Shipped |\n|---|---|---|---|"
    for chunk in chunks:
        assert header in chunk.text, chunk.text[:200]
        assert chunk.heading_path == ("Big",)
    assert chunks[-1].text.startswith(header) and f"| item{rows - 1} |" in chunks[-1].text
    return chunks


def test_large_sheet_header_row_in_every_chunk() -> None:
    assert len(_sheet_chunks_all_have_the_header(3_000)) > 100


def test_sheet_is_streamed_row_by_row() -> None:
    data = fc.xlsx({"Big": fc.sheet_rows(2_500)})
    tracemalloc.start()
    pages = extract("big.xlsx", data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The peak is a fixed ~1 MB plus a few times the page text; loading this workbook whole
    # (openpyxl's default mode) peaks near 4 MB.
    assert peak < 1024 * 1024 + 8 * len(pages[0].md), (peak, len(pages[0].md))


def test_sparse_sheet_with_a_far_corner_cell_is_not_expanded() -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sparse"
    ws["A1"] = "origin"
    ws.cell(row=1_048_576, column=16_384, value="corner")
    out = io.BytesIO()
    wb.save(out)
    started = time.monotonic()
    pages = extract("sparse.xlsx", out.getvalue())
    assert time.monotonic() - started < 20
    assert "origin" in pages[0].md and "corner" in pages[0].md


@pytest.mark.slow
def test_row_40000_still_knows_its_columns() -> None:
    chunks = _sheet_chunks_all_have_the_header(40_000)
    target = next(c for c in chunks if "| item39999 |" in c.text)
    assert target.text.startswith("| Region | Product | Units | Shipped |")


# --- hostile inputs --------------------------------------------------------------------------


def _error(name: str, data: bytes) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extract(name, data)
    return info.value


def test_zip_bomb_is_refused_before_inflating() -> None:
    bomb = hostile.zip_bomb(1024)
    assert len(bomb) < 2 * 1024 * 1024
    for name in ("bomb.docx", "bomb.xlsx", "bomb.pptx", "bomb.odt", "bomb.epub"):
        started = time.monotonic()
        tracemalloc.start()
        err = _error(name, bomb)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert err.code == LIMIT_EXCEEDED and "zip bomb" in err.message
        assert peak < 50 * 1024 * 1024 and time.monotonic() - started < 5


def test_xml_entity_bomb_is_refused() -> None:
    for name in ("lol.docx", "lol.docm"):
        err = _error(name, hostile.entity_bomb())
        assert err.code == UNSAFE_FILE and "entit" in err.message


def test_password_protected_ooxml_says_so() -> None:
    for name in ("locked.docx", "locked.xlsx", "locked.pptx", "locked.xlsm"):
        err = _error(name, hostile.encrypted_ooxml())
        assert err.code == PROTECTED_FILE and "password-protected" in err.message


def test_truncated_and_mislabelled_containers() -> None:
    cases = {
        "cut.docx": hostile.truncated(fc.docx(fc.document())),
        "cut.pptx": hostile.truncated(fc.pptx(fc.deck())),
        "cut.xlsx": hostile.truncated(fc.xlsx({"S": fc.sheet_rows(10)})),
        "cut.epub": hostile.truncated(fc.epub(fc.document(), random.Random(1))[0]),
        "text.docx": b"just some text, not a zip",
        "legacy.docx": write_ole({"WordDocument": b"\0" * 600}),
        "noise.msg": b"not an outlook message",
        "noise.rtf": b"plain words",
        "noise.xls": b"\x00\x01 not a workbook" * 10,
    }
    for name, data in cases.items():
        err = _error(name, data)
        assert err.code == CORRUPTED_FILE, (name, err.code, err.message)
        assert err.message


def test_odf_and_epub_encryption_say_so() -> None:
    odt = fc.odt(fc.document())
    src = zipfile.ZipFile(io.BytesIO(odt))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "META-INF/manifest.xml":
                body = body.replace(
                    b"</manifest:manifest>", b"<manifest:encryption-data/></manifest:manifest>"
                )
            z.writestr(info, body)
    assert _error("locked.odt", out.getvalue()).code == PROTECTED_FILE
