"""Environment-driven settings shared by the CLI, the Dagster resources and the tests.

No Dagster import here: the CLI and the store use it before any Dagster code loads.
Every variable is documented in `.env.example`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from docpipe_dagster.bundled import CHECKOUT_ROOT, is_checkout

# The checkout root when running from source (kept for the tests and benchmarks).
PROJECT_ROOT = CHECKOUT_ROOT

ENV_HOME = "DOCPIPE_HOME"
ENV_DATABASE_URL = "DOCPIPE_DATABASE_URL"
ENV_DAGSTER_DATABASE_URL = "DOCPIPE_DAGSTER_DATABASE_URL"


def docpipe_home() -> Path:
    """Where local state lives: the embedded database, storage folder, DAGSTER_HOME.

    `DOCPIPE_HOME`, else `.docpipe/` in the checkout when running from source, else
    `./.docpipe` under the working directory (never inside site-packages).
    """
    raw = os.environ.get(ENV_HOME)
    if raw:
        home = Path(raw).expanduser()
    else:
        home = (CHECKOUT_ROOT if is_checkout() else Path.cwd()) / ".docpipe"
    return home.resolve()


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc


# Local mocks answer to this key; it is not a secret (the real services need real keys).
LOCAL_MOCK_API_KEY = "docpipe-local-key"


@dataclass(frozen=True)
class ServiceSettings:
    """Where the external services are. Base URLs default to the local mocks."""

    parser_base_url: str
    parser_api_key_env: str
    embedder_base_url: str
    embedder_api_key_env: str
    embedding_model: str
    embedding_dimensions: int
    storage_backend: str  # "folder" | "supabase"
    storage_dir: Path
    storage_base_url: str
    storage_api_key_env: str
    storage_bucket: str

    def key(self, env_name: str, base_url: str) -> str:
        return api_key_value(env_name, base_url)

    @property
    def uses_local_mocks(self) -> bool:
        return all(is_local_url(url) for url in (self.parser_base_url, self.embedder_base_url))


def is_local_url(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def api_key_value(env_name: str, base_url: str) -> str:
    """The key from the environment; the mocks' public key for a local URL when unset."""
    value = os.environ.get(env_name, "").strip()
    if not value and is_local_url(base_url):
        return LOCAL_MOCK_API_KEY
    return value


def service_settings() -> ServiceSettings:
    home = docpipe_home()
    return ServiceSettings(
        parser_base_url=env_str("LLAMAPARSE_BASE_URL", "http://127.0.0.1:8001").rstrip("/"),
        parser_api_key_env="LLAMA_CLOUD_API_KEY",
        embedder_base_url=env_str("OPENAI_BASE_URL", "http://127.0.0.1:8002/v1").rstrip("/"),
        embedder_api_key_env="OPENAI_API_KEY",
        embedding_model=env_str("DOCPIPE_EMBEDDING_MODEL", "text-embedding-3-small"),
        embedding_dimensions=env_int("DOCPIPE_EMBEDDING_DIMENSIONS", 1536),
        storage_backend=env_str("DOCPIPE_STORAGE_BACKEND", "folder"),
        storage_dir=Path(env_str("DOCPIPE_STORAGE_DIR", str(home / "storage")))
        .expanduser()
        .resolve(),
        storage_base_url=env_str("SUPABASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        storage_api_key_env="SUPABASE_SERVICE_KEY",
        storage_bucket=env_str("DOCPIPE_STORAGE_BUCKET", "documents"),
    )
