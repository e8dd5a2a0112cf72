"""Zip and OLE2 containers, opened defensively.

OOXML (docx/pptx/xlsx), OpenDocument and EPUB are zips of XML. Before any library inflates
a member, `open_zip` checks the central directory: member count, each member's declared size
and compression ratio, and the declared total. Python's zipfile never yields more than a
member's declared size (it stops there and checks the CRC), so these declared figures bound the
bytes actually inflated. XML members are refused when they declare entities (the
billion-laughs bomb); OOXML and OpenDocument never need a DTD.
"""

from __future__ import annotations

import io
import re
import zipfile

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    LIMIT_EXCEEDED,
    PROTECTED_FILE,
    UNSAFE_FILE,
    ExtractionError,
)

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"

# Bounds of what is inflated from one document (bytes). A 200,000-row sheet is ~60 MB of XML.
MAX_TOTAL_UNCOMPRESSED = 512 * 1024 * 1024
MAX_MEMBER_UNCOMPRESSED = 256 * 1024 * 1024
MAX_MEMBERS = 10_000
# Real office XML compresses 5-30x; a ratio far above that on a large member is a bomb.
MAX_RATIO = 200
RATIO_FLOOR = 1024 * 1024  # small members may compress well without meaning anything
_XML_SUFFIXES = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx", ".svg")
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_PROLOG_BYTES = 64 * 1024


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def open_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    """Open `data` as a zip after the bomb checks; `kind` ("Word document") words the errors."""
    if data.startswith(OLE2_MAGIC):
        raise_ole2_as_ooxml(data, kind)
    if not data.startswith(ZIP_MAGIC):
        raise ExtractionError(
            CORRUPTED_FILE, f"The file is not a valid {kind}: it is not a zip container."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The {kind} is truncated or corrupted and could not be read ({exc})."
        ) from exc
    if len(infos) > MAX_MEMBERS:
        raise ExtractionError(
            LIMIT_EXCEEDED, f"The {kind} has {len(infos)} parts, more than {MAX_MEMBERS}."
        )
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ExtractionError(PROTECTED_FILE, f"The {kind} is password-protected.")
        size = info.file_size
        total += size
        if size > MAX_MEMBER_UNCOMPRESSED or (
            size > RATIO_FLOOR and size > MAX_RATIO * max(info.compress_size, 1)
        ):
            raise ExtractionError(
                LIMIT_EXCEEDED,
                f"The {kind} looks like a zip bomb: part {info.filename!r} inflates from "
                f"{info.compress_size} bytes to {_mb(size)}; refused without inflating it.",
            )
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise ExtractionError(
            LIMIT_EXCEEDED,
            f"The {kind} inflates to {_mb(total)}, more than the {_mb(MAX_TOTAL_UNCOMPRESSED)} "
            "bound; refused without inflating it.",
        )
    _refuse_entities(archive, infos, kind)
    return archive


def _refuse_entities(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], kind: str) -> None:
    for info in infos:
        if not info.filename.lower().endswith(_XML_SUFFIXES) or info.is_dir():
            continue
        try:
            with archive.open(info) as fh:
                head = fh.read(_PROLOG_BYTES)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise ExtractionError(
                CORRUPTED_FILE,
                f"The {kind} is truncated or corrupted: part {info.filename!r} "
                f"cannot be read ({exc}).",
            ) from exc
        # Entity declarations live in the DTD, which must come before the root element.
        if _ENTITY.search(head):
            raise ExtractionError(
                UNSAFE_FILE,
                f"The {kind} declares XML entities in {info.filename!r} (a possible entity "
                "bomb); refused.",
            )


def read_member(archive: zipfile.ZipFile, name: str, kind: str) -> bytes:
    """One member's bytes (bounded by open_zip's checks); a missing or broken one is an error."""
    try:
        return archive.read(name)
    except KeyError as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The {kind} is incomplete: it has no {name!r} part."
        ) from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The {kind} is corrupted: part {name!r} cannot be read ({exc})."
        ) from exc


def raise_ole2_as_ooxml(data: bytes, kind: str) -> None:
    """An OLE2 file under an OOXML/ODF name: an encrypted document, or a legacy binary one."""
    streams = ole2_streams(data)
    if {"encryptioninfo", "encryptedpackage"} & streams:
        raise ExtractionError(
            PROTECTED_FILE,
            f"The {kind} is password-protected (encrypted); remove the password and upload again.",
        )
    raise ExtractionError(
        CORRUPTED_FILE,
        f"The file is not a valid {kind}: it is a legacy binary Office (OLE2) file; "
        "save it in the modern format or give it its real extension (.doc, .xls, .ppt, .msg).",
    )


def ole2_streams(data: bytes) -> set[str]:
    """Lower-cased names of the top-level streams and storages of an OLE2 file."""
    import olefile

    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The OLE2 container is truncated or corrupted ({exc})."
        ) from exc
    try:
        return {entry[0].lower() for entry in ole.listdir(streams=True, storages=True) if entry}
    finally:
        ole.close()
