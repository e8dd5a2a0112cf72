"""Which parser API to speak, and which parser each file goes to (see docs/PARSER.md).

DOCPIPE_PARSER_API picks the LlamaParse API: "v2" (default; the current API, what the
official `llama-cloud` 2.x SDK speaks) or "v1" (legacy). DOCPIPE_PARSE_LOCALLY routes file
types between LlamaParse and the in-process backend (`core.extract`):

- `text` (default): text-like types (txt, md, json, csv, html, xml, ...) in-process, never
  paid for; layout types (pdf, office, OpenDocument, e-books, images, ...) to LlamaParse;
- `all`: every type the local backend reads in-process; no parser service at all;
- `none`: every type LlamaParse reads goes to it;
- a list of extensions ("md,csv"): those in-process, the rest to LlamaParse.

Whatever the setting, a type LlamaParse does not read but the local backend does (.txt,
.json, .eml, ...) is parsed in-process, and so is a text file without an extension: sending
either would only buy an error. Intake accepts exactly the types the routing can parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docpipe_dagster.clients.llamaparse import LlamaParseClient
from docpipe_dagster.clients.llamaparse_v2 import LlamaParseV2Client
from docpipe_dagster.config import default_of, parse_locally_value, settings
from docpipe_dagster.core.extract import LOCAL_EXTENSIONS, TEXT_LIKE_EXTENSIONS
from docpipe_dagster.core.llamaparse_extensions import LLAMAPARSE_EXTENSIONS
from docpipe_dagster.core.media import extension, unsupported_reason

DEFAULT_PARSE_LOCALLY = default_of("parse_locally")
# Read by the local backend only: never worth a call to the service.
ONLY_LOCAL_EXTENSIONS: frozenset[str] = LOCAL_EXTENSIONS - LLAMAPARSE_EXTENSIONS


def parser_api() -> str:
    """The API to speak: DOCPIPE_PARSER_API ("v2" or "v1", validated by the settings model)."""
    return settings().parser_api


@dataclass(frozen=True)
class Routing:
    """Where each file type is parsed: `local` extensions in-process, the rest of
    `accepted` by the parser service; anything else is refused at intake."""

    mode: str  # the normalised DOCPIPE_PARSE_LOCALLY
    local: frozenset[str]
    accepted: frozenset[str]

    @property
    def uses_service(self) -> bool:
        """False when no file can ever reach the parser service (`all`)."""
        return bool(self.accepted - self.local)

    def is_local(self, storage_key: str) -> bool:
        ext = extension(storage_key)
        return not ext or ext in self.local  # no extension: text (intake refused the rest)

    def refusal(self, storage_key: str, data: bytes, size: int | None = None) -> str | None:
        """None when the file may be parsed, else why not (a reason a person can act on)."""
        ext = extension(storage_key)
        if ext and ext not in self.accepted and ext in LLAMAPARSE_EXTENSIONS:
            return (
                f"{ext} files are read by LlamaParse but not in-process, and "
                f"DOCPIPE_PARSE_LOCALLY={self.mode} parses everything in-process; "
                "set DOCPIPE_PARSE_LOCALLY=text to send them to LlamaParse"
            )
        return unsupported_reason(storage_key, data, self.accepted, size=size)


def routing(value: str | None = None) -> Routing:
    """The routing for a DOCPIPE_PARSE_LOCALLY value (`value`, else the setting)."""
    mode = parse_locally_value(value) if value is not None else settings().parse_locally
    everything = LOCAL_EXTENSIONS | LLAMAPARSE_EXTENSIONS
    if mode == "all":
        return Routing(mode, LOCAL_EXTENSIONS, LOCAL_EXTENSIONS)
    if mode == "text":
        local = TEXT_LIKE_EXTENSIONS
    elif mode == "none":
        local = frozenset()
    else:
        local = frozenset("." + e for e in mode.split(","))
    return Routing(mode, local | ONLY_LOCAL_EXTENSIONS, everything)


def local_extensions(value: str | None = None) -> frozenset[str]:
    """Extensions (".txt") parsed in-process under `value` (else DOCPIPE_PARSE_LOCALLY)."""
    return routing(value).local


def parser_label(profile: str | None) -> str:
    """Who parsed a document, from its parse-cache profile: "local",
    "llamaparse-v2 (cost_effective)", "llamaparse-v1"; "" when unknown."""
    if not profile:
        return ""
    parts = profile.split(":")
    if parts[0].startswith("local"):
        return "local"
    if parts[0] == "llamaparse-v2" and len(parts) > 1:
        return f"llamaparse-v2 ({parts[1]})"
    return parts[0]


def make_parser_client(api: str, base_url: str, api_key: str, **options: Any) -> LlamaParseClient:
    """A client for `api`; v2-only options (tier, version, configuration) are dropped for v1."""
    if api == "v2":
        return LlamaParseV2Client(base_url, api_key, **options)
    for name in ("tier", "version", "configuration"):
        options.pop(name, None)
    return LlamaParseClient(base_url, api_key, **options)
