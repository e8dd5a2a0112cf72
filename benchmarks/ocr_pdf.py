"""Local parse throughput of PDF text pages, scanned pages and images, and the install size
of the `ocr` extra and of pypdfium2.

    python -m benchmarks.ocr_pdf                     # 3 repeats, then install sizes
    python -m benchmarks.ocr_pdf --repeat 5 --skip-install-size

Every input is generated (docpipe_dagster_tests/support/scans.py, mocks/llamaparse/testdata.py)
or committed (samples/embedding-basics.pdf). Rows: in-process `core.extract.extract` (the OCR
engine loaded once beforehand), and the same documents through `parse_locally`, the parse
sandbox's worker processes the pipeline uses (a warm worker; its start and model load are
reported apart). PDF text is also read with pypdf, the library PDFium replaced, for the
comparison in docs/PARSER.md. Writes --out (default benchmarks/results/ocr_pdf.json).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.formats import add_install_sizes, write_result
from docpipe_dagster.core.extract import extract
from docpipe_dagster.core.extract import ocr as ocr_module
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.support import scans

SAMPLE_PDF = Path(__file__).resolve().parent.parent / "samples" / "embedding-basics.pdf"
OCR_EXTRA = ("pillow>=10.1", "rapidocr-onnxruntime>=1.4.4,<2")
PDF_TEXT = ("pypdfium2>=4.30",)


def inputs() -> list[tuple[str, str, bytes, int]]:
    """(label, filename, bytes, pages)."""
    text_pages = [
        "\n".join(f"Line {j} of page {i}: the harbour ledger lists cargo." for j in range(40))
        for i in range(50)
    ]
    scan_pages = [list(scans.SCAN_LINES), list(scans.PHOTO_LINES), list(scans.SCAN_LINES)]
    return [
        ("PDF, text, 50 pages", "ledger.pdf", build_text_pdf(text_pages), 50),
        ("PDF, text (sample)", "sample.pdf", SAMPLE_PDF.read_bytes(), 2),
        ("PDF, scanned, 3 pages", "scan.pdf", scans.scanned_pdf(scan_pages), 3),
        (
            "PNG, scanned lines",
            "scan.png",
            scans.image_bytes(scans.page_image(scans.SCAN_LINES), "PNG"),
            1,
        ),
        ("JPEG, photo of a page", "photo.jpg", scans.photo_of_page(scans.PHOTO_LINES), 1),
    ]


def _time(fn: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def _row(label: str, way: str, data: bytes, pages: int, seconds: float) -> dict:
    return {
        "input": label,
        "way": way,
        "bytes": len(data),
        "pages": pages,
        "seconds_per_doc": round(seconds, 4),
        "docs_per_s": round(1 / seconds, 2),
        "pages_per_s": round(pages / seconds, 2),
        "mb_per_s": round(len(data) / seconds / 1e6, 3),
    }


def throughput(repeat: int) -> tuple[list[dict], dict]:
    from docpipe_dagster.pipeline.local_parse import parse_locally, sandbox

    started = time.perf_counter()
    ocr_module.engine()
    startup = {"ocr_engine_load_s": round(time.perf_counter() - started, 2)}
    rows = []
    docs = inputs()
    for label, name, data, pages in docs:
        extract(name, data)  # warm-up
        seconds = _time(lambda: extract(name, data), repeat)  # noqa: B023  (called now)
        rows.append(_row(label, "in-process", data, pages, seconds))
        if name.endswith(".pdf") and "text" in label:
            from pypdf import PdfReader

            def with_pypdf(data: bytes = data) -> None:
                for page in PdfReader(io.BytesIO(data)).pages:
                    page.extract_text()

            rows.append(_row(label, "pypdf (replaced)", data, pages, _time(with_pypdf, repeat)))
    pool = sandbox()
    started = time.perf_counter()
    parse_locally("warm.png", docs[3][2])  # a worker starts and loads the OCR engine
    startup["worker_start_and_first_ocr_s"] = round(time.perf_counter() - started, 2)
    startup["workers"] = pool.limits.workers
    for label, name, data, pages in docs:
        seconds = _time(lambda: parse_locally(name, data), repeat)  # noqa: B023  (called now)
        rows.append(_row(label, "sandbox (parse_locally)", data, pages, seconds))
    return rows, startup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-install-size", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/ocr_pdf.json")
    args = parser.parse_args(argv)

    engine = ocr_module.engine()
    result: dict = {"repeat": args.repeat, "ocr_engine": engine.name if engine else None}
    rows, startup = throughput(args.repeat)
    result["throughput"], result["startup"] = rows, startup
    print(f"{'input':<24}{'way':<25}{'KB':>8}{'pages':>6}{'docs/s':>8}{'pages/s':>8}{'MB/s':>8}")
    for r in rows:
        print(
            f"{r['input']:<24}{r['way']:<25}{r['bytes'] / 1e3:>8.1f}{r['pages']:>6}"
            f"{r['docs_per_s']:>8}{r['pages_per_s']:>8}{r['mb_per_s']:>8}"
        )
    print("startup:", startup)
    if not args.skip_install_size:
        add_install_sizes(result, {"ocr_extra": OCR_EXTRA, "pypdfium2": PDF_TEXT}, 8)
    write_result(result, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
