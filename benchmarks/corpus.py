"""A deterministic generated corpus: the same seed and sizes always give the same bytes.

Documents are written in a mix of formats the pipeline supports (markdown, plain text,
HTML, PDF). Each document draws most of its words from a topic (a few hundred pseudo-words),
so the mock's hashed bag-of-words vectors cluster the way real embeddings do, and every
sentence carries a serial number so no two chunks are identical (no accidental cache hits).
"""

from __future__ import annotations

import html
import math
import random
from dataclasses import dataclass
from pathlib import Path

from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf

DEFAULT_MIX = "md:5,txt:2,html:2,pdf:1"
_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "pe", "da", "fi", "go", "hu", "ja",
    "ke", "li", "mo", "nu", "po", "qua", "re", "si", "ta", "ul", "ve", "wo", "xi", "yo", "ze",
    "bra", "cor", "dri", "fen", "gal", "hel", "ist", "jor", "kel", "lum", "mar", "nor", "oth",
]  # fmt: skip
_COMMON = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "are",
    "be",
    "or",
    "an",
    "which",
    "can",
    "when",
    "each",
    "every",
    "after",
    "before",
    "into",
    "over",
    "under",
    "between",
    "through",
    "about",
]


@dataclass(frozen=True)
class CorpusSpec:
    docs: int
    seed: int = 7
    mean_chars: int = 10_000  # log-normal document sizes around this mean
    sigma: float = 0.6
    min_chars: int = 300
    max_chars: int = 60_000
    mix: str = DEFAULT_MIX
    topics: int = 40
    prefix: str = "corpus"

    def formats(self) -> list[tuple[str, float]]:
        parts = []
        for item in self.mix.split(","):
            ext, _, weight = item.strip().partition(":")
            if ext not in ("md", "txt", "html", "pdf"):
                raise ValueError(f"unknown format {ext!r} in mix {self.mix!r} (md, txt, html, pdf)")
            parts.append((ext, float(weight or 1)))
        return parts


@dataclass(frozen=True)
class CorpusFile:
    key: str  # storage key (relative path)
    size: int
    fmt: str


def _vocabulary(rng: random.Random, n: int) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class _Writer:
    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        rng = random.Random(spec.seed)
        vocab = _vocabulary(rng, 6000)
        self.topics = [rng.sample(vocab, 250) for _ in range(spec.topics)]
        self.vocab = vocab
        self.serial = 0

    def sentence(self, rng: random.Random, topic: list[str]) -> str:
        self.serial += 1
        n = rng.randint(8, 22)
        words = []
        for _ in range(n):
            r = rng.random()
            pool = topic if r < 0.6 else _COMMON if r < 0.85 else self.vocab
            words.append(rng.choice(pool))
        words.insert(rng.randint(1, n - 1), f"n{self.serial}")
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."

    def sections(self, rng: random.Random, chars: int) -> list[tuple[str, list[str]]]:
        """[(heading, [paragraph, ...]), ...] totalling about `chars` characters."""
        topic = rng.choice(self.topics)
        out: list[tuple[str, list[str]]] = []
        total = 0
        while total < chars:
            heading = " ".join(rng.choice(topic) for _ in range(rng.randint(2, 4))).title()
            paragraphs = []
            for _ in range(rng.randint(2, 6)):
                para = " ".join(self.sentence(rng, topic) for _ in range(rng.randint(2, 7)))
                paragraphs.append(para)
                total += len(para) + 2
                if total >= chars:
                    break
            out.append((heading, paragraphs))
            total += len(heading) + 4
        return out

    def render(self, fmt: str, title: str, sections: list[tuple[str, list[str]]]) -> bytes:
        if fmt == "md":
            parts = [f"# {title}"]
            for heading, paras in sections:
                parts.append(f"## {heading}")
                parts.extend(paras)
            return ("\n\n".join(parts) + "\n").encode()
        if fmt == "txt":
            parts = [title]
            for heading, paras in sections:
                parts.append(heading)
                parts.extend(paras)
            return ("\n\n".join(parts) + "\n").encode()
        if fmt == "html":
            body = [f"<h1>{html.escape(title)}</h1>"]
            for heading, paras in sections:
                body.append(f"<h2>{html.escape(heading)}</h2>")
                body.extend(f"<p>{html.escape(p)}</p>" for p in paras)
            return (
                f"<html><head><title>{html.escape(title)}</title></head><body>"
                + "\n".join(body)
                + "</body></html>\n"
            ).encode()
        # pdf: one page per section, lines of ~90 characters
        pages = []
        for heading, paras in sections:
            lines = [heading]
            for para in paras:
                words, line = para.split(), ""
                for w in words:
                    if len(line) + len(w) + 1 > 90:
                        lines.append(line)
                        line = w
                    else:
                        line = f"{line} {w}".strip()
                if line:
                    lines.append(line)
                lines.append("")
            pages.append("\n".join(lines))
        return build_text_pdf(pages or [title])


def _size(rng: random.Random, spec: CorpusSpec) -> int:
    mu = math.log(spec.mean_chars) - spec.sigma**2 / 2  # so that the mean is mean_chars
    return int(min(spec.max_chars, max(spec.min_chars, rng.lognormvariate(mu, spec.sigma))))


def generate(spec: CorpusSpec, root: Path) -> list[CorpusFile]:
    """Write the corpus under root/<prefix>/; returns the files written, in key order."""
    writer = _Writer(spec)
    formats = spec.formats()
    exts = [f for f, _ in formats]
    weights = [w for _, w in formats]
    files: list[CorpusFile] = []
    for i in range(spec.docs):
        rng = random.Random(f"{spec.seed}:{spec.prefix}:{i}")
        fmt = rng.choices(exts, weights)[0]
        sections = writer.sections(rng, _size(rng, spec))
        data = writer.render(fmt, f"Document {spec.prefix} {i}", sections)
        key = f"{spec.prefix}/{i // 100:04d}/doc-{i:06d}.{fmt}"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(CorpusFile(key, len(data), fmt))
    return files


def summary(files: list[CorpusFile]) -> dict:
    by_fmt: dict[str, int] = {}
    for f in files:
        by_fmt[f.fmt] = by_fmt.get(f.fmt, 0) + 1
    total = sum(f.size for f in files)
    return {
        "documents": len(files),
        "bytes": total,
        "mean_bytes": round(total / len(files)) if files else 0,
        "by_format": dict(sorted(by_fmt.items())),
    }
