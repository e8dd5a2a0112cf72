"""Deterministic, markdown-aware chunking of parsed documents.

Rules (what ``split_into_chunks`` guarantees):

* The input is first passed through ``normalise_text``; every ``Chunk.start``/``end`` is an
  offset into that normalised text and
  ``chunk.text[chunk.header_chars:] == normalised[chunk.start:chunk.end]`` (``header_chars`` is
  0 except for a repeated table header, below).
* ``len(chunk.text) <= max_chars`` always. No chunk is empty, none starts or ends with
  whitespace. Empty or whitespace-only text gives ``[]``. The same text and config always give
  the same chunks (no randomness, no global state).
* A markdown ATX heading (``#`` .. ``######``, outside code fences) always starts a new chunk.
  A run of headings with nothing between them stays together with the text that follows.
  ``heading_path`` is the stack of headings in effect at the end of the chunk's own text,
  e.g. ``("Intro", "Setup")``.
* Otherwise a chunk is filled greedily and cut at the best boundary available, in order:
  blank line (paragraph, or the edge of a code fence), line break, sentence end
  (``. ! ?`` followed by whitespace, or ``。！？``), whitespace, and only then anywhere at a
  grapheme-safe position. A unit (paragraph, line, sentence, word) that would fit in a chunk
  of its own is moved whole to the next chunk; one that would not fit anyway is split at the
  next finer level and its first part fills the current chunk (the usual recursive splitter).
* A word is never cut unless it alone is longer than ``max_chars`` (a base64 blob, a long
  line of CJK without punctuation); then it is hard-split, never between a base character and
  its combining marks, inside a ZWJ emoji sequence, or between a regional-indicator pair.
* A fenced code block (``` or ~~~) no longer than ``max_chars`` is never split; a longer one
  is split like any other text, preferring blank lines and line breaks inside it.
* Overlap: a chunk that continues a section (not one that starts at a heading) begins with up
  to ``overlap_chars`` of the previous chunk's tail, starting at a sentence start when one is in
  reach, else at a word start; it never repeats the previous chunk's leading headings, never
  starts inside a code fence, and shrinks when needed to keep a whole word or fence in the chunk,
  or to finish the section in this chunk instead of leaving a sliver for one more.
  Between consecutive chunks there is either such an overlap or only whitespace, so the chunks
  minus their overlaps, with those whitespace gaps, rebuild the normalised text exactly.
* ``min_chars`` (default 1) is a best-effort floor: a heading does not close a section shorter
  than it, cuts that would leave a shorter chunk are not taken, and a shorter last chunk is
  merged into the one before when the result still fits ``max_chars``.
* A markdown table (a header row, a ``|---|`` separator line, then rows) outside code fences:
  a chunk that starts among its rows begins with the table's header row and separator line
  (``header_chars`` characters, then the rows from ``start``), so every chunk of a long table
  says which column is which; such a chunk takes no overlap (the header is its context). A
  table whose header would take more than half of ``max_chars`` is split like other text.
* Time and memory are linear: every search is bounded by about ``max_chars`` around the cut,
  runs in the ``re``/``str`` C code, and the output is built from slices of the text.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from docpipe_dagster.core.text import estimate_tokens, normalise_text

__all__ = ["Chunk", "ChunkingConfig", "split_into_chunks"]


@dataclass(frozen=True)
class ChunkingConfig:
    """Sizes in characters (of the normalised text), not tokens; see ``estimate_tokens``."""

    max_chars: int = 1200
    overlap_chars: int = 150
    min_chars: int = 1

    def __post_init__(self) -> None:
        for name in ("max_chars", "overlap_chars", "min_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.max_chars < 50:
            raise ValueError(f"max_chars must be >= 50, got {self.max_chars}")
        if not 0 <= self.overlap_chars < self.max_chars:
            raise ValueError(
                f"overlap_chars must be >= 0 and < max_chars ({self.max_chars}), "
                f"got {self.overlap_chars}"
            )
        if not 1 <= self.min_chars <= self.max_chars:
            raise ValueError(
                f"min_chars must be between 1 and max_chars ({self.max_chars}), "
                f"got {self.min_chars}"
            )


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # offsets into normalise_text(input): text == normalised[start:end]
    end: int
    heading_path: tuple[str, ...]
    token_estimate: int
    header_chars: int = 0  # leading characters repeating a table's header (not at start:end)


# --------------------------------------------------------------------------- splitting

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+([^\n]*?))?[ \t]*$", re.MULTILINE)
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
_SKIP_WS = re.compile(r"\s*")
# A markdown table's header row and separator line, then its body rows.
_TABLE_HEAD = re.compile(r"^(\|[^\n]*\|)[ \t]*\n(\|(?:[ \t]*:?-+:?[ \t]*\|)+)[ \t]*$", re.MULTILINE)
_TABLE_ROWS = re.compile(r"(?:\|[^\n]*(?:\n|\Z))*")
_WS = re.compile(r"\s")

_SENT_END = r"[.!?][\"'”’)\]]*(?=\s)|[。！？][」』”’)）]*(?=.)"
_SENT = re.compile(_SENT_END, re.DOTALL)
# ".*X" matched from a start position finds the LAST X before endpos in one C-level pass.
_LAST_SENT = re.compile(r".*(?:" + _SENT_END + ")", re.DOTALL)
_LAST_WS = re.compile(r".*\s", re.DOTALL)
_CJK_SENT = re.compile(r"[。！？][」』”’)）]*(?=.)", re.DOTALL)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_PUNCT = "\u3000-\u303f\uff00-\uffef"
# Where an overlap may begin: a sentence start, else a word start (CJK has no spaces, so each
# ideograph/kana after another one, or after CJK punctuation, starts a "word").
_SENTENCE_START = re.compile(r"(?:[.!?][\"'”’)\]]*\s+|\n\s*|[。！？][」』”’)）]*\s*)(?=\S)")
_WORD_START = re.compile(rf"(?<=\s)\S|(?<=[{_CJK}{_CJK_PUNCT}])[{_CJK}]")

# A word that must not be cut; in CJK, which has no spaces, every character is one.
_UNIT = re.compile(rf"[^\s{_CJK}]+|[{_CJK}]")

_PARA, _LINE, _SENTENCE, _SPACE = range(4)


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_grapheme_boundary(text: str, p: int) -> bool:
    """Approximation of UAX #29 that covers what matters for a hard split."""
    if p <= 0 or p >= len(text):
        return True
    ch, prev = text[p], text[p - 1]
    if ch == "\u200d" or prev == "\u200d":  # zero-width joiner sequences (emoji families)
        return False
    if unicodedata.category(ch) in ("Mn", "Mc", "Me"):  # combining marks, variation selectors
        return False
    cp = ord(ch)
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:  # skin tones, flag tag sequences
        return False
    if 0x1160 <= cp <= 0x11FF and 0x1100 <= ord(prev) <= 0x11FF:  # conjoining Hangul jamo
        return False
    if unicodedata.combining(prev) == 9:  # after a virama: Indic conjunct (क्ष) continues
        return False
    if _is_regional_indicator(ch) and _is_regional_indicator(prev):
        k = p - 1
        while k >= 0 and _is_regional_indicator(text[k]):
            k -= 1
        return (p - 1 - k) % 2 == 0  # flags are pairs: cut only after an even count
    return True


def _heading_title(raw: str | None) -> str:
    if not raw:
        return ""
    return _CLOSING_HASHES.sub("", raw).strip()


class _Splitter:
    def __init__(self, text: str, config: ChunkingConfig) -> None:
        self.t = text
        self.n = len(text)
        self.max_chars = config.max_chars
        self.overlap = config.overlap_chars
        self.min_chars = config.min_chars
        # A paragraph/line/sentence no longer than this fits in any chunk whatever its overlap.
        self.unit_budget = config.max_chars - config.overlap_chars
        self._find_fences()
        self._find_headings()
        self._find_tables()

    # -- structure

    def _find_fences(self) -> None:
        starts: list[int] = []
        ends: list[int] = []
        opener: tuple[int, str, int] | None = None
        for m in _FENCE.finditer(self.t):
            marker, rest = m.group(1), m.group(2)
            if opener is None:
                if marker[0] == "`" and "`" in rest:  # ```inline``` code, not a fence
                    continue
                opener = (m.start(1), marker[0], len(marker))
            elif marker[0] == opener[1] and len(marker) >= opener[2] and not rest.strip():
                starts.append(opener[0])
                ends.append(m.end())
                opener = None
        if opener is not None:  # CommonMark: an unclosed fence runs to the end
            starts.append(opener[0])
            ends.append(self.n)
        self.fstart = starts
        self.fend = ends
        self.fatomic = [e - s <= self.max_chars for s, e in zip(starts, ends, strict=True)]

    def _find_headings(self) -> None:
        pos: list[int] = []
        end: list[int] = []
        level: list[int] = []
        title: list[str] = []
        fi = 0
        for m in _HEADING.finditer(self.t):
            p = m.start(1)
            while fi < len(self.fstart) and self.fend[fi] <= p:
                fi += 1
            if fi < len(self.fstart) and self.fstart[fi] <= p:
                continue  # a "# comment" inside a code fence
            pos.append(p)
            end.append(m.end())
            level.append(len(m.group(1)))
            title.append(_heading_title(m.group(2)))
        self.hpos, self.hend, self.hlevel, self.htitle = pos, end, level, title

    def _find_tables(self) -> None:
        """Body spans of markdown tables and the header (row + separator + newline) of each."""
        body: list[int] = []
        end: list[int] = []
        header: list[str] = []
        self.tbody, self.tend, self.theader = body, end, header
        if "|-" not in self.t and "| -" not in self.t and "|:" not in self.t:
            return  # no separator line anywhere: skip the line-by-line scan
        for m in _TABLE_HEAD.finditer(self.t):
            if self._in_fence(m.start()):
                continue
            start = m.end() + 1
            prefix = f"{m.group(1)}\n{m.group(2)}\n"
            if start >= self.n or len(prefix) > self.max_chars // 2:
                continue
            stop = self.ws_start(_TABLE_ROWS.match(self.t, start).end(), start)  # type: ignore[union-attr]
            if stop > start:
                body.append(start)
                end.append(stop)
                header.append(prefix)

    def _in_fence(self, p: int) -> bool:
        i = bisect_right(self.fstart, p) - 1
        return i >= 0 and p < self.fend[i]

    def table_header_at(self, p: int) -> str:
        """The header to repeat for a chunk starting at ``p`` among a table's rows, or ""."""
        i = bisect_right(self.tbody, p) - 1
        return self.theader[i] if i >= 0 and p < self.tend[i] else ""

    # -- small helpers

    def skip_ws(self, p: int) -> int:
        return _SKIP_WS.match(self.t, p).end()  # type: ignore[union-attr]

    def ws_start(self, p: int, floor: int) -> int:
        """Start of the whitespace run ending at ``p`` (not below ``floor``)."""
        t = self.t
        while p > floor and t[p - 1].isspace():
            p -= 1
        return p

    def atomic_fence_around(self, p: int) -> int:
        """Index of the unsplittable fence strictly containing ``p``, or -1."""
        i = bisect_left(self.fstart, p) - 1
        if i >= 0 and p < self.fend[i] and self.fatomic[i]:
            return i
        return -1

    def atomic_fence_at(self, p: int) -> int:
        i = bisect_left(self.fstart, p)
        if i < len(self.fstart) and self.fstart[i] == p and self.fatomic[i]:
            return i
        return -1

    def first_unit_len(self, pos: int) -> int:
        """Length of the unsplittable unit at ``pos`` (a fence or a word), 0 if too long."""
        fi = self.atomic_fence_at(pos)
        if fi >= 0:
            return self.fend[fi] - pos
        m = _UNIT.match(self.t, pos, min(self.n, pos + self.max_chars + 1))
        length = m.end() - pos if m else 0
        return length if length <= self.max_chars else 0

    # -- overlap

    def overlap_start(self, lo: int, pos: int) -> int:
        t = self.t
        for pattern in (_SENTENCE_START, _WORD_START):
            start = lo
            while start < pos:
                m = pattern.search(t, start, pos)
                if m is None:
                    break
                o = m.end() if pattern is _SENTENCE_START else m.start()
                if o >= pos:
                    break
                fi = self.atomic_fence_around(o)
                if fi >= 0:  # would begin with the tail of a fence: skip past it
                    start = self.fend[fi]
                    continue
                if not _is_grapheme_boundary(t, o):
                    start = o + 1
                    continue
                return o
        return pos

    # -- cut selection

    def _back(self, level: int, lo: int, hi: int, pos: int) -> int:
        """The furthest cut ``e`` with ``lo <= e <= hi`` at ``level``, or -1."""
        t = self.t
        best = -1
        if level in (_PARA, _LINE):
            sep = "\n\n" if level == _PARA else "\n"
            i = t.rfind(sep, lo, hi + len(sep))
            while i >= 0:
                fi = self.atomic_fence_around(i)
                if fi < 0:
                    break
                i = t.rfind(sep, lo, self.fstart[fi])
            if i >= 0:
                best = self.ws_start(i, pos)
            if level == _PARA:
                # The edges of a fence are paragraph boundaries even without a blank line.
                a = bisect_right(self.fstart, hi) - 1
                if a >= 0:
                    if lo <= self.fend[a] <= hi:
                        best = max(best, self.fend[a])
                    elif self.fstart[a] > pos:
                        best = max(best, self.ws_start(self.fstart[a], pos))
        else:
            pattern = _LAST_SENT if level == _SENTENCE else _LAST_WS
            end = hi + 1
            while True:
                m = pattern.match(t, lo, end)
                if m is None:
                    break
                e = m.end() if level == _SENTENCE else m.end() - 1
                fi = self.atomic_fence_around(e)
                if fi >= 0:
                    end = self.fstart[fi]
                    continue
                best = e if level == _SENTENCE else self.ws_start(e, pos)
                break
        return best if best >= lo else -1

    def _fits(self, level: int, nxt: int, section_end: int) -> bool:
        """Does the unit starting at ``nxt`` fit in a chunk of its own?"""
        t = self.t
        # The rest of a section, a fence or a word that fits max_chars gets a whole chunk (the
        # overlap shrinks for it); other units must fit beside a full overlap.
        if section_end - nxt <= self.max_chars or self.atomic_fence_at(nxt) >= 0:
            return True
        hi = nxt + (self.max_chars if level == _SPACE else self.unit_budget)
        if level == _PARA:
            if t.find("\n\n", nxt, hi + 2) >= 0:
                return True
            return bisect_right(self.fstart, nxt) < bisect_right(self.fstart, hi) or bisect_right(
                self.fend, nxt
            ) < bisect_right(self.fend, hi)
        if level == _LINE:
            return t.find("\n", nxt, hi + 1) >= 0
        if level == _SENTENCE:
            return t.find("\n", nxt, hi + 1) >= 0 or _SENT.search(t, nxt, hi + 1) is not None
        return (
            _WS.search(t, nxt, hi + 1) is not None or _CJK_SENT.search(t, nxt, hi + 1) is not None
        )

    def find_cut(self, pos: int, body_start: int, limit: int, section_end: int) -> tuple[int, int]:
        """Core end ``e`` (<= limit) and the next core start for a chunk whose core is at pos."""
        lo = max(body_start + 1, pos + self.min_chars)
        if lo > limit:  # absurdly long heading run: allow cutting inside it
            lo = pos + 1
        # min_chars and the leading headings are preferences: drop them before cutting a word.
        for floor in (lo, pos + 1) if lo > pos + 1 else (lo,):
            best = -1
            for level in (_PARA, _LINE, _SENTENCE, _SPACE):
                best = max(best, self._back(level, floor, limit, pos))
                if best >= 0:
                    nxt = self.skip_ws(best)
                    if self._fits(level, nxt, section_end):
                        return best, nxt
        # Hard split: the unit straddling the limit is longer than any chunk.
        t = self.t
        p = limit
        while p > lo and not _is_grapheme_boundary(t, p):
            p -= 1
        if not _is_grapheme_boundary(t, p):
            p = limit  # one "character" longer than a chunk: nothing better exists
        e = self.ws_start(p, pos)
        return e, self.skip_ws(e)

    # -- main loop

    def spans(self) -> list[tuple[int, int, tuple[str, ...], str]]:
        n = self.n
        hpos, hend = self.hpos, self.hend
        nh = len(hpos)
        out: list[tuple[int, int, tuple[str, ...], str]] = []
        stack: list[tuple[int, str]] = []
        hp = 0
        prev_start = prev_body = -1
        pos = self.skip_ws(0)
        while pos < n:
            j = bisect_left(hpos, pos)
            at_heading = j < nh and hpos[j] == pos
            body_start = pos
            if at_heading:
                while True:  # a run of headings with nothing between them stays together
                    body_start = hend[j]
                    if j + 1 < nh and hpos[j + 1] == self.skip_ws(body_start):
                        j += 1
                        continue
                    break
                j += 1
            section_end = n
            while j < nh:
                content_end = self.ws_start(hpos[j], pos)
                if content_end - pos >= self.min_chars:
                    section_end = content_end
                    break
                j += 1  # section too short: let it run on into the next one

            o = pos
            header = "" if at_heading or not out else self.table_header_at(pos)
            if out and not at_heading and self.overlap and not header:
                lo = max(pos - self.overlap, prev_start + 1, prev_body)
                # Shrink the overlap rather than cut a word or fence that fits a chunk, or
                # leave a sliver: when the rest of the section fits one chunk, keep it whole.
                unit = self.first_unit_len(pos)
                rest = section_end - pos
                if rest <= self.max_chars:
                    unit = max(unit, rest)
                if unit:
                    lo = max(lo, pos - (self.max_chars - unit))
                o = self.overlap_start(lo, pos)
            budget = self.max_chars - (pos - o) - len(header)
            if section_end - pos <= budget:
                e, nxt = section_end, self.skip_ws(section_end)
            else:
                e, nxt = self.find_cut(pos, body_start, pos + budget, section_end)

            while hp < nh and hpos[hp] < e:
                level = self.hlevel[hp]
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, self.htitle[hp]))
                hp += 1
            out.append((o, e, tuple(title for _, title in stack if title), header))
            # Overlap may come from anywhere in this chunk's text except its leading headings.
            prev_start, prev_body = o, (body_start if at_heading else o)
            pos = nxt

        if len(out) >= 2 and out[-1][1] - out[-1][0] < self.min_chars:
            last, before = out[-1], out[-2]
            if len(before[3]) + last[1] - before[0] <= self.max_chars:
                out[-2:] = [(before[0], last[1], last[2], before[3])]
        return out


def split_into_chunks(
    text: str, config: ChunkingConfig | None = None, *, normalised: bool = False
) -> list[Chunk]:
    """Split ``text`` into chunks following the module rules; offsets refer to
    ``normalise_text(text)``. `normalised`: the caller already normalised ``text`` (and
    needs that text itself), so it is not done twice."""
    cfg = config if config is not None else ChunkingConfig()
    norm = text if normalised else normalise_text(text)
    if not norm or norm.isspace():
        return []
    chunks = []
    for index, (start, end, path, header) in enumerate(_Splitter(norm, cfg).spans()):
        piece = header + norm[start:end]
        chunks.append(Chunk(index, piece, start, end, path, estimate_tokens(piece), len(header)))
    return chunks
