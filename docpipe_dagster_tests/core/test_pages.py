"""Page ranges of chunks from the parsers' page separators."""

from __future__ import annotations

import pytest

from docpipe_dagster.clients.llamaparse import PAGE_SEPARATOR
from docpipe_dagster.core.chunking import ChunkingConfig, normalise_text, split_into_chunks
from docpipe_dagster.core.pages import page_boundaries, page_ranges


def _doc(pages: list[str]) -> str:
    return normalise_text(PAGE_SEPARATOR.join(pages))


def test_spans_map_to_the_pages_they_cover() -> None:
    text = _doc(["alpha page one", "beta page two", "gamma page three"])
    a, b, g = text.index("alpha"), text.index("beta"), text.index("gamma")
    spans = [(a, a + 5), (b, b + 4), (g, len(text)), (a, len(text)), (b, g + 5)]
    assert page_ranges(text, 3, spans) == [(1, 1), (2, 2), (3, 3), (1, 3), (2, 3)]


def test_a_span_ending_on_a_separator_stays_on_its_page_one_starting_on_it_moves_on() -> None:
    text = _doc(["one", "two"])
    sep = text.index("---")
    assert page_ranges(text, 2, [(0, sep + 3), (sep, len(text))]) == [(1, 1), (2, 2)]


def test_the_normalised_separator_survives_crlf_trailing_space_and_empty_pages() -> None:
    raw = PAGE_SEPARATOR.join(["", "first  \r\nline", "", "last"]).replace("\n", "\r\n")
    text = normalise_text(raw)
    assert page_boundaries(text, 4) is not None
    i = text.index("last")
    assert page_ranges(text, 4, [(i, i + 4)]) == [(4, 4)]


@pytest.mark.parametrize(
    ("pages", "page_count"),
    [
        (["only page"], 1),  # one page: nothing to tell apart
        (["a", "b"], 0),
        (["a", "b", "c"], 4),  # the parser says 4 pages, the text holds 3
        (["a\n\n---\n\nrule inside page one", "b"], 2),  # a markdown rule looks the same
    ],
)
def test_no_pages_when_the_separators_do_not_match_the_page_count(
    pages: list[str], page_count: int
) -> None:
    text = _doc(pages)
    assert page_ranges(text, page_count, [(0, 1), (0, len(text))]) == [None, None]


def test_bad_spans_are_refused() -> None:
    text = _doc(["a", "b"])
    with pytest.raises(ValueError, match="not a non-empty range"):
        page_ranges(text, 2, [(3, 3)])
    with pytest.raises(ValueError, match="not a non-empty range"):
        page_ranges(text, 2, [(0, len(text) + 1)])


def test_real_chunks_of_a_paged_document_know_their_pages() -> None:
    pages = [f"# Page {n}\n\n" + " ".join(f"word{n}x{i}" for i in range(120)) for n in (1, 2, 3)]
    raw = PAGE_SEPARATOR.join(pages)
    text = normalise_text(raw)
    chunks = split_into_chunks(raw, ChunkingConfig(max_chars=300, overlap_chars=40))
    ranges = page_ranges(text, 3, [(c.start, c.end) for c in chunks])
    assert all(r is not None for r in ranges)
    for c, (first, last) in zip(chunks, ranges, strict=True):
        # every word of the chunk was written on a page inside its range
        for n in (1, 2, 3):
            if f"word{n}x" in c.text:
                assert first <= n <= last, (c.text, first, last)
        assert 1 <= first <= last <= 3
    assert {r[0] for r in ranges} == {1, 2, 3}
