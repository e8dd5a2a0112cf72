"""Page ranges of chunks, from the page separators the parsers join pages with.

The parsers join a document's pages with ``"\\n---\\n"`` (``PAGE_SEPARATOR``) and report how
many pages there were. After ``normalise_text`` that separator is a line holding exactly
``---`` (at the very start or end of the text its outer newlines are stripped, so a line is
what survives). A page of the document may hold such a line of its own (a markdown rule);
then the separators cannot be told apart, and no page ranges are given rather than guessed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["page_boundaries", "page_ranges"]

_SEPARATOR_LINE = re.compile(r"^---$", re.MULTILINE)


def page_boundaries(normalised_text: str, page_count: int) -> list[tuple[int, int]] | None:
    """(start, end) offsets of the ``---`` separator lines between the pages, in order; None
    when the text cannot be split into `page_count` pages (one page, or the separators found
    do not number ``page_count - 1``)."""
    if page_count <= 1:
        return None
    seps = [(m.start(), m.end()) for m in _SEPARATOR_LINE.finditer(normalised_text)]
    if len(seps) != page_count - 1:
        return None
    return seps


def page_ranges(
    normalised_text: str, page_count: int, spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int] | None]:
    """The 1-based (first, last) page of each ``(start, end)`` span of `normalised_text`
    (chunk offsets, end exclusive), or None for every span when the text has no reliable
    pages (see ``page_boundaries``)."""
    seps = page_boundaries(normalised_text, page_count)
    if seps is None:
        return [None] * len(spans)
    starts = [s for s, _ in seps]
    ends = [e for _, e in seps]
    ranges: list[tuple[int, int] | None] = []
    for start, end in spans:
        if not 0 <= start < end <= len(normalised_text):
            raise ValueError(
                f"span ({start}, {end}) is not a non-empty range of the text"
                f" (length {len(normalised_text)})"
            )
        # A span starting on a separator belongs to the page after it; one ending on a
        # separator (its last character inside it) to the page before it.
        first = 1 + bisect_right(starts, start)
        last = 1 + bisect_right(ends, end - 1)
        ranges.append((min(first, last), max(first, last)))
    return ranges
