"""What both peer runs share: the spec, the corpus as text, SQLAlchemy URLs, the result file.

A peer run is `python -m benchmarks.peers.<peer>_run SPEC.json` in a fresh process, like
docpipe's `docpipe ingest --wait`; it notes when its imports were done, so the caller can
report the whole process and the run without its imports.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SUFFIXES = (".md", ".txt", ".html")


class _Text(HTMLParser):
    """Visible text of an HTML document, a paragraph per block element (no dependency)."""

    BLOCKS = frozenset(
        {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "br", "tr", "title"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(raw: str) -> str:
    parser = _Text()
    parser.feed(raw)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def load_corpus(folder: Path) -> list[tuple[str, str]]:
    """(storage key, text) for every text/markdown/HTML file, sorted by key.

    Both peers get the same text; HTML is reduced to its visible text (docpipe gets it from
    the parser service). Other formats (PDF) are left out: neither peer parses them here.
    """
    docs = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in SUFFIXES:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".html":
                text = html_to_text(text)
            docs.append((path.relative_to(folder).as_posix(), text))
    return docs


def sqlalchemy_url(url: str, driver: str) -> str:
    """A libpq URL (`postgresql://u:p@/db?host=/sock`) for SQLAlchemy's `driver`."""
    parts = urlsplit(url)
    return urlunsplit((f"postgresql+{driver}", *parts[1:]))


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_spec() -> dict[str, Any]:
    return json.loads(Path(sys.argv[1]).read_text())


def write_result(spec: dict[str, Any], started: float, imported: float, **figures: Any) -> None:
    """`started`/`imported` are perf_counter values at the top of the module and after the
    peer's imports; the run's own seconds are counted by the caller of this function."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.update(
        import_seconds=round(imported - started, 4),
        peak_rss_mb_self=peak_rss_mb(),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
    )
    Path(spec["out"]).write_text(json.dumps(figures, indent=2, default=str))


def now() -> float:
    return time.perf_counter()
