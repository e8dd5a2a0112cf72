from __future__ import annotations

import dataclasses
import itertools
import random
import time
import unicodedata

import pytest

from docpipe_dagster.core.chunking import Chunk, ChunkingConfig, split_into_chunks
from docpipe_dagster.core.text import estimate_tokens, normalise_text

SMALL = ChunkingConfig(max_chars=80, overlap_chars=20)


def check_invariants(text: str, config: ChunkingConfig) -> list[Chunk]:
    """The contract every output must meet, whatever the input."""
    norm = normalise_text(text)
    chunks = split_into_chunks(text, config)
    if not norm.strip():
        assert chunks == []
        return chunks
    assert chunks, "non-blank text must give at least one chunk"
    assert norm[: chunks[0].start].strip() == ""
    assert norm[chunks[-1].end :].strip() == ""
    rebuilt = [chunks[0].text]
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text[chunk.header_chars :] == norm[chunk.start : chunk.end]
        assert chunk.text.strip() == chunk.text and chunk.text, repr(chunk.text)
        assert len(chunk.text) <= config.max_chars
        assert chunk.token_estimate == estimate_tokens(chunk.text)
        if i == 0:
            continue
        prev = chunks[i - 1]
        assert prev.start < chunk.start and prev.end < chunk.end
        if chunk.start < prev.end:  # overlap: a suffix of the previous chunk
            overlap = prev.end - chunk.start
            assert overlap <= config.overlap_chars
            assert prev.text.endswith(norm[chunk.start : prev.end])
            assert chunk.start > prev.start
        else:  # no overlap: only whitespace between the two
            assert norm[prev.end : chunk.start].strip() == ""
        rebuilt.append(norm[prev.end : chunk.end])
    # Chunks minus overlaps, with the whitespace gaps, rebuild the normalised text exactly.
    assert "".join(rebuilt) == norm[chunks[0].start : chunks[-1].end]
    return chunks


def assert_whole_words(text: str, chunks: list[Chunk], max_chars: int) -> None:
    """Every whitespace-separated word in a chunk is a word of the source, unless the source
    word was longer than max_chars (then, and only then, it may be hard-split)."""
    norm = normalise_text(text)
    words = set(norm.split())
    long_words = [w for w in words if len(w) > max_chars]
    for chunk in chunks:
        for word in chunk.text.split():
            if word not in words:
                assert any(word in w for w in long_words), (word, chunk)
        # Boundaries sit at whitespace unless cutting an over-long word.
        for pos in (chunk.start, chunk.end):
            if 0 < pos < len(norm) and not (norm[pos - 1].isspace() or norm[pos].isspace()):
                assert any(len(w) > max_chars for w in _word_around(norm, pos)), (pos, chunk)


def _word_around(norm: str, pos: int) -> list[str]:
    lo = pos
    while lo > 0 and not norm[lo - 1].isspace():
        lo -= 1
    hi = pos
    while hi < len(norm) and not norm[hi].isspace():
        hi += 1
    return [norm[lo:hi]]


# ----------------------------------------------------------------------------- config


def test_config_defaults() -> None:
    cfg = ChunkingConfig()
    assert (cfg.max_chars, cfg.overlap_chars, cfg.min_chars) == (1200, 150, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_chars": 49},
        {"max_chars": 100, "overlap_chars": 100},
        {"max_chars": 100, "overlap_chars": 150},
        {"overlap_chars": -1},
        {"min_chars": 0},
        {"max_chars": 100, "overlap_chars": 10, "min_chars": 101},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ChunkingConfig(**kwargs)


@pytest.mark.parametrize("value", [True, 100.0, "100", None])
def test_config_rejects_non_ints(value: object) -> None:
    with pytest.raises(TypeError):
        ChunkingConfig(max_chars=value)  # type: ignore[arg-type]


def test_config_is_frozen_and_edge_values_ok() -> None:
    cfg = ChunkingConfig(max_chars=50, overlap_chars=49, min_chars=50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_chars = 60  # type: ignore[misc]
    check_invariants("word " * 200, cfg)


# ----------------------------------------------------------------------------- normalise


def test_normalise_text_rules() -> None:
    raw = "\ufeffTitle\r\nline\x00 one  \t\r\nq\u0301 e\u0301\x07\x1b\n\n\n\n\n\nend\rnext\x0cpage\n\n"
    assert normalise_text(raw) == "Title\nline one\nq\u0301 \u00e9\n\n\nend\nnext\npage"


def test_normalise_text_keeps_tabs_and_two_blank_lines() -> None:
    assert normalise_text("a\tb\n\n\nc") == "a\tb\n\n\nc"
    assert normalise_text("\n\n  indented\n") == "  indented"


def test_normalise_text_surrogates() -> None:
    assert normalise_text("x\ud83d\ude00y") == "x\U0001f600y"  # a pair is joined
    assert normalise_text("x\ud800y") == "x\ufffdy"  # a lone one is replaced
    normalise_text("x\ud800y").encode("utf-8")  # and the result is encodable


def test_normalise_text_is_idempotent() -> None:
    rng = random.Random(7)
    alphabet = "ab \t\n\r\x00\x0b\x0c\u0301e\u00e9\u2028\ufeff\ud800.#`"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        once = normalise_text(text)
        assert normalise_text(once) == once
        assert unicodedata.is_normalized("NFC", once)
        assert "\n\n\n\n" not in once and "\r" not in once and "\x00" not in once


# ----------------------------------------------------------------------------- basics


@pytest.mark.parametrize("text", ["", " ", "\n\n\t \n", "\x00\x01", "\ufeff"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_into_chunks(text) == []


def test_short_text_is_one_chunk() -> None:
    chunks = split_into_chunks("  Hello, world.  \n")
    assert [(c.index, c.text, c.start, c.end, c.heading_path) for c in chunks] == [
        (0, "Hello, world.", 2, 15, ())
    ]
    assert chunks[0].token_estimate >= 3


def test_offsets_refer_to_normalised_text() -> None:
    text = "Intro line\r\n\r\n" + "Word\x00s " * 30
    norm = normalise_text(text)
    for chunk in split_into_chunks(text, SMALL):
        assert norm[chunk.start : chunk.end] == chunk.text
        assert "\x00" not in chunk.text and "\r" not in chunk.text


def test_text_normalised_by_the_caller_gives_the_same_chunks() -> None:
    text = "# Intro\r\n\r\n" + "Word\x00s and more words.  \n" * 40 + "\n\n\n\n\nEnd."
    norm = normalise_text(text)
    assert norm != text
    assert split_into_chunks(norm, SMALL, normalised=True) == split_into_chunks(text, SMALL)


def test_default_config_argument() -> None:
    text = "Sentence number one. " * 200
    assert split_into_chunks(text) == split_into_chunks(text, ChunkingConfig())


# ----------------------------------------------------------------------------- boundaries


def test_prefers_paragraph_break() -> None:
    # Both paragraphs fit a chunk alone, not together; a sentence end would fit more.
    para1 = "First paragraph talks about apples and pears."
    para2 = "Second paragraph is on trains. It runs on."
    chunks = check_invariants(para1 + "\n\n" + para2, ChunkingConfig(80, 0))
    assert [c.text for c in chunks] == [para1, para2]


def test_prefers_line_break_over_sentence_end() -> None:
    text = "alpha beta gamma. delta epsilon\nzeta eta theta iota kappa lambda mu nu xi omicron"
    chunks = check_invariants(text, ChunkingConfig(max_chars=60, overlap_chars=0))
    assert chunks[0].text == "alpha beta gamma. delta epsilon"


def test_prefers_sentence_end_over_space() -> None:
    text = "One two three four five six. Seven eight nine ten eleven twelve thirteen fourteen."
    chunks = check_invariants(text, ChunkingConfig(max_chars=60, overlap_chars=0))
    assert chunks[0].text == "One two three four five six."
    assert chunks[1].text.startswith("Seven")


def test_cjk_sentence_end_is_a_boundary() -> None:
    text = "東京は日本の首都です。" * 30
    chunks = check_invariants(text, ChunkingConfig(max_chars=55, overlap_chars=0))
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.endswith("。")
        assert len(chunk.text) % len("東京は日本の首都です。") == 0


def test_unit_that_fits_alone_moves_to_next_chunk() -> None:
    # The second paragraph would fit a chunk of its own: it is not split across two.
    short = "A short intro paragraph."
    body = " ".join(["word"] * 12)  # 59 chars <= max_chars - overlap_chars
    chunks = check_invariants(f"{short}\n\n{body}", SMALL)
    assert len(chunks) == 2 and chunks[0].text == short
    assert chunks[1].text.endswith("\n\n" + body)  # overlap, then the whole paragraph


def test_oversized_paragraph_fills_current_chunk() -> None:
    # A paragraph too long for any chunk is split; its first part joins the short one before.
    body = " ".join(f"w{i}" for i in range(80))
    chunks = check_invariants(f"Intro.\n\n{body}", SMALL)
    assert chunks[0].text.startswith("Intro.\n\nw0 w1")


def test_end_of_section_is_not_left_as_a_sliver() -> None:
    # The last paragraph fits max_chars but not beside a full overlap: the overlap shrinks
    # instead of producing a third chunk that repeats most of the second.
    first = "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron."
    last = "Rho sigma tau upsilon phi chi psi omega and then some more words to end the section"
    assert len(first) <= 100 and 75 < len(last) <= 100
    chunks = check_invariants(f"{first}\n\n{last}", ChunkingConfig(max_chars=100, overlap_chars=30))
    assert len(chunks) == 2 and chunks[0].text == first
    assert chunks[1].text.endswith("\n\n" + last) and len(chunks[1].text) <= 100


# ----------------------------------------------------------------------------- headings


DOC = """# Guide

Welcome text for the guide.

## Install

Install it with the package manager.

### Linux

Use the distribution package.

## Usage

Run the command.
"""


def test_headings_start_chunks_and_give_paths() -> None:
    chunks = check_invariants(DOC, ChunkingConfig(max_chars=200, overlap_chars=50))
    assert [c.heading_path for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Linux"),
        ("Guide", "Usage"),
    ]
    assert [c.text.splitlines()[0] for c in chunks] == [
        "# Guide",
        "## Install",
        "### Linux",
        "## Usage",
    ]
    # A chunk that starts a section carries no overlap from the previous section.
    for prev, chunk in itertools.pairwise(chunks):
        assert chunk.start > prev.end


def test_heading_run_stays_with_its_text() -> None:
    chunks = check_invariants("# Title\n## Part one\n\nBody.\n\n## Part two\n\nMore.", SMALL)
    assert [c.text for c in chunks] == ["# Title\n## Part one\n\nBody.", "## Part two\n\nMore."]
    assert chunks[0].heading_path == ("Title", "Part one")
    assert chunks[1].heading_path == ("Title", "Part two")


def test_heading_path_inside_long_section() -> None:
    text = "# Top\n\n" + "Some filler sentence here. " * 20
    chunks = check_invariants(text, SMALL)
    assert len(chunks) > 2
    assert all(c.heading_path == ("Top",) for c in chunks)


def test_heading_syntax_details() -> None:
    text = "#hashtag is not a heading\n\n## Closing hashes ##\n\ntext\n\n####### seven is text"
    chunks = check_invariants(text, ChunkingConfig(max_chars=200, overlap_chars=0))
    assert [c.heading_path for c in chunks] == [(), ("Closing hashes",)]


def test_hash_lines_in_code_fence_are_not_headings() -> None:
    text = "# Real\n\n```bash\n# install\npip install x\n```\n\nAfter."
    chunks = check_invariants(text, ChunkingConfig(max_chars=200, overlap_chars=0))
    assert len(chunks) == 1 and chunks[0].heading_path == ("Real",)


def test_min_chars_merges_short_sections() -> None:
    text = "# A\n\nx\n\n# B\n\ny\n\n# C\n\n" + "A sentence of some length here. " * 3
    strict = check_invariants(text, ChunkingConfig(max_chars=200, overlap_chars=0))
    assert len(strict) == 3
    merged = check_invariants(text, ChunkingConfig(max_chars=200, overlap_chars=0, min_chars=30))
    assert len(merged) == 1
    assert merged[0].heading_path == ("C",)


def test_min_chars_merges_short_tail() -> None:
    text = "A fairly long sentence that fills most of the chunk budget here. End."
    cfg = ChunkingConfig(max_chars=70, overlap_chars=0)
    assert [c.text for c in check_invariants(text, cfg)] == [text]
    cfg = ChunkingConfig(max_chars=66, overlap_chars=0)
    assert check_invariants(text, cfg)[-1].text == "End."
    cfg = ChunkingConfig(max_chars=66, overlap_chars=0, min_chars=10)
    # Merging would exceed max_chars, so the short tail stays: max_chars always wins.
    assert check_invariants(text, cfg)[-1].text == "End."


# ----------------------------------------------------------------------------- code fences


def test_small_code_fence_is_never_split() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(9)) + "\n```"
    assert len(code) <= 100
    text = "Some words before the code block. " * 3 + "\n\n" + code + "\n\nAnd after it."
    chunks = check_invariants(text, ChunkingConfig(max_chars=100, overlap_chars=30))
    holders = [c for c in chunks if "x0 = 0" in c.text or "x8 = 8" in c.text]
    assert any(code in c.text for c in holders)
    for chunk in chunks:  # no chunk holds part of the fence without all of it
        assert ("x4 = 4" in chunk.text) == (code in chunk.text)


def test_fence_almost_max_chars_shrinks_overlap() -> None:
    code = "```\n" + "\n".join(f"line {i}" for i in range(12)) + "\n```"
    assert 80 < len(code) <= 100
    text = "Lead-in words that come before it, quite a few of them. " * 2 + "\n\n" + code
    chunks = check_invariants(text, ChunkingConfig(max_chars=100, overlap_chars=40))
    assert any(code in c.text for c in chunks)


def test_long_code_fence_splits_at_lines() -> None:
    code = "```\n" + "\n".join(f"value_{i} = compute({i})" for i in range(40)) + "\n```"
    chunks = check_invariants(code, ChunkingConfig(max_chars=120, overlap_chars=0))
    assert len(chunks) > 1
    for chunk in chunks:
        assert code[chunk.start - 1] == "\n" if chunk.start else True
        assert chunk.end == len(code) or code[chunk.end] == "\n"


def test_tilde_fence_and_unclosed_fence() -> None:
    text = "~~~\n# not heading\n~~~\n\n```\n# also not\nnever closed"
    chunks = check_invariants(text, ChunkingConfig(max_chars=200, overlap_chars=0))
    assert all(c.heading_path == () for c in chunks)


# ----------------------------------------------------------------------------- overlap


def test_overlap_starts_at_word_boundary() -> None:
    text = " ".join(f"token{i}" for i in range(300))
    cfg = ChunkingConfig(max_chars=100, overlap_chars=30)
    chunks = check_invariants(text, cfg)
    norm = normalise_text(text)
    for prev, chunk in itertools.pairwise(chunks):
        assert chunk.start < prev.end, "continuing chunks carry an overlap"
        assert norm[chunk.start - 1] == " "
        assert 0 < prev.end - chunk.start <= 30


def test_overlap_prefers_sentence_start() -> None:
    text = " ".join(f"Sentence {i} ends." for i in range(60))
    chunks = check_invariants(text, ChunkingConfig(max_chars=100, overlap_chars=40))
    for chunk in chunks:
        assert chunk.text.startswith("Sentence ")


def test_zero_overlap_means_disjoint_chunks() -> None:
    text = "Lorem ipsum dolor sit amet. " * 50
    chunks = check_invariants(text, ChunkingConfig(max_chars=100, overlap_chars=0))
    for prev, chunk in itertools.pairwise(chunks):
        assert chunk.start > prev.end


# ----------------------------------------------------------------------------- hard splits


def test_huge_word_is_hard_split_and_neighbours_kept_whole() -> None:
    rng = random.Random(3)
    blob = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for _ in range(50_000)
    )
    text = f"Intro words here.\n\n{blob}\n\nClosing words here."
    cfg = ChunkingConfig(max_chars=1000, overlap_chars=100)
    chunks = check_invariants(text, cfg)
    assert 50 <= len(chunks) <= 60
    assert_whole_words(text, chunks, cfg.max_chars)
    assert chunks[-1].text.endswith("Closing words here.")
    assert "Closing" not in chunks[-2].text or chunks[-2].text.endswith("here.")


def test_long_line_without_spaces_and_cjk_run() -> None:
    for text in ("x" * 5000, "漢" * 5000, "a-b_c/d." * 700):
        chunks = check_invariants(text, ChunkingConfig(max_chars=300, overlap_chars=50))
        assert max(len(c.text) for c in chunks) == 300


@pytest.mark.parametrize(
    "unit",
    [
        "q\u0301",  # base + combining mark (no precomposed form)
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ family
        "\U0001f44d\U0001f3fd",  # emoji + skin tone modifier
        "\U0001f1ef\U0001f1f5",  # flag: regional-indicator pair
        "\u0915\u094d\u0937",  # Devanagari conjunct (virama)
        "\u2764\ufe0f",  # variation selector
    ],
)
@pytest.mark.parametrize("max_chars", [96, 97, 98, 99])  # every offset inside a cluster
def test_hard_split_is_grapheme_safe(unit: str, max_chars: int) -> None:
    text = unit * 400
    chunks = check_invariants(text, ChunkingConfig(max_chars=max_chars, overlap_chars=10))
    assert len(chunks) > 1
    for chunk in chunks:
        # Each chunk is a whole number of clusters: nothing was cut inside one.
        assert chunk.text == unit * (len(chunk.text) // len(unit))


# ----------------------------------------------------------------------------- scripts


def test_rtl_emoji_and_mixed_scripts_keep_words_whole() -> None:
    hebrew = "שלום עולם, זהו טקסט בעברית שנכתב מימין לשמאל. "
    arabic = "مرحبا بالعالم، هذا نص عربي قصير للاختبار. "
    emoji = "Deploy done 🚀🎉 thanks 👍🏽 team 👨‍👩‍👧! "
    text = (hebrew * 5) + "\n\n" + (arabic * 5) + "\n\n" + (emoji * 8)
    cfg = ChunkingConfig(max_chars=90, overlap_chars=25)
    chunks = check_invariants(text, cfg)
    assert_whole_words(text, chunks, cfg.max_chars)


# ----------------------------------------------------------------------------- properties


_VOCAB_RNG = random.Random(1234)
_VOCAB = [
    "".join(
        _VOCAB_RNG.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(_VOCAB_RNG.randint(1, 14))
    )
    for _ in range(400)
]


def _generate(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 30)):
        kind = rng.random()
        if kind < 0.1:
            parts.append("#" * rng.randint(1, 4) + " " + " ".join(rng.choices(_VOCAB, k=3)))
        elif kind < 0.16:
            lines = (
                " ".join(rng.choices(_VOCAB, k=rng.randint(1, 8)))
                for _ in range(rng.randint(1, 25))
            )
            parts.append("```\n" + "\n".join(lines) + "\n```")
        elif kind < 0.19:
            parts.append(
                "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(40, 2500)))
            )
        else:
            sentences = []
            for _ in range(rng.randint(1, 12)):
                words = " ".join(rng.choices(_VOCAB, k=rng.randint(1, 25)))
                sentences.append(words.capitalize() + rng.choice([".", "!", "?", "", ";"]))
            parts.append(rng.choice([" ", " ", "\n", "  "]).join(sentences))
    return rng.choice(["\n\n", "\n", "\n\n\n\n\n", "\r\n\r\n"]).join(parts)


@pytest.mark.parametrize("seed", range(250))
def test_property_random_documents(seed: int) -> None:
    rng = random.Random(seed)
    text = _generate(rng)
    max_chars = rng.choice([50, 64, 120, 300, 800, 1200])
    overlap = rng.choice([0, max_chars // 8, max_chars // 3, max_chars - 1])
    cfg = ChunkingConfig(
        max_chars=max_chars, overlap_chars=overlap, min_chars=rng.choice([1, 1, 20])
    )
    chunks = check_invariants(text, cfg)
    assert_whole_words(text, chunks, cfg.max_chars)
    assert split_into_chunks(text, cfg) == chunks  # deterministic


def test_deterministic_across_calls_and_equal_configs() -> None:
    text = DOC * 20
    a = split_into_chunks(text, ChunkingConfig(max_chars=150, overlap_chars=40))
    b = split_into_chunks(text, ChunkingConfig(max_chars=150, overlap_chars=40))
    assert a == b and len(a) > 20


@pytest.mark.slow  # 5 MB of text
def test_performance_five_megabytes() -> None:
    rng = random.Random(5)
    paragraphs = []
    size = 0
    while size < 5_000_000:
        if rng.random() < 0.03:
            para = "## " + " ".join(rng.choices(_VOCAB, k=3))
        else:
            para = (
                ". ".join(
                    " ".join(rng.choices(_VOCAB, k=rng.randint(4, 20)))
                    for _ in range(rng.randint(1, 8))
                )
                + "."
            )
        paragraphs.append(para)
        size += len(para) + 2
    text = "\n\n".join(paragraphs)
    started = time.perf_counter()
    chunks = split_into_chunks(text)
    elapsed = time.perf_counter() - started
    assert len(chunks) > 4000
    assert max(len(c.text) for c in chunks) <= 1200
    assert elapsed < 10, f"5 MB took {elapsed:.1f}s"
    # One long line without any break at all is linear too.
    started = time.perf_counter()
    split_into_chunks("y" * 5_000_000)
    assert time.perf_counter() - started < 10


# ----------------------------------------------------------------------------- tokens


def test_estimate_tokens_basics() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens(" \n\t ") == 0
    assert estimate_tokens("hello") >= 1
    english = "The quick brown fox jumps over the lazy dog."  # 10 cl100k tokens
    assert 10 <= estimate_tokens(english) <= 16
    # English prose runs about 4-4.5 characters per cl100k token: stay at or above len/4.
    prose = (
        "Documents are split into chunks before embedding, because a model has a maximum "
        "input length and because a short passage makes a more precise search result than "
        "a whole file. Extraordinary circumstances necessitate comprehensive documentation."
    )
    assert len(prose) / 4 <= estimate_tokens(prose) <= len(prose) / 2.5


def test_estimate_tokens_never_badly_under() -> None:
    cjk = "日本語のテキストと中文文本和한국어텍스트" * 10
    assert estimate_tokens(cjk) >= len(cjk)  # at least one token per CJK character
    rng = random.Random(9)
    b64 = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for _ in range(30_000)
    )
    assert estimate_tokens(b64) >= 30_000 / 3  # random base64 runs ~2.5-3 chars per token
    assert estimate_tokens("🚀" * 100) >= 100
    assert estimate_tokens("1234567890" * 30) >= 100  # digits group by at most three
    assert estimate_tokens("x=1;y=2;" * 50) >= 200  # punctuation-dense code
    words = " ".join(["a"] * 1000)
    assert estimate_tokens(words) >= 1000


def test_estimate_tokens_is_never_below_the_embedders_count() -> None:
    """The embeddings client packs requests by this estimate; below the server's count, a
    request over the limit is rejected. The mock's rule is words plus punctuation marks."""
    from docpipe_dagster_mocks.openai.app import count_tokens

    samples = [
        "x=1;y=2;" * 50,  # punctuation-dense code: a per-character formula counted ~270
        "a, b; c. d! " * 100,
        "if (a[i] != b[j]) { return -1; }\n" * 40,
        "The quick brown fox jumps over the lazy dog. " * 20,
        "日本語のテキスト、中文文本。" * 20,
        "1,234.56; 7,890.12 " * 30,
    ]
    for text in samples:
        assert estimate_tokens(text) >= count_tokens(text), text[:20]


def test_estimate_tokens_roughly_linear() -> None:
    para = "Embedding models map text to vectors; similar texts land close together. "
    assert estimate_tokens(para * 100) <= 101 * estimate_tokens(para)
    assert estimate_tokens(para * 100) >= 90 * estimate_tokens(para)


# --- markdown tables: the header row repeats in every chunk -------------------------------


def _table(rows: int) -> str:
    body = "\n".join(f"| row {i} | {i * 7} | item {i} |" for i in range(rows))
    return f"| Name | Qty | Note |\n|---|---|---|\n{body}"


def test_long_table_repeats_its_header_in_every_chunk() -> None:
    text = f"# Stock\n\nBefore.\n\n{_table(300)}\n\nAfter the table."
    config = ChunkingConfig(max_chars=200, overlap_chars=40)
    chunks = check_invariants(text, config)
    assert len(chunks) > 10
    header = "| Name | Qty | Note |\n|---|---|---|\n"
    for chunk in chunks[1:]:
        assert chunk.text.startswith(header) and chunk.header_chars == len(header)
        assert chunk.heading_path == ("Stock",)
    assert chunks[0].header_chars == 0 and header in chunks[0].text
    # Every row is in some chunk, whole.
    rows = [line for c in chunks for line in c.text[c.header_chars :].split("\n")]
    assert all(f"| row {i} | {i * 7} | item {i} |" in rows for i in range(300))
    assert chunks[-1].text.endswith("After the table.")


def test_table_header_not_repeated_in_fences_or_when_too_wide() -> None:
    fenced = "```\n" + _table(200) + "\n```"
    for chunk in check_invariants(fenced, SMALL):
        assert chunk.header_chars == 0
    wide = "| " + " | ".join(f"column {i}" for i in range(40)) + " |\n|" + "---|" * 40 + "\n"
    wide += "\n".join("| " + " | ".join(str(i) for _ in range(40)) + " |" for i in range(50))
    for chunk in check_invariants(wide, ChunkingConfig(max_chars=300, overlap_chars=30)):
        assert chunk.header_chars == 0
