from __future__ import annotations

import pytest

from docpipe_dagster.core.media import (
    MEDIA_TYPES,
    SUPPORTED_EXTENSIONS,
    detect_media_type,
    is_ignored_key,
    unsupported_reason,
)

PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
ZIP_HEAD = b"PK\x03\x04\x14\x00\x06\x00"


def test_supported_extensions() -> None:
    assert {
        ".txt",
        ".md",
        ".markdown",
        ".html",
        ".htm",
        ".pdf",
        ".csv",
        ".json",
    } == SUPPORTED_EXTENSIONS
    assert set(MEDIA_TYPES) == SUPPORTED_EXTENSIONS


@pytest.mark.parametrize(
    ("key", "head", "expected"),
    [
        ("a.txt", b"hello", "text/plain"),
        ("dir/b.md", b"# Title", "text/markdown"),
        ("b.markdown", b"# Title", "text/markdown"),
        ("c.HTML", b"<html>", "text/html"),
        ("c.htm", b"<p>x", "text/html"),
        ("d.pdf", PDF_HEAD, "application/pdf"),
        ("e.csv", b"a,b\n1,2", "text/csv"),
        ("f.json", b'{"a": 1}', "application/json"),
        ("empty.md", b"", "text/markdown"),
    ],
)
def test_detect_by_extension(key: str, head: bytes, expected: str) -> None:
    assert detect_media_type(key, head) == expected


def test_detect_magic_beats_name() -> None:
    assert detect_media_type("photo.txt", PNG_HEAD) == "image/png"
    assert detect_media_type("scan.md", PDF_HEAD) == "application/pdf"
    assert detect_media_type("noext", PDF_HEAD) == "application/pdf"
    assert detect_media_type("report.docx", ZIP_HEAD).endswith("wordprocessingml.document")
    assert detect_media_type("bundle.zip", ZIP_HEAD) == "application/zip"


def test_pdf_header_after_junk_only_for_non_text_names() -> None:
    junk = b"\x00garbage" * 10 + PDF_HEAD
    assert detect_media_type("x.pdf", junk) == "application/pdf"
    prose = b"Every PDF file begins with the bytes %PDF- and a version number."
    assert detect_media_type("notes.txt", prose) == "text/plain"
    assert unsupported_reason("notes.txt", prose) is None


def test_detect_without_extension() -> None:
    assert detect_media_type("LICENSE", b"Permission is hereby granted") == "text/plain"
    assert detect_media_type("page", b"  <!DOCTYPE html><html>") == "text/html"
    assert detect_media_type("blob", b"\x00\x01\x02\xff") == "application/octet-stream"
    # A UTF-8 character cut off by the end of the sample is still text.
    assert detect_media_type("README", "naïve café".encode()[:-1]) == "text/plain"


@pytest.mark.parametrize(
    "key",
    [
        ".hidden.md",
        ".git/config",
        "docs/.obsidian/workspace.json",
        ".~lock.report.odt#",
        "~$report.docx",
        "big.pdf.part",
        "download.crdownload",
        "scratch.TMP",
        "notes.md.swp",
        "notes.md~",
        "#notes.md#",
        "photos/Thumbs.db",
        "__MACOSX/a.md",
        "",
        "/",
    ],
)
def test_ignored_keys(key: str) -> None:
    assert is_ignored_key(key)
    assert unsupported_reason(key, b"x") is not None


@pytest.mark.parametrize(
    "key",
    ["a.md", "docs/guide.md", "./docs/a.txt", "my.notes.v2.md", "dir.with.dots/a.pdf", "x~y.md"],
)
def test_not_ignored_keys(key: str) -> None:
    assert not is_ignored_key(key)


def test_unsupported_reason_for_unknown_type() -> None:
    reason = unsupported_reason("setup.EXE", b"MZ\x90\x00")
    assert reason is not None
    assert ".exe" in reason and "supported:" in reason and ".pdf" in reason and ".md" in reason


@pytest.mark.parametrize(
    ("key", "head", "fragment"),
    [
        ("fake.pdf", b"<html>not a pdf", "not a PDF"),
        ("image.txt", PNG_HEAD, "image/png"),
        ("binary.csv", b"a,b\x00\x00\x01", "binary"),
        ("archive", ZIP_HEAD, "application/zip"),
        ("blob", b"\x00\x01\x02", "without an extension"),
    ],
)
def test_unsupported_reason_content_mismatch(key: str, head: bytes, fragment: str) -> None:
    reason = unsupported_reason(key, head)
    assert reason is not None and fragment in reason, reason


@pytest.mark.parametrize(
    ("key", "head"),
    [
        ("a.md", b"# hi"),
        ("a.pdf", PDF_HEAD),
        ("a.json", b"[1, 2]"),
        ("a.csv", "naïve,café\n".encode()),
        ("a.txt", "utf-16 text".encode("utf-16")),
        ("a.txt", b""),
        ("Makefile", b"all:\n\techo hi\n"),
    ],
)
def test_supported_files_have_no_reason(key: str, head: bytes) -> None:
    assert unsupported_reason(key, head) is None
