"""A tiny run of `python -m benchmarks.ocr_pdf`: every input is parsed in-process and through
the sandbox with the right page count, and the JSON is complete (not its times)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.ocr_pdf import inputs, main


def test_the_ocr_and_pdf_benchmark_reports_every_input(tmp_path: Path) -> None:
    out = tmp_path / "ocr_pdf.json"
    assert main(["--repeat", "1", "--skip-install-size", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ocr_engine"] == "rapidocr"
    rows = {(r["input"], r["way"]): r for r in report["throughput"]}
    for label, _name, data, pages in inputs():
        for way in ("in-process", "sandbox (parse_locally)"):
            row = rows[(label, way)]
            assert (row["bytes"], row["pages"]) == (len(data), pages)
            assert row["docs_per_s"] > 0 and row["mb_per_s"] > 0
    assert ("PDF, text, 50 pages", "pypdf (replaced)") in rows
    assert report["startup"]["worker_start_and_first_ocr_s"] > 0
