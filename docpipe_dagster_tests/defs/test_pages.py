"""Page ranges of chunks: a real multi-page PDF through the LlamaParse mock and the pipeline."""

from __future__ import annotations

import re

from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.queries import S
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.defs.conftest import Pipeline
from docpipe_dagster_tests.defs.test_search import _query

# Each page has words found on no other page ("p2w17"); pages of uneven length (a short
# first page, a long second one) so that chunks straddle page breaks; page 3 alone mentions
# zeppelins.
TOPICS = {1: "otters", 2: "lighthouses", 3: "zeppelins"}
LINES = {1: 3, 2: 30, 3: 14}


def _page(n: int) -> str:
    lines = [f"Chapter {n} on {TOPICS[n]}"]
    lines += [" ".join(f"p{n}w{i * 12 + j}" for j in range(12)) + "." for i in range(LINES[n])]
    if n == 3:
        lines.append("The zeppelin hangar at Friedrichshafen held two airships side by side.")
    return "\n".join(lines)


def _ingest(pipeline: Pipeline) -> None:
    pipeline.write("manuals/three-pages.pdf", build_text_pdf([_page(n) for n in (1, 2, 3)]))
    pipeline.write("notes/plain.md", "# Notes\n\nA markdown file has no pages.\n\n---\n\nNone.\n")
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert all(o.success for o in outcomes)
    states = {k: j["state"] for k, j in pipeline.jobs().items()}
    assert set(states.values()) == {"completed"}, states


def test_every_chunk_of_a_pdf_knows_the_pages_its_text_came_from(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    assert pipeline.jobs()["manuals/three-pages.pdf"]["page_count"] == 3
    rows = pipeline.rows(
        "SELECT chunk_index, content, page_start, page_end FROM {S}.document_chunks"
        " WHERE storage_key = 'manuals/three-pages.pdf' ORDER BY chunk_index"
    )
    assert len(rows) >= 4
    for row in rows:
        assert row["page_start"] is not None and row["page_end"] is not None, row
        pages = {int(p) for p in re.findall(r"\bp(\d)w\d+", row["content"])}
        pages |= {n for n, topic in TOPICS.items() if topic in row["content"]}
        assert pages, row["content"]
        # the range is exactly the pages whose words the chunk holds
        assert (row["page_start"], row["page_end"]) == (min(pages), max(pages)), row
    assert rows[0]["page_start"] == 1 and rows[-1]["page_end"] == 3
    assert any(r["page_start"] < r["page_end"] for r in rows), "no chunk straddles a page break"
    assert {r["page_start"] for r in rows} == {1, 2, 3}


def test_a_markdown_document_has_no_pages(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    rows = pipeline.rows(
        "SELECT page_start, page_end, char_start FROM {S}.document_chunks"
        " WHERE storage_key = 'notes/plain.md'"
    )
    assert rows and all(r["page_start"] is None and r["page_end"] is None for r in rows)
    assert all(r["char_start"] is not None for r in rows)
    # the buffer is gone after commit; nothing else holds pages for it
    assert pipeline.rows(f"SELECT count(*) AS n FROM {S}.document_chunk_buffer")[0]["n"] == 0


def test_a_search_hit_on_page_three_reports_page_three(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    for mode in ("text", "hybrid"):
        hits = _query(pipeline, "zeppelin hangar Friedrichshafen airships", mode=mode, k=3)
        top = hits[0]
        assert top.storage_key == "manuals/three-pages.pdf", (mode, top)
        assert "Friedrichshafen" in top.text
        assert top.page_end == 3 and top.page_start is not None and top.page_start >= 2
        assert top.as_dict()["page_end"] == 3
    md = _query(pipeline, "markdown file has no pages", mode="text", k=1)[0]
    assert md.storage_key == "notes/plain.md"
    assert md.page_start is None and md.page_end is None
