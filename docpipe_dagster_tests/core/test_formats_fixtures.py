"""The local parser backend on files no docpipe code wrote: made by pandoc and LibreOffice
(docpipe_dagster_tests/fixtures/formats/README.md says how), with known text."""

from __future__ import annotations

from pathlib import Path

import pytest

from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.core.extract import NEEDS_LIBREOFFICE, ExtractionError, extract
from docpipe_dagster_tests.core.test_formats import recall
from docpipe_dagster_tests.support.apt import ensure_commands

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formats"
REPORT = (FIXTURES / "src.md").read_text()
SLIDES = (FIXTURES / "slides.md").read_text().replace("::: notes", "").replace(":::", "")
TITLE = "Quarterly Census Report"
REPORT_PATHS = [(TITLE,), (TITLE, "Methods"), (TITLE, "Results"), (TITLE, "Results", "Remarks")]


def _check_report(name: str) -> None:
    pages = extract(name, (FIXTURES / name).read_bytes())
    md = "\n\n".join(p.md for p in pages)
    assert recall(REPORT, md) >= 0.95, md
    assert "- Door to door interviews" in md and "  - Follow up calls" in md
    assert "| District | Households | Growth |" in md and "| Riverside | 860 | 2 |" in md
    paths = {c.heading_path for c in split_into_chunks(md, ChunkingConfig(120, 20))}
    assert set(REPORT_PATHS) <= paths, sorted(paths)


@pytest.mark.parametrize(
    "name", ["pandoc.docx", "pandoc.odt", "pandoc.epub", "pandoc.rtf", "libreoffice.rtf"]
)
def test_report_keeps_headings_lists_and_tables(name: str) -> None:
    _check_report(name)


@pytest.mark.parametrize("name", ["pandoc.pptx", "libreoffice.odp"])
def test_slides_page_per_slide_with_notes(name: str) -> None:
    pages = extract(name, (FIXTURES / name).read_bytes())
    assert len(pages) == 2
    assert pages[0].md.startswith("# Roadmap Overview\n")
    assert "Notes: Remember to thank the logistics team." in pages[0].md
    assert pages[1].md.startswith("# Budget Plan\n")
    assert recall(SLIDES, "\n".join(p.md for p in pages)) >= 0.95


@pytest.mark.parametrize("name", ["libreoffice.xls", "libreoffice.xlsx", "libreoffice.ods"])
def test_libreoffice_sheet_as_table(name: str) -> None:
    pages = extract(name, (FIXTURES / name).read_bytes())
    assert len(pages) == 1 and pages[0].md.startswith("# revenue\n")
    assert "| Region | Revenue | Quarter |\n|---|---|---|" in pages[0].md
    assert "| South | 2300 | Q2 |" in pages[0].md


def test_legacy_doc_without_libreoffice_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no soffice on PATH
    with pytest.raises(ExtractionError) as info:
        extract("libreoffice.doc", (FIXTURES / "libreoffice.doc").read_bytes())
    assert info.value.code == NEEDS_LIBREOFFICE
    assert "LibreOffice" in info.value.message and "LlamaParse" in info.value.message


def libreoffice() -> str:
    """soffice, apt-installed when missing (about a minute on a Debian runner)."""
    packages = ("libreoffice-writer-nogui", "libreoffice-impress-nogui")
    return ensure_commands(("soffice",), packages)[0]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_legacy_doc_through_libreoffice() -> None:
    libreoffice()
    _check_report("libreoffice.doc")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_legacy_ppt_through_libreoffice() -> None:
    from docpipe_dagster.core.extract.legacy import convert

    libreoffice()
    # A .ppt LibreOffice writes from the pandoc deck (too large to commit: its masters).
    ppt = convert((FIXTURES / "pandoc.pptx").read_bytes(), ".pptx", ".ppt")
    assert ppt.startswith(b"\xd0\xcf\x11\xe0")
    pages = extract("deck.ppt", ppt)
    assert [p.md.split("\n", 1)[0] for p in pages] == ["# Roadmap Overview", "# Budget Plan"]
    assert "Notes: Remember to thank the logistics team." in pages[0].md
