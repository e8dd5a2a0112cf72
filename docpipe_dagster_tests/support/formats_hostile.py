"""Hostile office inputs for the local parser's tests: zip and entity bombs, encrypted OOXML,
truncated containers."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from docpipe_dagster_tests.support.formats_corpus import document, docx
from docpipe_dagster_tests.support.ole_writer import write_ole


def zip_bomb(inflated_mb: int = 2048) -> bytes:
    """A .docx-shaped zip (~2 MB) with a part that inflates to `inflated_mb` MB of zeros."""
    return bomb_package(docx(document()), "word/media/padding.bin", inflated_mb)


def bomb_package(package: bytes, part: str, inflated_mb: int) -> bytes:
    """`package` (an OOXML zip) plus `part`, declared honestly in the central directory as a
    real bomb is, inflating to `inflated_mb` MB of zeros. The deflate stream is one compressed
    megabyte repeated (each block ends with a full flush), so it is built fast."""
    base = zipfile.ZipFile(io.BytesIO(package))
    members = []
    # [Content_Types].xml first, as Office writes it (intake sniffs the head of the file).
    infos = sorted(base.infolist(), key=lambda i: i.filename != "[Content_Types].xml")
    for info in infos:
        data = base.read(info)
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        members.append(
            (info.filename, comp.compress(data) + comp.flush(), zlib.crc32(data), len(data))
        )
    mb = b"\0" * (1024 * 1024)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(mb) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated_mb):
        crc = zlib.crc32(mb, crc)
    members.append((part, block * inflated_mb + comp.flush(), crc, inflated_mb * len(mb)))
    return _raw_zip(members)


def _raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of pre-deflated members (name, raw deflate data, crc32, inflated size) < 4 GiB."""
    out = io.BytesIO()
    central = b""
    for name, comp, crc, size in members:
        offset = out.tell()
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(comp), size & 0xFFFFFFFF)
        raw = name.encode()
        out.write(b"PK\x03\x04" + fields + struct.pack("<HH", len(raw), 0) + raw + comp)
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHII", len(raw), 0, 0, 0, 0, 0, offset)
            + raw
        )
    start = out.tell()
    out.write(central)
    out.write(
        b"PK\x05\x06"
        + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), start, 0)
    )
    return out.getvalue()


def entity_bomb() -> bytes:
    """A .docx whose document part declares nested entities (billion laughs)."""
    base = zipfile.ZipFile(io.BytesIO(docx(document())))
    lol = (
        '<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "lollollollollol">'
        + "".join(
            f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
            for p, c in zip("abcdefgh", "bcdefghi", strict=False)
        )
        + "]>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in base.infolist():
            body = base.read(info)
            if info.filename == "word/document.xml":
                body = lol.encode() + body.split(b"?>", 1)[1].replace(b"<w:t>", b"<w:t>&i;", 1)
            z.writestr(info, body)
    return out.getvalue()


def encrypted_ooxml() -> bytes:
    """What Office writes for a password-protected .docx/.xlsx: an OLE2 file holding
    EncryptionInfo and EncryptedPackage streams (contents here are placeholders)."""
    return write_ole(
        {
            "EncryptionInfo": struct.pack("<HHI", 4, 4, 0x40) + b"<encryption/>",
            "EncryptedPackage": struct.pack("<Q", 4096) + bytes(range(256)) * 17,
        }
    )


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]
