"""EPUB e-books: the chapters in spine (reading) order, each as a page of markdown.

Read with the zip checks of containers.open_zip, the package files with defusedxml and each
chapter's XHTML with the HTML converter. (EbookLib is AGPL, so it is not used.)
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import defusedxml
import defusedxml.ElementTree as DET

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    PROTECTED_FILE,
    UNSAFE_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import open_zip, read_member
from docpipe_dagster.core.extract.html import html_to_page
from docpipe_dagster.core.extract.text import decode_text

KIND = "EPUB e-book"
_CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF_NS = "{http://www.idpf.org/2007/opf}"
_ENC_NS = "{http://www.w3.org/2001/04/xmlenc#}"
_DOC_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")
# Font obfuscation (IDPF and Adobe) is listed in encryption.xml but is not DRM.
_FONT_OBFUSCATION = (
    "http://www.idpf.org/2008/embedding",
    "http://ns.adobe.com/pdf/enc#RC",
)


def _xml(raw: bytes, what: str) -> ET.Element:
    try:
        return DET.fromstring(raw)
    except defusedxml.DefusedXmlException as exc:
        raise ExtractionError(UNSAFE_FILE, f"The {KIND}'s {what} declares XML entities.") from exc
    except ET.ParseError as exc:
        raise ExtractionError(CORRUPTED_FILE, f"The {KIND}'s {what} is malformed ({exc}).") from exc


def extract_epub(data: bytes) -> list[ExtractedPage]:
    with open_zip(data, KIND) as archive:
        names = set(archive.namelist())
        container = _xml(read_member(archive, "META-INF/container.xml", KIND), "container.xml")
        rootfile = container.find(f".//{_CONTAINER_NS}rootfile")
        opf_path = rootfile.get("full-path", "") if rootfile is not None else ""
        if not opf_path:
            raise ExtractionError(CORRUPTED_FILE, f"The {KIND} names no package document.")
        encrypted = _encrypted(archive, names)
        opf = _xml(read_member(archive, opf_path, KIND), "package document")
        base = posixpath.dirname(opf_path)
        manifest = {
            item.get("id"): item
            for item in opf.iter(f"{_OPF_NS}item")
            if item.get("id") and item.get("href")
        }
        pages: list[ExtractedPage] = []
        for ref in opf.iter(f"{_OPF_NS}itemref"):
            item = manifest.get(ref.get("idref"))
            if item is None or item.get("media-type") not in _DOC_TYPES:
                continue
            path = posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))
            if path in encrypted:
                raise ExtractionError(
                    PROTECTED_FILE, f"The {KIND} is DRM-protected (its chapters are encrypted)."
                )
            if path not in names:
                continue  # a broken reference: keep the chapters that exist
            page = html_to_page(decode_text(read_member(archive, path, KIND)))
            if page.md.strip():
                pages.append(page)
    if not pages:
        raise ExtractionError(CORRUPTED_FILE, f"The {KIND} has no readable chapters.")
    return pages


def _encrypted(archive, names: set[str]) -> set[str]:  # type: ignore[no-untyped-def]
    """Paths encrypted by DRM (font obfuscation does not count)."""
    if "META-INF/encryption.xml" not in names:
        return set()
    root = _xml(read_member(archive, "META-INF/encryption.xml", KIND), "encryption.xml")
    out: set[str] = set()
    for data in root.iter(f"{_ENC_NS}EncryptedData"):
        method = data.find(f"{_ENC_NS}EncryptionMethod")
        if method is not None and method.get("Algorithm") in _FONT_OBFUSCATION:
            continue
        ref = data.find(f".//{_ENC_NS}CipherReference")
        if ref is not None and ref.get("URI"):
            out.add(posixpath.normpath(unquote(ref.get("URI", ""))))
    return out
