"""E-mail: .eml (stdlib email) and Outlook .msg (olefile; extract-msg is GPL, so not used).

One page: the subject as heading, then From/To/Cc/Date, the body (plain text preferred, else
HTML converted to markdown) and the attachments listed by name. Attachments are not parsed as
documents of their own.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import struct

from docpipe_dagster.core.extract.base import CORRUPTED_FILE, ExtractedPage, ExtractionError
from docpipe_dagster.core.extract.containers import OLE2_MAGIC
from docpipe_dagster.core.extract.html import html_to_page
from docpipe_dagster.core.extract.text import decode_text, normalise_newlines

_HEADERS = ("From", "To", "Cc", "Date")


def _page(subject: str, headers: dict[str, str], body_md: str, body_text: str,
          attachments: list[str]) -> ExtractedPage:  # fmt: skip
    title = " ".join(subject.split()) or "(no subject)"
    head = [f"{name}: {value}" for name, value in headers.items() if value]
    tail = [f"Attachments: {', '.join(attachments)}"] if attachments else []
    md = "\n\n".join([f"# {title}", "\n".join(head), body_md.strip(), *tail]).strip()
    text = "\n\n".join([title, "\n".join(head), body_text.strip(), *tail]).strip()
    return ExtractedPage(text=text, md=md)


def extract_eml(data: bytes) -> list[ExtractedPage]:
    """An RFC 5322 message (.eml)."""
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        headers = {name: str(msg.get(name, "") or "") for name in _HEADERS}
        subject = str(msg.get("Subject", "") or "")
    except (ValueError, TypeError, IndexError) as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The e-mail's headers are malformed ({exc})."
        ) from exc
    if not any(headers.values()) and not subject:
        raise ExtractionError(CORRUPTED_FILE, "The file is not an e-mail: it has no headers.")
    body_md = body_text = ""
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        try:
            content = body.get_content()
        except (LookupError, ValueError, TypeError):
            payload = body.get_payload(decode=True) or b""
            content = decode_text(payload) if payload else ""
        if isinstance(content, bytes):
            content = decode_text(content)
        if body.get_content_subtype() == "html":
            page = html_to_page(content)
            body_md, body_text = page.md, page.text
        else:
            body_md = body_text = normalise_newlines(content)
    attachments = [
        part.get_filename() or part.get_content_type() for part in msg.iter_attachments()
    ]
    return [_page(subject, headers, body_md, body_text, attachments)]


# --- Outlook .msg ----------------------------------------------------------------------------

# MAPI property ids (MS-OXPROPS) and their string streams (type 001F = UTF-16, 001E = 8-bit).
_SUBJECT, _SENDER_NAME, _SENDER_EMAIL = "0037", "0C1A", "0C1F"
_DISPLAY_TO, _DISPLAY_CC, _BODY, _HTML = "0E04", "0E03", "1000", "1013"
_ATTACH_LONG_NAME, _ATTACH_NAME, _ATTACH_DISPLAY = "3707", "3704", "3001"
_SUBMIT_TIME = 0x0039  # PR_CLIENT_SUBMIT_TIME, a FILETIME in the property stream


def _prop(ole, storage: str, prop: str) -> str:  # type: ignore[no-untyped-def]
    prefix = f"{storage}/" if storage else ""
    for ptype, encoding in (("001F", "utf-16-le"), ("001E", "cp1252"), ("0102", "utf-8")):
        path = f"{prefix}__substg1.0_{prop}{ptype}"
        if ole.exists(path):
            raw = ole.openstream(path).read()
            return raw.decode(encoding, errors="replace").rstrip("\x00")
    return ""


def _submit_time(ole) -> str:  # type: ignore[no-untyped-def]
    if not ole.exists("__properties_version1.0"):
        return ""
    raw = ole.openstream("__properties_version1.0").read()
    # Top-level message header is 32 bytes, then 16-byte entries: tag, flags, 8-byte value.
    for offset in range(32, len(raw) - 15, 16):
        tag, _flags, value = struct.unpack_from("<IIQ", raw, offset)
        if tag >> 16 == _SUBMIT_TIME and tag & 0xFFFF == 0x0040 and value:
            try:
                when = dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
                    microseconds=value // 10
                )
            except OverflowError:
                return ""
            return when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    return ""


def extract_msg(data: bytes) -> list[ExtractedPage]:
    """An Outlook message (.msg, an OLE2 file of MAPI properties)."""
    import olefile

    if not data.startswith(OLE2_MAGIC):
        raise ExtractionError(CORRUPTED_FILE, "The file is not an Outlook message (not OLE2).")
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise ExtractionError(
            CORRUPTED_FILE, f"The Outlook message is truncated or corrupted ({exc})."
        ) from exc
    try:
        if not any(e[0].startswith("__substg1.0_") for e in ole.listdir() if len(e) == 1):
            raise ExtractionError(
                CORRUPTED_FILE, "The file is an OLE2 file but not an Outlook message."
            )
        sender = _prop(ole, "", _SENDER_NAME)
        address = _prop(ole, "", _SENDER_EMAIL)
        if address and address not in sender:
            sender = f"{sender} <{address}>" if sender else address
        headers = {
            "From": sender,
            "To": _prop(ole, "", _DISPLAY_TO),
            "Cc": _prop(ole, "", _DISPLAY_CC),
            "Date": _submit_time(ole),
        }
        body_md = body_text = normalise_newlines(_prop(ole, "", _BODY))
        if not body_text.strip():
            html = _prop(ole, "", _HTML)
            if html:
                page = html_to_page(html)
                body_md, body_text = page.md, page.text
        attachments = []
        for entry in ole.listdir(streams=False, storages=True):
            if len(entry) == 1 and entry[0].startswith("__attach_version1.0_"):
                name = (
                    _prop(ole, entry[0], _ATTACH_LONG_NAME)
                    or _prop(ole, entry[0], _ATTACH_NAME)
                    or _prop(ole, entry[0], _ATTACH_DISPLAY)
                )
                attachments.append(name or entry[0])
        return [_page(_prop(ole, "", _SUBJECT), headers, body_md, body_text, attachments)]
    except ExtractionError:
        raise
    except Exception as exc:  # olefile's errors on malformed input have no common base
        raise ExtractionError(
            CORRUPTED_FILE, f"The Outlook message is malformed ({type(exc).__name__}: {exc})."
        ) from exc
    finally:
        ole.close()
