"""What a file is, from its bytes: magic numbers and the containers office formats use.

``sniff(data, size)`` names the content of a file from its first bytes (or all of them):
PDF, the image formats, RTF, executables, archives, and inside the containers

- ZIP: Office Open XML (the main part's content type in ``[Content_Types].xml`` tells a
  Word document, an Excel workbook and a PowerPoint deck apart), OpenDocument and EPUB (the
  ``mimetype`` entry);
- OLE2 (the legacy Office container): Word, Excel, PowerPoint, Outlook .msg, or an encrypted
  (password-protected) OOXML file, from the names of its top-level streams.

It reads the head of the file: a ZIP's local file headers come first (the central directory
is at the end), and ``[Content_Types].xml`` / ``mimetype`` are normally the first entries.
Only when the head is inconclusive and ``data`` is the whole file is the central directory
read. Decompression is bounded (a zip bomb cannot inflate here).
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

__all__ = ["Kind", "sniff"]

# How much of a member (a content-types list, a mimetype) is ever inflated.
_MAX_MEMBER_BYTES = 256 * 1024
# Local headers scanned from the start before giving up on the head.
_MAX_LOCAL_ENTRIES = 64


@dataclass(frozen=True)
class Kind:
    """A content kind: ``key`` for code, ``name`` for people, ``extensions`` that fit it
    (the first is the one to suggest), ``media_type`` for the parser."""

    key: str
    name: str
    media_type: str
    extensions: tuple[str, ...] = ()

    @property
    def canonical(self) -> str:
        return self.extensions[0] if self.extensions else ""


def _k(key: str, name: str, media_type: str, *exts: str) -> Kind:
    return Kind(key, name, media_type, exts)


_OOXML = "application/vnd.openxmlformats-officedocument."
_ODF = "application/vnd.oasis.opendocument."
KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        _k("pdf", "a PDF document", "application/pdf", ".pdf"),
        _k(
            "docx",
            "a Word document (Office Open XML)",
            _OOXML + "wordprocessingml.document",
            *(".docx", ".docm", ".dotx", ".dotm"),
        ),
        _k(
            "xlsx",
            "an Excel workbook (Office Open XML)",
            _OOXML + "spreadsheetml.sheet",
            *(".xlsx", ".xlsm", ".xltx", ".xltm", ".xlsb"),
        ),
        _k(
            "pptx",
            "a PowerPoint presentation (Office Open XML)",
            _OOXML + "presentationml.presentation",
            *(".pptx", ".pptm", ".potx", ".potm", ".ppsx", ".ppsm"),
        ),
        _k("vsdx", "a Visio drawing", "application/vnd.ms-visio.drawing", ".vsdx", ".vsdm"),
        _k("ooxml", "an Office Open XML package of an unknown kind", "application/zip"),
        _k("odt", "an OpenDocument text", _ODF + "text", ".odt", ".ott"),
        _k("ods", "an OpenDocument spreadsheet", _ODF + "spreadsheet", ".ods", ".ots"),
        _k("odp", "an OpenDocument presentation", _ODF + "presentation", ".odp", ".otp"),
        _k("odg", "an OpenDocument drawing", _ODF + "graphics", ".odg", ".otg"),
        _k("odf", "an OpenDocument formula", _ODF + "formula", ".odf"),
        _k("epub", "an EPUB e-book", "application/epub+zip", ".epub"),
        _k("zip", "a ZIP archive", "application/zip", ".zip", ".cbz"),
        _k("doc", "a legacy Word document (.doc)", "application/msword", ".doc", ".dot"),
        _k(
            "xls",
            "a legacy Excel workbook (.xls)",
            "application/vnd.ms-excel",
            *(".xls", ".xlt", ".xlw"),
        ),
        _k(
            "ppt",
            "a legacy PowerPoint presentation (.ppt)",
            "application/vnd.ms-powerpoint",
            *(".ppt", ".pot", ".pps"),
        ),
        _k("msg", "an Outlook message (.msg)", "application/vnd.ms-outlook", ".msg"),
        _k(
            "encrypted",
            "a password-protected (encrypted) Office document",
            "application/x-ole-storage",
        ),
        _k("ole", "an OLE2 compound file", "application/x-ole-storage"),
        _k("rtf", "an RTF document", "application/rtf", ".rtf"),
        _k("png", "a PNG image", "image/png", ".png"),
        _k("jpeg", "a JPEG image", "image/jpeg", ".jpg", ".jpeg", ".jpe", ".jfif"),
        _k("gif", "a GIF image", "image/gif", ".gif"),
        _k("bmp", "a BMP image", "image/bmp", ".bmp", ".dib"),
        _k("tiff", "a TIFF image", "image/tiff", ".tif", ".tiff"),
        _k("webp", "a WebP image", "image/webp", ".webp"),
        _k("heic", "a HEIC/HEIF image", "image/heic", ".heic", ".heif"),
        _k("djvu", "a DjVu document", "image/vnd.djvu", ".djvu"),
        _k("mp4", "an MP4 video", "video/mp4", ".mp4", ".m4v", ".mov"),
        _k("m4a", "an M4A audio file", "audio/mp4", ".m4a"),
        _k("mp3", "an MP3 audio file", "audio/mpeg", ".mp3", ".mpga"),
        _k("wav", "a WAV audio file", "audio/wav", ".wav"),
        _k("webm", "a WebM/Matroska video", "video/webm", ".webm", ".mkv"),
        _k("mpeg", "an MPEG video", "video/mpeg", ".mpeg", ".mpg"),
        _k("exe", "a Windows program (PE executable)", "application/x-msdownload"),
        _k("elf", "a Linux program (ELF executable)", "application/x-executable"),
        _k("macho", "a macOS program (Mach-O executable)", "application/x-mach-binary"),
        _k("gzip", "a gzip archive", "application/gzip", ".gz", ".tgz", ".zabw"),
        _k("rar", "a RAR archive", "application/vnd.rar", ".rar", ".cbr"),
        _k("7z", "a 7-Zip archive", "application/x-7z-compressed", ".7z", ".cb7"),
        _k("xz", "an xz archive", "application/x-xz", ".xz"),
        _k("bzip2", "a bzip2 archive", "application/x-bzip2", ".bz2"),
    )
}
EXECUTABLES = frozenset({"exe", "elf", "macho"})

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"AT&TFORM", "djvu"),
    (b"{\\rtf", "rtf"),
    (b"\x7fELF", "elf"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\x1f\x8b", "gzip"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"ID3", "mp3"),
    (b"\x1aE\xdf\xa3", "webm"),
    (b"\x00\x00\x01\xba", "mpeg"),
    (b"\x00\x00\x01\xb3", "mpeg"),
)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def sniff(data: bytes, size: int | None = None, *, lenient_pdf: bool = True) -> Kind | None:
    """The kind of the content whose first bytes are ``data`` (the whole file when ``size``
    is None or ``len(data)``), or None when no signature is strong enough to trust.

    ``lenient_pdf``: accept a ``%PDF-`` header within the first 1024 bytes, as PDF readers
    do (off for names that promise text, which may merely mention ``%PDF-``).
    """
    complete = size is None or size <= len(data)
    key = _sniff_key(data, complete, lenient_pdf)
    return KINDS[key] if key else None


def _sniff_key(data: bytes, complete: bool, lenient_pdf: bool) -> str | None:
    if data.startswith(b"%PDF-") or (lenient_pdf and b"%PDF-" in data[:1024]):
        return "pdf"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(data, complete)
    if data.startswith(_OLE_MAGIC):
        return _ole_kind(data)
    for magic, key in _PREFIXES:
        if data.startswith(magic):
            return key
    if data[:2] == b"BM" and len(data) >= 14 and data[6:10] == b"\x00\x00\x00\x00":
        return "bmp"  # "BM" alone is too weak: also the reserved (zero) header fields
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return "webp" if data[8:12] == b"WEBP" else "wav"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIC_BRANDS:
            return "heic"
        return "m4a" if brand.startswith(b"M4A") else "mp4"
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if data[:2] == b"MZ" and len(data) >= 64:
        # "MZ" alone is too weak; a PE program also has "PE\0\0" where its header points.
        (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
        if data[pe_offset : pe_offset + 4] == b"PE\x00\x00":
            return "exe"
    return None


# --- ZIP ---------------------------------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature .. extra field length: 30 bytes
_MAIN_PART = re.compile(rb'ContentType="([^"]+?)\.main(?:\+xml)?"')
_OOXML_FAMILIES = (
    (b"wordprocessingml", "docx"),
    (b"ms-word.", "docx"),
    (b"spreadsheetml", "xlsx"),
    (b"ms-excel.", "xlsx"),
    (b"presentationml", "pptx"),
    (b"ms-powerpoint.", "pptx"),
    (b"ms-visio.", "vsdx"),
)
_ODF_KINDS = {
    "text": "odt",
    "text-template": "odt",
    "spreadsheet": "ods",
    "spreadsheet-template": "ods",
    "presentation": "odp",
    "presentation-template": "odp",
    "graphics": "odg",
    "graphics-template": "odg",
    "formula": "odf",
}


def _zip_kind(data: bytes, complete: bool) -> str | None:
    members = _local_members(data)
    kind = _classify_members(members)
    if kind is not None:
        return kind
    if not complete:
        return None  # only the head: trust the name
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            wanted = {n: b"" for n in ("[Content_Types].xml", "mimetype") if n in names}
            for name in wanted:
                with zf.open(name) as member:
                    wanted[name] = member.read(_MAX_MEMBER_BYTES)
    except Exception:  # whatever a damaged archive makes the zip reader raise (zlib, struct, ...)
        return "zip"  # the parse stage says what is wrong with it
    return _classify_members(wanted) or ("epub" if "META-INF/container.xml" in names else "zip")


def _local_members(data: bytes) -> dict[str, bytes]:
    """``[Content_Types].xml`` and ``mimetype`` from the local headers at the start of
    ``data`` (inflated, at most _MAX_MEMBER_BYTES), as far as the head reaches."""
    found: dict[str, bytes] = {}
    offset = 0
    for _ in range(_MAX_LOCAL_ENTRIES):
        if data[offset : offset + 4] != b"PK\x03\x04" or offset + 30 > len(data):
            break
        _sig, _ver, flags, method, _t, _d, _crc, csize, _usize, nlen, xlen = (
            _LOCAL_HEADER.unpack_from(data, offset)
        )
        start = offset + 30 + nlen + xlen
        name = data[offset + 30 : offset + 30 + nlen].decode("utf-8", "replace")
        if name in ("[Content_Types].xml", "mimetype"):
            view = memoryview(data)  # no copy of a large file's tail
            body = view[start : start + csize] if csize else view[start:]
            found[name] = _inflate(body, method)
        if flags & 0x08 and csize == 0:
            break  # sizes come after the data (a streamed zip): cannot skip to the next entry
        offset = start + csize
        if len(found) == 2:
            break
    return found


def _inflate(body: memoryview, method: int) -> bytes:
    if method == 0:
        return bytes(body[:_MAX_MEMBER_BYTES])
    if method != 8:
        return b""
    try:
        return zlib.decompressobj(-15).decompress(body, _MAX_MEMBER_BYTES)
    except zlib.error:
        return b""


def _classify_members(members: dict[str, bytes]) -> str | None:
    mimetype = members.get("mimetype", b"").strip().decode("ascii", "replace")
    if mimetype == "application/epub+zip":
        return "epub"
    if mimetype.startswith("application/vnd.oasis.opendocument."):
        return _ODF_KINDS.get(mimetype.rsplit(".", 1)[-1], "zip")
    if mimetype:
        return "zip"  # another mimetype-first format (OpenOffice 1.x, iWork, ...)
    types = members.get("[Content_Types].xml")
    if types is None:
        return None
    for main in _MAIN_PART.findall(types):
        for marker, kind in _OOXML_FAMILIES:
            if marker in main:
                return kind
    return "ooxml"


# --- OLE2 (compound file) ----------------------------------------------------------------------

_OLE_STREAMS = (
    ("EncryptedPackage", "encrypted"),
    ("WordDocument", "doc"),
    ("Workbook", "xls"),
    ("Book", "xls"),
    ("PowerPoint Document", "ppt"),
    ("__properties_version1.0", "msg"),
    ("__nameid_version1.0", "msg"),
)
_ENDOFCHAIN = 0xFFFFFFFE


def _ole_kind(data: bytes) -> str:
    """Which legacy Office file this is, from the names of the root storage's streams."""
    try:
        names = _ole_root_names(data)
    except Exception:  # a damaged directory: the name is trusted, the parser judges it
        names = set()
    for stream, kind in _OLE_STREAMS:
        if stream in names:
            return kind
    return "ole"


def _ole_root_names(data: bytes) -> set[str]:
    sector_size = 1 << struct.unpack_from("<H", data, 0x1E)[0]
    if sector_size not in (512, 4096):
        raise ValueError("bad sector size")
    first_dir = struct.unpack_from("<I", data, 0x30)[0]
    fat_sectors = [s for s in struct.unpack_from("<109I", data, 0x4C) if s < _ENDOFCHAIN]

    def sector(n: int) -> bytes:
        start = (n + 1) * sector_size
        return data[start : start + sector_size]

    fat: list[int] = []
    for s in fat_sectors:  # the header's FAT sectors cover files of ~7 MB (512 B sectors)
        chunk = sector(s)
        fat.extend(struct.unpack(f"<{len(chunk) // 4}I", chunk))
    entries = b""
    n = first_dir
    for _ in range(64):  # a directory chain longer than this (or a loop) is not read further
        chunk = sector(n)
        if not chunk:
            break
        entries += chunk
        n = fat[n] if n < len(fat) else _ENDOFCHAIN
        if n >= _ENDOFCHAIN:
            break
    if len(entries) < 128:
        raise ValueError("no directory")

    def entry(i: int) -> tuple[str, int, int, int]:
        raw = entries[i * 128 : (i + 1) * 128]
        length = struct.unpack_from("<H", raw, 64)[0]
        name = raw[: max(0, length - 2)].decode("utf-16-le", "replace")
        left, right, child = struct.unpack_from("<III", raw, 68)
        return name, left, right, child

    count = len(entries) // 128
    names: set[str] = set()
    stack = [entry(0)[3]]  # the root storage's child: a tree of its members
    visited: set[int] = set()
    while stack and len(visited) < 1024:
        i = stack.pop()
        if i >= count or i in visited:
            continue
        visited.add(i)
        name, left, right, _child = entry(i)
        names.add(name)
        stack += [left, right]
    return names
