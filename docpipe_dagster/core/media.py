"""Which storage keys are documents, and what kind.

The intake sensor calls ``is_ignored_key`` to skip editor/OS/download debris silently, and
``unsupported_reason`` to fail a real but unusable file with a reason a person can act on,
instead of sending it to the parser and paying for an error.
"""

from __future__ import annotations

import posixpath

__all__ = [
    "MEDIA_TYPES",
    "SUPPORTED_EXTENSIONS",
    "detect_media_type",
    "is_ignored_key",
    "unsupported_reason",
]

# Lower-case, with the dot, as ``posixpath.splitext`` gives them.
MEDIA_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".csv": "text/csv",
    ".json": "application/json",
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(MEDIA_TYPES)

_TEXT_EXTENSIONS = SUPPORTED_EXTENSIONS - {".pdf"}

# Signatures strong enough to trust over a file name. (A bare "MZ" is too weak for that.)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"\x7fELF", "application/x-executable"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),  # .doc/.xls/.msg
)
_ZIP_CONTAINERS = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".epub": "application/epub+zip",
    ".odt": "application/vnd.oasis.opendocument.text",
}

# Name patterns of files that are never documents: partial downloads, editor swap/backup
# files, Office lock files, OS metadata. Hidden names (leading ".") are handled separately.
_IGNORED_SUFFIXES = (
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    ".swp",
    ".swo",
    "~",
)
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
_IGNORED_DIRS = frozenset({"__macosx"})


def _segments(key: str) -> list[str]:
    return [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]


def _extension(key: str) -> str:
    parts = _segments(key)
    if not parts:
        return ""
    return posixpath.splitext(parts[-1])[1].lower()


def is_ignored_key(key: str) -> bool:
    """True for keys that are not documents and must be skipped without a trace.

    Hidden files or any hidden folder on the path (a segment starting with ".", which also
    covers ``.~lock.*#``, ``.DS_Store``, ``.git/``), Office owner files (``~$*``), Emacs
    autosaves (``#*#``), and temporary/partial files (``*.part``, ``*.tmp``, ``*.crdownload``,
    ``*.swp``, ``*~`` ...), plus ``Thumbs.db``, ``desktop.ini`` and ``__MACOSX/``.
    """
    parts = _segments(key)
    if not parts:
        return True
    if any(p.startswith(".") or p.lower() in _IGNORED_DIRS for p in parts):
        return True
    name = parts[-1]
    lower = name.lower()
    if lower in _IGNORED_NAMES or name.startswith("~$"):
        return True
    if len(name) > 1 and name.startswith("#") and name.endswith("#"):
        return True
    return lower.endswith(_IGNORED_SUFFIXES)


def _sniff_magic(head: bytes, ext: str) -> str | None:
    # PDF readers accept junk before the header within the first 1024 bytes, but a text file
    # that merely mentions "%PDF-" must stay text: be lenient only when the name allows a PDF.
    if head.startswith(b"%PDF-") or (ext not in _TEXT_EXTENSIONS and b"%PDF-" in head[:1024]):
        return "application/pdf"
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    return None


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by the end of the head sample is still text.
        if exc.start < len(head) - 3:
            # Not UTF-8, but a legacy 8-bit encoding (Latin-1, Windows-1252) is text too when
            # it has no more control bytes than text has (binary data has ~10 %); the parser
            # applies the same rule when it decodes the file.
            return _few_controls(head)
    return True


# Control bytes that real text contains: backspace, tab, LF, FF, CR, ESC (ANSI colours).
_TEXT_CONTROL_BYTES = frozenset(b"\x08\t\n\x0c\r\x1b")


def _few_controls(head: bytes) -> bool:
    controls = sum(1 for b in head if (b < 32 and b not in _TEXT_CONTROL_BYTES) or b == 127)
    return controls <= len(head) * 0.05


def detect_media_type(key: str, head: bytes) -> str:
    """Media type of a stored object from its key and its first bytes (1-8 KB is plenty).

    Strong magic numbers win over the file name (a PNG renamed ``.txt`` is a PNG); then the
    extension decides; a name without a known extension is sniffed: HTML, UTF-8 text or
    ``application/octet-stream``.
    """
    ext = _extension(key)
    magic = _sniff_magic(head, ext)
    if magic == "application/zip" and ext in _ZIP_CONTAINERS:
        return _ZIP_CONTAINERS[ext]
    if magic is not None:
        return magic
    if ext in MEDIA_TYPES:
        return MEDIA_TYPES[ext]
    if _looks_like_text(head):
        start = head.lstrip()[:64].lower()
        if start.startswith((b"<!doctype html", b"<html")):
            return "text/html"
        return "text/plain"
    return "application/octet-stream"


def _supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


def unsupported_reason(key: str, head: bytes) -> str | None:
    """None if the pipeline can ingest the file, else a reason a person can act on.

    Checks, in order: ignored names, the extension (a name without one is accepted only when
    its content looks like text), and whether the content contradicts the extension (a
    ``.pdf`` without a PDF header, a text file holding binary data).
    """
    if is_ignored_key(key):
        return "ignored: hidden, temporary or system file"
    ext = _extension(key)
    magic = _sniff_magic(head, ext)
    if not ext:
        if magic is None and _looks_like_text(head):
            return None
        kind = magic or "binary data"
        return f"unsupported file without an extension ({kind}; supported: {_supported_list()})"
    if ext not in SUPPORTED_EXTENSIONS:
        return f"unsupported file type {ext} (supported: {_supported_list()})"
    if ext == ".pdf":
        if magic != "application/pdf":
            found = f" ({magic})" if magic else ""
            return f"file named {ext} is not a PDF: no %PDF- header{found}"
        return None
    if ext in _TEXT_EXTENSIONS:
        if magic is not None:
            return f"file named {ext} contains binary data ({magic}), not text"
        if not _looks_like_text(head):
            return f"file named {ext} contains binary data, not text"
    return None
