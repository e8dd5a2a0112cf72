from __future__ import annotations

import io
import struct
import zipfile

import docx
import openpyxl
import pptx
import pytest

from docpipe_dagster.core.media import (
    TEXT_EXTENSIONS,
    detect_media_type,
    is_ignored_key,
    unsupported_reason,
)
from docpipe_dagster.core.sniff import sniff

PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
ZIP_HEAD = b"PK\x03\x04\x14\x00\x06\x00"
PE_PROGRAM = b"MZ" + b"\x00" * 58 + struct.pack("<I", 64) + b"PE\x00\x00" + b"\x00" * 64
# What a parser with every type accepts (the routing passes the real list).
ACCEPTED = frozenset(
    {".txt", ".md", ".pdf", ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".epub", ".doc", ".xls"}
    | {".ppt", ".msg", ".rtf", ".png", ".jpg", ".eml", ".html", ".json", ".csv", ".key"}
)


def _docx() -> bytes:
    document = docx.Document()
    document.add_heading("Census", 1)
    document.add_paragraph("households by county")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _xlsx() -> bytes:
    book = openpyxl.Workbook()
    book.active.append(["county", "households"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _pptx() -> bytes:
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[0]).shapes.title.text = "Roadmap"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def _zip(*members: tuple[str, bytes], stored_first: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, body) in enumerate(members):
            kind = zipfile.ZIP_STORED if stored_first and i == 0 else zipfile.ZIP_DEFLATED
            zf.writestr(name, body, compress_type=kind)
    return out.getvalue()


def _odf(mimetype: str) -> bytes:
    return _zip(("mimetype", mimetype.encode()), ("content.xml", b"<x/>"), stored_first=True)


def _ole(*streams: str) -> bytes:
    """A minimal OLE2 compound file: header, one FAT sector, one directory sector holding
    the root entry and `streams` (up to 3) as a right-leaning tree."""
    free, end, fat_sect, nostream = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9)  # version, BOM, 512 B
    struct.pack_into("<I", header, 0x2C, 1)  # one FAT sector
    struct.pack_into("<I", header, 0x30, 1)  # directory starts at sector 1
    struct.pack_into("<I", header, 0x3C, end)  # no mini FAT
    struct.pack_into("<I", header, 0x44, end)  # no DIFAT sectors
    struct.pack_into("<109I", header, 0x4C, 0, *([free] * 108))
    fat = struct.pack("<128I", fat_sect, end, *([free] * 126))

    def entry(name: str, kind: int, right: int, child: int) -> bytes:
        raw = bytearray(128)
        encoded = (name + "\x00").encode("utf-16-le")
        raw[: len(encoded)] = encoded
        struct.pack_into("<HBB", raw, 64, len(encoded), kind, 1)
        struct.pack_into("<III", raw, 68, nostream, right, child)
        return bytes(raw)

    entries = [entry("Root Entry", 5, nostream, 1 if streams else nostream)]
    for i, name in enumerate(streams):
        right = i + 2 if i + 1 < len(streams) else nostream
        entries.append(entry(name, 2, right, nostream))
    directory = b"".join(entries).ljust(512, b"\x00")
    return bytes(header) + fat + directory


def _eml() -> bytes:
    return (
        b"From: Ada <ada@example.org>\r\nTo: bob@example.org\r\nSubject: census\r\n"
        b"Date: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\nThe county totals are attached.\r\n"
    )


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_docx(), "docx"),
        (_xlsx(), "xlsx"),
        (_pptx(), "pptx"),
        (_odf("application/vnd.oasis.opendocument.text"), "odt"),
        (_odf("application/vnd.oasis.opendocument.spreadsheet"), "ods"),
        (_odf("application/vnd.oasis.opendocument.presentation"), "odp"),
        (_odf("application/epub+zip"), "epub"),
        (_zip(("notes.txt", b"hello")), "zip"),
        (_ole("WordDocument", "1Table"), "doc"),
        (_ole("Workbook"), "xls"),
        (_ole("Current User", "PowerPoint Document"), "ppt"),
        (_ole("__properties_version1.0", "__nameid_version1.0"), "msg"),
        (_ole("EncryptionInfo", "EncryptedPackage"), "encrypted"),
        (_ole("Contents"), "ole"),
        (b"{\\rtf1\\ansi hello}", "rtf"),
        (PNG_HEAD, "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x18ftypheic", "heic"),
        (PE_PROGRAM, "exe"),
        (b"\x7fELF\x02\x01", "elf"),
        (PDF_HEAD, "pdf"),
    ],
)
def test_sniff_knows_containers(data: bytes, kind: str) -> None:
    found = sniff(data)
    assert found is not None and found.key == kind


def test_sniff_reads_the_head_of_a_zip() -> None:
    """The local headers at the start name the OOXML kind; the rest of the file is not
    needed. A head that does not reach far enough gives no verdict (the name is trusted)."""
    data = _docx()
    head = data[:2048]
    found = sniff(head, size=len(data))
    assert found is not None and found.key == "docx"
    assert sniff(ZIP_HEAD, size=10_000) is None


def test_sniff_survives_a_truncated_zip_and_a_bomb() -> None:
    data = _docx()
    assert sniff(data[: len(data) // 2]) is not None  # local headers still name it
    bomb = _zip(("[Content_Types].xml", b"<Types>" + b" " * 50_000_000 + b"</Types>"))
    assert len(bomb) < 200_000
    found = sniff(bomb)  # inflates at most 256 KB of it
    assert found is not None and found.key == "ooxml"


@pytest.mark.parametrize(
    ("key", "data", "expected"),
    [
        ("a.txt", b"hello", "text/plain"),
        ("dir/b.md", b"# Title", "text/markdown"),
        ("c.HTML", b"<html>", "text/html"),
        ("d.pdf", PDF_HEAD, "application/pdf"),
        ("e.csv", b"a,b\n1,2", "text/csv"),
        ("f.json", b'{"a": 1}', "application/json"),
        ("empty.md", b"", "text/markdown"),
        ("mail.eml", _eml(), "message/rfc822"),
        ("census.docx", _docx(), "application/vnd.openxmlformats-officedocument."),
        ("old.xls", _ole("Workbook"), "application/vnd.ms-excel"),
        ("letter.odt", _odf("application/vnd.oasis.opendocument.text"), "application/vnd.oasis"),
    ],
)
def test_detect_media_type(key: str, data: bytes, expected: str) -> None:
    assert detect_media_type(key, data).startswith(expected)


def test_detect_content_beats_name() -> None:
    assert detect_media_type("photo.txt", PNG_HEAD) == "image/png"
    assert detect_media_type("scan.md", PDF_HEAD) == "application/pdf"
    assert detect_media_type("noext", PDF_HEAD) == "application/pdf"
    assert detect_media_type("sheet.docx", _xlsx()).endswith("spreadsheetml.sheet")
    # Only a head of a zip: the name decides.
    assert detect_media_type("report.docx", ZIP_HEAD, size=10_000).endswith(
        "wordprocessingml.document"
    )


def test_pdf_header_after_junk_only_for_non_text_names() -> None:
    junk = b"\x00garbage" * 10 + PDF_HEAD
    assert detect_media_type("x.pdf", junk) == "application/pdf"
    prose = b"Every PDF file begins with the bytes %PDF- and a version number."
    assert detect_media_type("notes.txt", prose) == "text/plain"
    assert unsupported_reason("notes.txt", prose, ACCEPTED) is None


def test_detect_without_extension() -> None:
    assert detect_media_type("LICENSE", b"Permission is hereby granted") == "text/plain"
    assert detect_media_type("page", b"  <!DOCTYPE html><html>") == "text/html"
    assert detect_media_type("blob", b"\x00\x01\x02\xff") == "application/octet-stream"
    assert detect_media_type("message-0001", _eml()) == "message/rfc822"
    assert detect_media_type("NOTES", b"To do: buy milk\nDate: Monday\n") == "text/plain"
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


def test_unsupported_type_is_named() -> None:
    reason = unsupported_reason("setup.EXE", b"MZ\x90\x00", ACCEPTED)
    assert reason is not None and ".exe" in reason and "docs/PARSER.md" in reason
    # Content of a type the parser reads, under a name it does not: say how to fix it.
    reason = unsupported_reason("report.bin", PDF_HEAD, ACCEPTED)
    assert reason is not None and "rename it to report.pdf" in reason


@pytest.mark.parametrize(
    ("key", "data", "fragments"),
    [
        ("fake.pdf", b"<html>not a pdf", ["fake.pdf", "not a PDF document"]),
        ("image.txt", PNG_HEAD, ["a PNG image (image/png), not text"]),
        ("binary.csv", b"a,b\x00\x00\x01", ["binary data, not text"]),
        ("archive", ZIP_HEAD + b"\x00" * 30, ["no extension", "ZIP archive"]),
        ("blob", b"\x00\x01\x02", ["no extension", "binary data"]),
        ("scan", PDF_HEAD, ["no extension", "rename it to scan.pdf"]),
        # a renamed program, whatever the name
        ("setup.docx", PE_PROGRAM, ["Windows program", "not a document"]),
        ("report.pdf", b"\x7fELF\x02\x01\x01" + b"\x00" * 60, ["Linux program"]),
        # a zip called .docx that is not Office Open XML
        ("census.docx", _zip(("a.txt", b"x")), ["not a Word document", "[Content_Types].xml"]),
        # OOXML of another kind: the fix is a rename
        ("revenue.docx", _xlsx(), ["an Excel workbook", "rename it to revenue.xlsx"]),
        ("roadmap.xlsx", _pptx(), ["a PowerPoint presentation", "rename it to roadmap.pptx"]),
        (
            "letter.ods",
            _odf("application/vnd.oasis.opendocument.text"),
            ["rename it to letter.odt"],
        ),
        ("book.epub", _zip(("a.txt", b"x")), ["not an EPUB e-book"]),
        ("old.doc", _ole("Workbook"), ["legacy Excel", "rename it to old.xls"]),
        ("old.xls", b"<html><table></table></html>", ["not a legacy Excel workbook", "(text)"]),
        ("photo.png", b"\xff\xd8\xff\xe0\x00\x10JFIF", ["JPEG image", "rename it to photo.jpg"]),
        ("secret.docx", _ole("EncryptionInfo", "EncryptedPackage"), ["password-protected"]),
        ("secret.xlsx", _ole("EncryptionInfo", "EncryptedPackage"), ["without the password"]),
        ("notes.rtf", b"plain words", ["not an RTF document"]),
    ],
)
def test_content_contradicting_the_name_fails(key: str, data: bytes, fragments: list[str]) -> None:
    reason = unsupported_reason(key, data, ACCEPTED)
    assert reason is not None
    for fragment in fragments:
        assert fragment in reason, reason


@pytest.mark.parametrize(
    ("key", "data"),
    [
        ("a.md", b"# hi"),
        ("a.pdf", PDF_HEAD),
        ("a.json", b"[1, 2]"),
        ("a.csv", "naïve,café\n".encode()),
        ("a.txt", "utf-16 text".encode("utf-16")),
        ("a.txt", b""),
        ("a.docx", b""),  # empty: the parse stage says so
        ("Makefile", b"all:\n\techo hi\n"),
        ("census.docx", _docx()),
        ("revenue.xlsx", _xlsx()),
        ("roadmap.pptx", _pptx()),
        ("letter.odt", _odf("application/vnd.oasis.opendocument.text")),
        ("book.epub", _odf("application/epub+zip")),
        ("old.doc", _ole("WordDocument")),
        ("old.doc", b"{\\rtf1 Word saves RTF as .doc}"),
        ("old.xls", _ole("Workbook")),
        ("old.ppt", _ole("PowerPoint Document")),
        ("mail.msg", _ole("__properties_version1.0")),
        ("mail.eml", _eml()),
        ("memo.rtf", b"{\\rtf1 hi}"),
        ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
        ("deck.key", _zip(("Index/Document.iwa", b"x"))),  # no signature known: trusted
    ],
)
def test_supported_files_have_no_reason(key: str, data: bytes) -> None:
    assert unsupported_reason(key, data, ACCEPTED) is None


def test_a_zip_judged_by_its_head_only_trusts_the_name() -> None:
    data = _zip(("a.txt", b"x" * 10))
    assert unsupported_reason("census.docx", data[:8], ACCEPTED, size=len(data)) is None


def test_text_extensions_cover_the_local_text_types() -> None:
    from docpipe_dagster.core.extract import TEXT_LIKE_EXTENSIONS

    assert TEXT_LIKE_EXTENSIONS <= TEXT_EXTENSIONS


def test_damaged_containers_never_raise() -> None:
    """Intake reads hostile bytes: corrupted or cut-off ZIP and OLE2 files get a verdict
    (or none), never an exception."""
    import random

    rng = random.Random(7)
    for base in (_docx(), _xlsx(), _ole("WordDocument", "Workbook"), _odf("application/epub+zip")):
        for _ in range(150):
            data = bytearray(base)
            for _ in range(rng.randint(1, 30)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            damaged = bytes(data[: rng.randint(0, len(data))])
            sniff(damaged)
            detect_media_type("x.docx", damaged)
            unsupported_reason("x.docx", damaged, ACCEPTED)
