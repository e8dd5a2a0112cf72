"""Settings of search and the HTTP API, from the environment (documented in .env.example)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from docpipe_dagster.store.search import MODES

ENV_API_KEY = "DOCPIPE_API_KEY"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class SearchSettings:
    """Defaults of a search (chosen from benchmarks/retrieval.py, see README)."""

    language: str = "english"  # full-text configuration; unknown names fall back to 'simple'
    mode: str = "hybrid"
    ef_search: int | None = None  # None: pgvector's default (40)

    @classmethod
    def from_env(cls) -> SearchSettings:
        mode = _str("DOCPIPE_SEARCH_MODE", cls.mode)
        if mode not in MODES:
            raise ValueError(f"DOCPIPE_SEARCH_MODE must be one of {', '.join(MODES)}, got {mode!r}")
        ef = _int("DOCPIPE_SEARCH_EF_SEARCH", 0)
        return cls(
            language=_str("DOCPIPE_SEARCH_LANGUAGE", cls.language),
            mode=mode,
            ef_search=ef or None,
        )


@dataclass(frozen=True)
class ApiSettings:
    """Where the API listens and what it accepts. The key is read, never logged."""

    host: str = "127.0.0.1"
    port: int = 8003
    max_upload_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(
            host=_str("DOCPIPE_API_HOST", cls.host),
            port=_int("DOCPIPE_API_PORT", cls.port),
            max_upload_bytes=_int(
                "DOCPIPE_API_MAX_UPLOAD_BYTES", _int("DOCPIPE_MAX_FILE_BYTES", cls.max_upload_bytes)
            ),
        )


def api_key() -> str:
    """DOCPIPE_API_KEY; empty when unset (the API then refuses to start)."""
    return os.environ.get(ENV_API_KEY, "").strip()
