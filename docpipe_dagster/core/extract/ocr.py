"""OCR of images and scanned PDF pages, with whichever engine is installed.

Engines, in order of preference:

- RapidOCR (`rapidocr-onnxruntime`, Apache-2.0; the `ocr` extra): the PP-OCRv4 detection,
  direction and recognition ONNX models ship inside its wheel, so it works offline with
  nothing downloaded at run time.
- Tesseract, when the `tesseract` binary is on PATH (e.g. Debian's `tesseract-ocr`).

Without either, OCR raises NEEDS_OCR with what to install: a scan never becomes a silently
empty document. The engine is loaded once per process (RapidOCR takes seconds to load its
models), which is why the sandbox keeps its worker processes alive between documents.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from docpipe_dagster.core.extract.base import NEEDS_OCR, ExtractionError

if TYPE_CHECKING:
    from PIL.Image import Image

NEEDS_OCR_HINT = "needs OCR: pip install 'docpipe_dagster[ocr]', or parse with LlamaParse"
ENGINES = ("rapidocr", "tesseract")


@dataclass(frozen=True)
class Line:
    """One recognised line: its text and its box (left, top, right, bottom) in pixels."""

    text: str
    box: tuple[float, float, float, float]


class Engine(Protocol):
    name: str

    def lines(self, image: Image) -> list[Line]: ...


class RapidOcrEngine:
    """PP-OCRv4 through onnxruntime, one inference thread (the sandbox runs one worker per
    core; more threads per worker would only contend)."""

    name = "rapidocr"

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        # Detection at the image's own size up to 2,000 px a side (RapidOCR's default scales
        # the SHORT side up to 736 px: a one-line strip became a 5,000 px wide image).
        self._ocr = RapidOCR(
            intra_op_num_threads=1,
            inter_op_num_threads=1,
            det_limit_type="max",
            det_limit_side_len=2000,
        )

    def lines(self, image: Image) -> list[Line]:
        import numpy as np

        result, _ = self._ocr(np.asarray(image.convert("RGB")))
        out: list[Line] = []
        for box, text, _score in result or []:
            xs = [p[0] for p in box]
            ys = [p[1] for p in box]
            if text.strip():
                out.append(Line(text.strip(), (min(xs), min(ys), max(xs), max(ys))))
        return out


class TesseractEngine:
    """The `tesseract` command: PNG in on stdin, TSV of words out."""

    name = "tesseract"

    def __init__(self, binary: str) -> None:
        self._binary = binary

    def lines(self, image: Image) -> list[Line]:
        buf = io.BytesIO()
        image.convert("L").save(buf, format="PNG")
        done = subprocess.run(
            [self._binary, "stdin", "stdout", "tsv"],
            input=buf.getvalue(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tesseract failed: {done.stderr.decode(errors='replace')[:300]}")
        return _tesseract_lines(done.stdout.decode("utf-8", errors="replace"))


def _tesseract_lines(tsv: str) -> list[Line]:
    """Words of Tesseract's TSV grouped into its (block, paragraph, line) lines."""
    lines: dict[tuple[str, str, str], list[tuple[str, float, float, float, float]]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, width, height = (float(c) for c in cols[6:10])
        word = (cols[11].strip(), left, top, left + width, top + height)
        lines.setdefault((cols[2], cols[3], cols[4]), []).append(word)
    out = []
    for words in lines.values():
        out.append(
            Line(
                " ".join(w[0] for w in words),
                (
                    min(w[1] for w in words),
                    min(w[2] for w in words),
                    max(w[3] for w in words),
                    max(w[4] for w in words),
                ),
            )
        )
    out.sort(key=lambda line: (line.box[1], line.box[0]))
    return out


_lock = threading.Lock()
_engine: Engine | None = None
_looked = False


def engine() -> Engine | None:
    """The OCR engine of this process (loaded on first use), or None when none is installed."""
    global _engine, _looked
    with _lock:
        if not _looked:
            _engine = _load()
            _looked = True
        return _engine


def _load() -> Engine | None:
    try:
        return RapidOcrEngine()
    except ImportError:
        pass
    binary = shutil.which("tesseract")
    return TesseractEngine(binary) if binary else None


def require(what: str) -> Engine:
    """The engine, or ExtractionError(NEEDS_OCR) saying `what` (e.g. "The image") needs one."""
    found = engine()
    if found is None:
        raise ExtractionError(NEEDS_OCR, f"{what} {NEEDS_OCR_HINT}.")
    return found


def recognise(image: Image, ocr: Engine) -> str:
    """The text of `image`: lines in reading order, a blank line where the gap between two
    lines is wider than a line (so paragraphs stay paragraphs for chunking)."""
    return layout(ocr.lines(image))


def layout(lines: Sequence[Line]) -> str:
    rows = _rows(lines)
    parts: list[str] = []
    previous_bottom: float | None = None
    previous_height = 0.0
    for row in rows:
        top = min(line.box[1] for line in row)
        bottom = max(line.box[3] for line in row)
        height = bottom - top
        if previous_bottom is not None:
            gap = top - previous_bottom
            parts.append("\n\n" if gap > max(height, previous_height) else "\n")
        parts.append(" ".join(line.text for line in sorted(row, key=lambda li: li.box[0])))
        previous_bottom, previous_height = bottom, height
    return "".join(parts)


def _rows(lines: Sequence[Line]) -> list[list[Line]]:
    """Boxes whose vertical centres fall within half a line of each other form one row."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda li: (li.box[1] + li.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if rows:
            last = rows[-1]
            last_centre = sum((li.box[1] + li.box[3]) / 2 for li in last) / len(last)
            last_height = max(li.box[3] - li.box[1] for li in last)
            if abs(centre - last_centre) < last_height / 2:
                last.append(line)
                continue
        rows.append([line])
    return rows
