"""What the v1 and v2 routes share: a parse job, its id, its JSON items, the webhook check.

Its own module so that app.py (v1) and v2.py both import it and neither imports the other's
internals (no import cycle).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from docpipe_dagster_mocks.llamaparse.extract import ExtractedPage, file_extension

JOB_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "docpipe-mock/llamaparse")
DEFAULT_PAGE_SEPARATOR = "\n---\n"
# Form fields that change delivery or caching, not the parse output: not part of the job id.
_NON_IDENTITY_FIELDS = frozenset(
    {"webhook_url", "from_python_package", "invalidate_cache", "do_not_cache"}
)


@dataclass
class Job:
    id: str
    file_name: str
    options: dict[str, str]
    started: float = 0.0  # monotonic time of the (latest) run
    ready_at: float = 0.0
    pages: list[ExtractedPage] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    stuck: bool = False
    running: bool = False  # extraction under way (it runs in a thread)
    cache_hit: bool = False
    runs: int = 0
    # v2 only (see v2.py): which API created it, its config, wall-clock times, page faults.
    api: str = "v1"
    tier: str | None = None
    cancelled: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    failed_pages: frozenset[int] = frozenset()
    configuration: dict[str, Any] = field(default_factory=dict)

    def status(self, now: float) -> str:
        if self.cancelled:
            return "CANCELED"
        if self.stuck or self.running or now < self.ready_at:
            return "PENDING"
        return "ERROR" if self.error_code else "SUCCESS"

    def separator(self) -> str:
        return self.options.get("page_separator") or DEFAULT_PAGE_SEPARATOR


def job_id_for(content: bytes, filename: str, options: dict[str, str]) -> str:
    """UUIDv5 over (sha256 of the bytes, extension, sorted identity options)."""
    identity = {k: v for k, v in options.items() if k not in _NON_IDENTITY_FIELDS}
    key = "|".join(
        [
            hashlib.sha256(content).hexdigest(),
            file_extension(filename),
            json.dumps(sorted(identity.items()), ensure_ascii=False),
        ]
    )
    return str(uuid.uuid5(JOB_NAMESPACE, key))


def page_items(md: str) -> list[dict[str, Any]]:
    """Heading and text items, as the real JSON result lists them per page."""
    items: list[dict[str, Any]] = []
    for para in re.split(r"\n\s*\n", md):
        para = para.strip("\n")
        if not para.strip():
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", para)
        if m and "\n" not in para:
            items.append(
                {"type": "heading", "lvl": len(m.group(1)), "value": m.group(2), "md": para}
            )
        else:
            items.append({"type": "text", "value": para, "md": para})
    return items


def webhook_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http(s) URL"
    host = parts.hostname
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return "webhook_url must point to this machine (localhost / loopback) in the mock"
