"""`python -m benchmarks.formats` runs and reports every format (install sizes skipped: they
pip-install into scratch venvs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import formats


@pytest.mark.slow
def test_formats_benchmark_reports_every_sample(tmp_path: Path) -> None:
    out = tmp_path / "formats.json"
    argv = ["--repeat", "1", "--sheet-rows", "50", "--skip-install-size", "--out", str(out)]
    assert formats.main(argv) == 0
    result = json.loads(out.read_text())
    files = {row["file"] for row in result["throughput"]}
    assert {
        "report.docx",
        "deck.pptx",
        "sales.xlsx",
        "note.msg",
        "fixture:libreoffice.xls",
    } <= files
    assert all(row["docs_per_s"] > 0 and row["pages"] >= 1 for row in result["throughput"])
