"""Which parser API to speak and which files never need one (see docs/PARSER.md).

DOCPIPE_PARSER_API picks the LlamaParse API: "v2" (default; the current API, what the
official `llama-cloud` 2.x SDK speaks) or "v1" (legacy). DOCPIPE_PARSE_LOCALLY lists the file
extensions parsed in-process instead (no parser call, no credits): by default the types
docpipe accepts that the service's supported-extension list lacks (.txt, .markdown, .json).
"""

from __future__ import annotations

from typing import Any

from docpipe_dagster.clients.llamaparse import LlamaParseClient
from docpipe_dagster.clients.llamaparse_v2 import LlamaParseV2Client
from docpipe_dagster.config import default_of, settings
from docpipe_dagster.core.extract import SUPPORTED_EXTENSIONS as LOCAL_EXTENSIONS

PARSER_APIS = ("v1", "v2")
DEFAULT_PARSER_API = default_of("parser_api")
DEFAULT_PARSE_LOCALLY = default_of("parse_locally")  # why these: the comment in config.py


def parser_api(value: str | None = None) -> str:
    """The API to speak: `value`, else DOCPIPE_PARSER_API, else v2. Bad values raise."""
    raw = (value if value is not None else settings().parser_api).strip()
    api = raw.lower() or DEFAULT_PARSER_API
    if api not in PARSER_APIS:
        raise ValueError(f"DOCPIPE_PARSER_API must be 'v1' or 'v2', got {raw!r}")
    return api


def local_extensions(value: str | None = None) -> frozenset[str]:
    """Extensions (".txt") parsed in-process, from a comma list like "txt,json,md" (`value`,
    else DOCPIPE_PARSE_LOCALLY, else the default); "none" or "" means none."""
    raw = value if value is not None else settings().parse_locally
    if raw.strip().lower() in ("", "none"):
        return frozenset()
    exts = {"." + part.strip().lower().lstrip(".") for part in raw.split(",") if part.strip()}
    unknown = sorted(exts - set(LOCAL_EXTENSIONS))
    if unknown:
        raise ValueError(
            f"DOCPIPE_PARSE_LOCALLY: cannot parse {', '.join(unknown)} locally; "
            f"possible: {', '.join(e.lstrip('.') for e in LOCAL_EXTENSIONS)}"
        )
    return frozenset(exts)


def make_parser_client(api: str, base_url: str, api_key: str, **options: Any) -> LlamaParseClient:
    """A client for `api`; v2-only options (tier, version, configuration) are dropped for v1."""
    if parser_api(api) == "v2":
        return LlamaParseV2Client(base_url, api_key, **options)
    for name in ("tier", "version", "configuration"):
        options.pop(name, None)
    return LlamaParseClient(base_url, api_key, **options)
