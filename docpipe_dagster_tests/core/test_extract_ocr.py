"""PDF text per page, OCR of images and scanned pages, and the path without an OCR engine.

The OCR engine is the real one of the `ocr` extra (RapidOCR, models in its wheel); the images
are rendered by docpipe_dagster_tests/support/scans.py with known text, and recall is the share
of those words found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from docpipe_dagster.core.extract import NEEDS_OCR, ExtractionError, extract
from docpipe_dagster.core.extract import ocr as ocr_module
from docpipe_dagster.core.extract.images import MAX_IMAGE_PIXELS
from docpipe_dagster.pipeline.local_parse import parse_locally
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.support import scans
from docpipe_dagster_tests.support.apt import ensure_commands

# OCR and PDF rendering in the sandbox: heavy, so out of the fast lane (CI runs it).
pytestmark = pytest.mark.slow

SCAN_TEXT = "\n".join(scans.SCAN_LINES)
MIN_RECALL = 0.95


def _code(name: str, data: bytes) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extract(name, data)
    return info.value


def test_the_ocr_engine_of_the_extra_is_installed_and_offline() -> None:
    engine = ocr_module.engine()
    assert engine is not None and engine.name == "rapidocr"
    import rapidocr_onnxruntime

    models = os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models")
    assert sorted(f for f in os.listdir(models) if f.endswith(".onnx")), "models not in wheel"


def test_a_scanned_page_image_is_read() -> None:
    pages = extract("scan.png", scans.image_bytes(scans.page_image(scans.SCAN_LINES), "PNG"))
    assert len(pages) == 1
    assert scans.recall(SCAN_TEXT, pages[0].text) >= MIN_RECALL, pages[0].text
    assert pages[0].md == pages[0].text


def test_a_photo_of_a_page_is_read() -> None:
    page = extract("photo.jpg", scans.photo_of_page(scans.PHOTO_LINES))[0]
    assert scans.recall("\n".join(scans.PHOTO_LINES), page.text) >= MIN_RECALL, page.text


def test_every_image_format_and_a_multi_page_tiff() -> None:
    first = scans.page_image(["Harbour pilots board at dawn"]).convert("RGB")
    second = scans.page_image(["Tugboats wait by the breakwater"]).convert("RGB")
    for name, fmt in (("a.jpeg", "JPEG"), ("a.webp", "WEBP"), ("a.bmp", "BMP"), ("a.gif", "GIF")):
        (page,) = extract(name, scans.image_bytes(first, fmt))
        assert scans.recall("Harbour pilots board at dawn", page.text) == 1.0, (name, page.text)
    tiff = scans.image_bytes(first, "TIFF", save_all=True, append_images=[second])
    pages = extract("fax.tif", tiff)
    assert [scans.recall(t, p.text) for t, p in zip(
        ["Harbour pilots board at dawn", "Tugboats wait by the breakwater"], pages, strict=True
    )] == [1.0, 1.0]  # fmt: skip


def test_a_scanned_pdf_and_a_pdf_mixing_text_and_scanned_pages() -> None:
    (scanned,) = extract("scan.pdf", scans.scanned_pdf([scans.SCAN_LINES]))
    assert scans.recall(SCAN_TEXT, scanned.text) >= MIN_RECALL, scanned.text
    mixed = scans.join_pdfs(
        [
            build_text_pdf(["Typed page one about tides"]),
            scans.scanned_pdf([scans.SCAN_LINES]),
            build_text_pdf(["Typed page three about buoys"]),
        ]
    )
    pages = extract("mixed.pdf", mixed)
    assert len(pages) == 3  # page numbers stay the PDF's
    assert pages[0].text == "Typed page one about tides"
    assert scans.recall(SCAN_TEXT, pages[1].text) >= MIN_RECALL, pages[1].text
    assert pages[2].text == "Typed page three about buoys"


def test_bad_images_fail_with_a_reason() -> None:
    started = time.monotonic()
    err = _code("huge.png", scans.huge_png(20_000, 20_000))
    assert err.code == "LIMIT_EXCEEDED" and "too large" in err.message
    assert time.monotonic() - started < 10  # refused before decoding 400 megapixels
    assert MAX_IMAGE_PIXELS < 20_000 * 20_000
    png = scans.image_bytes(scans.page_image(["x"]), "PNG")
    err = _code("cut.png", png[: len(png) // 2])
    assert err.code == "UNREADABLE_FILE" and "corrupted or truncated" in err.message
    err = _code("text.jpg", b"this is not an image at all")
    assert err.code == "UNREADABLE_FILE"


def test_pdf_text_pages_javascript_and_500_pages() -> None:
    pages = extract("r.pdf", build_text_pdf(["Hello (world)\nline two", "Second page"]))
    assert [p.text for p in pages] == ["Hello (world)\nline two", "Second page"]
    (js,) = extract("js.pdf", scans.javascript_pdf("Quarterly tide report"))
    assert js.text == "Quarterly tide report"  # text read; PDFium has no JavaScript engine
    started = time.monotonic()
    many = extract("long.pdf", build_text_pdf([f"Page {i} of the ledger" for i in range(500)]))
    assert len(many) == 500 and many[499].text == "Page 499 of the ledger"
    assert time.monotonic() - started < 30


_NO_ENGINE = """
import json, sys
sys.modules["rapidocr_onnxruntime"] = None  # the ocr extra is not installed
from docpipe_dagster.core.extract import ExtractionError, extract
out = {}
for name in sys.argv[1:]:
    data = open(name, "rb").read()
    try:
        out[name] = ["ok", [p.text for p in extract(name, data)]]
    except ExtractionError as exc:
        out[name] = [exc.code, exc.message]
print(json.dumps(out))
"""


def test_without_an_ocr_engine_images_and_scans_fail_saying_what_to_install(tmp_path) -> None:
    files = {
        "scan.png": scans.image_bytes(scans.page_image(["Lost words"]), "PNG"),
        "scan.pdf": scans.scanned_pdf([["Lost words"]]),
        "mixed.pdf": scans.join_pdfs(
            [build_text_pdf(["Kept typed words"]), scans.scanned_pdf([["Lost words"]])]
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # and no `tesseract`
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _NO_ENGINE, *files],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout)
    hint = "needs OCR: pip install 'docpipe_dagster[ocr]', or parse with LlamaParse"
    assert out["scan.png"] == [NEEDS_OCR, f"The image {hint}."]
    assert out["scan.pdf"][0] == NEEDS_OCR and hint in out["scan.pdf"][1]
    # A PDF with text pages keeps them; its scanned page is empty (docs/PARSER.md).
    assert out["mixed.pdf"] == ["ok", ["Kept typed words", ""]]


def test_parse_locally_runs_images_and_pdfs_in_the_sandbox() -> None:
    parsed = parse_locally("scan.png", scans.image_bytes(scans.page_image(scans.SCAN_LINES), "PNG"))
    assert scans.recall(SCAN_TEXT, parsed.markdown) >= MIN_RECALL
    assert parsed.page_numbers == [1]
    parsed = parse_locally("r.pdf", build_text_pdf(["One", "Two", "Three"]))
    assert parsed.pages == ["One", "Two", "Three"] and parsed.page_numbers == [1, 2, 3]
    from docpipe_dagster.clients.llamaparse import ParseError

    with pytest.raises(ParseError) as info:
        parse_locally("huge.png", scans.huge_png(20_000, 20_000))
    assert info.value.code == "LIMIT_EXCEEDED" and not info.value.retryable


def tesseract_path() -> str:
    """The `tesseract` binary, apt-installed when missing (CI starts without it)."""
    return ensure_commands(("tesseract",), ("tesseract-ocr",), recommends=True)[0]


_TESSERACT_ONLY = """
import json, sys
sys.modules["rapidocr_onnxruntime"] = None  # no ocr extra: the system Tesseract is used
from docpipe_dagster.core.extract import extract, ocr
pages = extract(sys.argv[1], open(sys.argv[1], "rb").read())
print(json.dumps([ocr.engine().name, [p.text for p in pages]]))
"""


def test_without_the_extra_a_system_tesseract_reads_the_scans(tmp_path) -> None:
    binary = tesseract_path()
    (tmp_path / "photo.jpg").write_bytes(scans.photo_of_page(scans.PHOTO_LINES))
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(binary), "/usr/bin", "/bin"]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _TESSERACT_ONLY, "photo.jpg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    name, pages = json.loads(done.stdout)
    assert name == "tesseract"
    assert scans.recall("\n".join(scans.PHOTO_LINES), pages[0]) >= MIN_RECALL, pages
