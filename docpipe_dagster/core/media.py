"""Which storage keys are documents, and what kind.

The intake sensor calls ``is_ignored_key`` to skip editor/OS/download debris silently, and
the intake check calls ``unsupported_reason`` to fail a real but unusable file with a reason
a person can act on, instead of sending it to the parser and paying for an error: a type
nobody parses, or content that contradicts its name (a renamed program, a ZIP called
``.docx`` that is not a Word document). What the content is comes from ``core.sniff``.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Collection

from docpipe_dagster.core.sniff import EXECUTABLES, KINDS, Kind, sniff

__all__ = [
    "TEXT_EXTENSIONS",
    "detect_media_type",
    "extension",
    "is_ignored_key",
    "looks_like_email",
    "unsupported_reason",
]

# Names that promise text: their content must be text (no binary signature, decodable).
TEXT_EXTENSIONS: frozenset[str] = frozenset(
    {
        *(".txt", ".text", ".log", ".md", ".markdown", ".rst", ".adoc", ".org", ".tex"),
        *(".json", ".jsonl", ".ndjson", ".yaml", ".yml", ".toml", ".ini", ".cfg"),
        *(".csv", ".tsv", ".html", ".htm", ".xhtml", ".xhtm", ".xml", ".svg", ".eml"),
        *(".fodt", ".fods", ".fodp", ".fodg", ".slk", ".sylk", ".dif", ".prn"),
    }
)
_TEXT_MEDIA_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".xml": "application/xml",
    ".eml": "message/rfc822",
}

# Extensions whose content is checked against what their name promises: ext -> kind keys.
_EXPECTED: dict[str, frozenset[str]] = {}
for _kind in KINDS.values():
    for _ext in _kind.extensions:
        _EXPECTED[_ext] = _EXPECTED.get(_ext, frozenset()) | {_kind.key}
# Word saves RTF under .doc; OLE2 files whose streams could not be told apart are given the
# benefit of the doubt when the name says legacy Office.
_ALSO_FITS = {".doc": frozenset({"rtf", "ole"}), ".dot": frozenset({"rtf", "ole"})}
for _ext in (".xls", ".xlt", ".xlw", ".ppt", ".pot", ".pps", ".msg"):
    _ALSO_FITS[_ext] = frozenset({"ole"})
_CONTAINER_KEYS = frozenset({"zip", "ooxml", "ole"})

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


def extension(key: str) -> str:
    """The lower-case extension of the last segment of `key`, with the dot ("" if none)."""
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


def _sniff(ext: str, data: bytes, size: int | None) -> Kind | None:
    # PDF readers accept junk before the header within the first 1024 bytes, but a text file
    # that merely mentions "%PDF-" must stay text: lenient only when the name is not text.
    return sniff(data, size, lenient_pdf=ext not in TEXT_EXTENSIONS)


def detect_media_type(key: str, data: bytes, size: int | None = None) -> str:
    """Media type of a stored object from its key and its bytes (the whole file, or its first
    bytes with `size` the file's size).

    The content wins over the name when its signature is strong (a PNG renamed ``.txt`` is a
    PNG; a ZIP holding a Word document is a Word document); then the extension decides; a
    name without a known extension is sniffed: HTML, text or ``application/octet-stream``.
    """
    ext = extension(key)
    kind = _sniff(ext, data, size)
    by_name = _media_type_of_extension(ext)
    if kind is not None and not (kind.key in _CONTAINER_KEYS and ext in _EXPECTED and by_name):
        return kind.media_type
    if by_name:
        return by_name
    if _looks_like_text(data[:_HEAD_BYTES]):
        start = data.lstrip()[:64].lower()
        if start.startswith((b"<!doctype html", b"<html")):
            return "text/html"
        return "message/rfc822" if looks_like_email(data[:_HEAD_BYTES]) else "text/plain"
    return "application/octet-stream"


_EMAIL_HEADERS = frozenset(
    {b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"received"}
    | {b"return-path", b"delivered-to", b"reply-to", b"cc", b"content-type"}
)


def looks_like_email(head: bytes) -> bool:
    """True when `head` opens with RFC 822 header lines, at least two of them the ones every
    message has (From, To, Subject, Date, Message-ID, Received, ...)."""
    known = 0
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[:40]:
        if not line.strip():
            break  # the blank line ending the headers
        if line[:1] in (b" ", b"\t"):
            continue  # a folded header
        name, colon, _ = line.partition(b":")
        if not colon or not name or b" " in name.strip():
            return False
        known += name.strip().lower() in _EMAIL_HEADERS
    return known >= 2


def _media_type_of_extension(ext: str) -> str | None:
    if not ext:
        return None
    if ext in _TEXT_MEDIA_TYPES:
        return _TEXT_MEDIA_TYPES[ext]
    for key in sorted(_EXPECTED.get(ext, ())):
        return KINDS[key].media_type
    guessed, _ = mimetypes.guess_type("x" + ext, strict=False)
    if guessed:
        return guessed
    return "text/plain" if ext in TEXT_EXTENSIONS else None


_HEAD_BYTES = 8192


def unsupported_reason(
    key: str,
    data: bytes,
    accepted: Collection[str] | None = None,
    *,
    size: int | None = None,
) -> str | None:
    """None if the file may go on to be parsed, else a reason a person can act on.

    `data` is the whole file, or its head with `size` the file's size (a ZIP is then judged
    by its local headers only, and given the benefit of the doubt when they are not enough).
    `accepted`: the extensions the configured parser reads (default: any this module knows).
    Checks, in order: ignored names, password protection, the extension (a name without one
    is accepted only when its content is text), programs under any name, then whether the
    content contradicts the extension.
    """
    if is_ignored_key(key):
        return "ignored: hidden, temporary or system file"
    name = _segments(key)[-1]
    ext = extension(key)
    kind = _sniff(ext, data, size)
    if kind is not None and kind.key == "encrypted":
        return (
            f"{name} is {kind.name}: docpipe cannot read it; save a copy without the "
            "password and drop that instead"
        )
    if not ext:
        if kind is None and _looks_like_text(data[:_HEAD_BYTES]):
            return None  # parsed in-process as text
        what = kind.name if kind else "binary data"
        return f"{name} has no extension and holds {what}{_rename(name, kind, accepted)}"
    if accepted is not None and ext not in accepted:
        found = f"; the content is {kind.name}" if kind is not None else ""
        return (
            f"unsupported file type {ext} (the supported types are listed in "
            f"docs/PARSER.md){found}{_rename(name, kind, accepted)}"
        )
    if kind is not None and kind.key in EXECUTABLES:
        return f"{name} is {kind.name}, not a document: it is never parsed"
    return _contradiction(name, ext, kind, data, size, accepted)


def _rename(name: str, kind: Kind | None, accepted: Collection[str] | None) -> str:
    """ "; rename it to NAME.ext" when the content is a type the parser reads, else ""."""
    if kind is None or not kind.canonical or accepted is None or kind.canonical not in accepted:
        return ""
    stem = posixpath.splitext(name)[0] if "." in name.lstrip(".") else name
    return f"; rename it to {stem}{kind.canonical}"


def _contradiction(
    name: str,
    ext: str,
    kind: Kind | None,
    data: bytes,
    size: int | None,
    accepted: Collection[str] | None,
) -> str | None:
    if not data:
        return None  # empty: the parse stage says so (NO_DATA_FOUND_IN_FILE)
    if ext in TEXT_EXTENSIONS:
        if kind is not None:
            rename = _rename(name, kind, accepted)
            what = f"{kind.name} ({kind.media_type})"
            return f"{name} is named {ext} but holds {what}, not text{rename}"
        if not _looks_like_text(data[:_HEAD_BYTES]):
            return f"{name} is named {ext} but holds binary data, not text"
        return None
    expected = _EXPECTED.get(ext)
    if expected is None:
        return None  # a type this module has no signature for: the parser judges it
    if kind is not None and (kind.key in expected or kind.key in _ALSO_FITS.get(ext, ())):
        return None
    if kind is None and data.startswith(b"PK") and size is not None and size > len(data):
        return None  # a ZIP judged by its head only: the name is trusted
    promised = KINDS[sorted(expected)[0]].name
    if kind is None:
        found = "text" if _looks_like_text(data[:_HEAD_BYTES]) else "no known file signature"
        return f"{name} is named {ext} but is not {promised} ({found})"
    detail = ""
    if kind.key in ("zip", "ooxml"):
        detail = " (no Office content types)" if kind.key == "ooxml" else ""
        if any(k in expected for k in ("docx", "xlsx", "pptx", "vsdx")) and kind.key == "zip":
            detail = " (no [Content_Types].xml: not Office Open XML)"
    rename = _rename(name, kind, accepted)
    return f"{name} is named {ext} but is {kind.name}, not {promised}{detail}{rename}"
