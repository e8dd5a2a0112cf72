"""Settings of search and the HTTP API, from the environment (documented in .env.example)."""

from __future__ import annotations

from dataclasses import dataclass

from docpipe_dagster.config import settings

ENV_API_KEY = "DOCPIPE_API_KEY"


@dataclass(frozen=True)
class SearchSettings:
    """Defaults of a search (chosen from benchmarks/retrieval.py, see README)."""

    language: str = "english"  # full-text configuration; unknown names fall back to 'simple'
    mode: str = "hybrid"
    ef_search: int | None = None  # None: pgvector's default (40)

    @classmethod
    def from_env(cls) -> SearchSettings:
        s = settings()  # validated there: a bad DOCPIPE_SEARCH_MODE fails at load
        return cls(
            language=s.search_language, mode=s.search_mode, ef_search=s.search_ef_search or None
        )


@dataclass(frozen=True)
class ApiSettings:
    """Where the API listens and what it accepts. The key is read, never logged."""

    host: str = "127.0.0.1"
    port: int = 8003
    max_upload_bytes: int = 100 * 1024 * 1024
    # The Dagster webserver: set, an upload is registered and its run launched at once.
    dagster_url: str = ""
    # With dagster_url and a folder storage: files dropped there are pushed too (api/watch.py).
    watch_storage: bool = True

    @classmethod
    def from_env(cls) -> ApiSettings:
        s = settings()
        return cls(
            host=s.api_host,
            port=s.api_port,
            max_upload_bytes=s.api_max_upload_bytes or s.max_file_bytes,
            dagster_url=s.dagster_url,
            watch_storage=s.watch_storage,
        )


def api_key() -> str:
    """DOCPIPE_API_KEY; empty when unset (the API then refuses to start)."""
    return settings().api_key
