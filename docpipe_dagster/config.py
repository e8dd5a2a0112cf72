"""The one settings model: every environment variable docpipe reads, with its default.

`Settings()` reads the environment when it is built (never cached, so a test or a child
process that changes the environment gets what it set). The CLI, the Dagster resources,
the sensors and the mocks all read it; `build_resources()` turns the non-secret fields
into visible resource config and the secrets into `dg.EnvVar`s. `.env.example` documents
exactly these variables (a test checks it).

Adding a setting is one change here: a field with `var("DOCPIPE_<NAME>", default, "what it does")`,
then the line in `.env.example` and, when a run should see it, a resource field that
takes `default_of("x")` and is filled in `build_resources()`.

Values validate themselves here and nowhere else: `Literal` choices, bounds (`ge=1`),
`ByteSize` for sizes, validators for the rest. A bad value fails when the settings load,
with a message naming the variable (`settings()`); callers use the values as they are.

No Dagster import here: the CLI and the store use it before any Dagster code loads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    ByteSize,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from docpipe_dagster.bundled import CHECKOUT_ROOT, is_checkout
from docpipe_dagster.core.chunking import ChunkingConfig

# The checkout root when running from source (kept for the tests and benchmarks).
PROJECT_ROOT = CHECKOUT_ROOT

ENV_HOME = "DOCPIPE_HOME"
ENV_DATABASE_URL = "DOCPIPE_DATABASE_URL"
ENV_DAGSTER_DATABASE_URL = "DOCPIPE_DAGSTER_DATABASE_URL"

# Local mocks answer to this key; it is not a secret (the real services need real keys).
LOCAL_MOCK_API_KEY = "docpipe-local-key"

# Variables whose empty value means something (an empty DOCPIPE_MOCK_API_KEY disables the
# mocks' auth); for every other variable an empty value means "use the default".
_EMPTY_IS_A_VALUE = frozenset({"DOCPIPE_MOCK_API_KEY"})


def var(name: str, default: Any, description: str, *, secret: bool = False, **bounds: Any) -> Any:
    """A settings field read from the environment variable `name`; `bounds` are pydantic's
    (`ge=1`), checked when the settings load."""
    return Field(
        default,
        validation_alias=AliasChoices(name),
        description=description,
        json_schema_extra={"env": name, "secret": secret},
        **bounds,
    )


# The types the values must have: a bad one fails when the settings load, naming the variable
# (`settings()`), so no caller checks a value again.
ParserApi = Literal["v1", "v2"]
ParseTier = Literal["fast", "cost_effective", "agentic", "agentic_plus"]
SearchMode = Literal["hybrid", "vector", "text"]
StorageBackend = Literal["folder", "supabase"]
VectorType = Literal["", "vector", "halfvec"]
LogFormat = Literal["console", "json"]
_PG_SIZE = re.compile(r"\s*(\d+)\s*(kB|KB|MB|GB|TB)?\s*")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _postgres_size(value: Any) -> Any:
    """Postgres memory units ('1GB' is 1024 MB, a plain number is MB) as ByteSize reads
    them ('1GiB'); ByteSize's own spellings ('512MiB') pass through."""
    match = _PG_SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return value
    unit = (match.group(2) or "MB").upper()
    return f"{match.group(1)}{unit[0]}iB" if unit != "KB" else f"{match.group(1)}KiB"


def _parse_version(value: str) -> str:
    if value != "latest" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"expected 'latest' or a dated version YYYY-MM-DD, got {value!r}")
    return value


# A size in bytes: a number, or ByteSize's units ("64MiB"; "64MB" is 64,000,000).
Bytes = Annotated[ByteSize, Field(ge=1), AfterValidator(int)]
# A Postgres memory size, kept in bytes.
PostgresMemory = Annotated[
    ByteSize, BeforeValidator(_postgres_size), Field(ge=2**20), AfterValidator(int)
]


def _default_parallel_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class Settings(BaseSettings):
    """Every variable, once, grouped in the sections of `.env.example` (`# --- title`):
    the same sections in the same order, each with the same variables (a test checks)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, frozen=True)

    # --- where local state lives
    home: str = var(
        ENV_HOME, "", "embedded database, storage folder, DAGSTER_HOME (default: .docpipe)"
    )
    # --- database (URLs may carry a password: read at run time, never put in config)
    database_url: str = var(ENV_DATABASE_URL, "", "any Postgres with pgvector >= 0.5", secret=True)
    dagster_database_url: str = var(
        ENV_DAGSTER_DATABASE_URL, "", "Dagster's run/event storage", secret=True
    )
    sql_dir: str = var("DOCPIPE_SQL_DIR", "", "the migrations folder (default: the packaged sql/)")
    # --- parser
    parser_base_url: str = var("LLAMAPARSE_BASE_URL", "http://127.0.0.1:8001", "LlamaParse API")
    parser_api_key: str = var("LLAMA_CLOUD_API_KEY", "", "LlamaParse key", secret=True)
    parse_deadline_seconds: float = var(
        "DOCPIPE_PARSE_DEADLINE_SECONDS", 600.0, "give up on one parse job after this long"
    )
    # Local parsing of binary formats runs in worker processes with these bounds
    # (core/extract/sandbox.py; docs/RELIABILITY.md).
    parse_memory_mb: int = var(
        "DOCPIPE_PARSE_MEMORY_MB", 3072, "address-space limit of a local parse worker", ge=64
    )
    parse_timeout_seconds: float = var(
        "DOCPIPE_PARSE_TIMEOUT_SECONDS", 300.0, "wall-clock (and CPU) limit of one local parse"
    )
    parse_workers: int = var(
        "DOCPIPE_PARSE_WORKERS", 2, "local parse worker processes at once", ge=1
    )
    parser_api: Annotated[ParserApi, BeforeValidator(_lower)] = var(
        "DOCPIPE_PARSER_API", "v2", "LlamaParse API: v2 (current) or v1 (legacy)"
    )
    parse_tier: ParseTier = var(
        "DOCPIPE_PARSE_TIER", "cost_effective", "v2 tier (part of the parse-cache key)"
    )
    parse_version: Annotated[str, AfterValidator(_parse_version)] = var(
        "DOCPIPE_PARSE_VERSION", "latest", "v2 parser version: latest or YYYY-MM-DD"
    )
    # text: text-like types in-process, layout types to LlamaParse; all: everything
    # in-process (no parser service at all); none: everything LlamaParse reads goes to it.
    parse_locally: str = var(
        "DOCPIPE_PARSE_LOCALLY",
        "text",
        "text | all | none | a list of extensions parsed in-process (docs/PARSER.md)",
    )
    # --- embedder
    embedder_base_url: str = var("OPENAI_BASE_URL", "http://127.0.0.1:8002/v1", "embeddings API")
    embedder_api_key: str = var("OPENAI_API_KEY", "", "OpenAI key", secret=True)
    embedding_model: str = var("DOCPIPE_EMBEDDING_MODEL", "text-embedding-3-small", "model")
    embedding_dimensions: int | None = var(
        "DOCPIPE_EMBEDDING_DIMENSIONS", None, "vector size (default: the model's native)", ge=1
    )
    vector_type: Annotated[VectorType, BeforeValidator(_lower)] = var(
        "DOCPIPE_VECTOR_TYPE", "", "vector | halfvec (default: vector up to 2,000 dims)"
    )
    # --- the HNSW index
    index_bulk_threshold: float = var(
        "DOCPIPE_INDEX_BULK_THRESHOLD", 0.25, "drop + rebuild when new rows >= this x indexed"
    )
    index_maintenance_work_mem: PostgresMemory = var(
        "DOCPIPE_INDEX_MAINTENANCE_WORK_MEM",
        2**30,
        "upper bound for a one-pass build (Postgres units: 1GB = 1024MB; a number is MB)",
    )
    index_parallel_workers: int = Field(
        default_factory=_default_parallel_workers,
        validation_alias=AliasChoices("DOCPIPE_INDEX_PARALLEL_WORKERS"),
        description="parallel workers for an index build (default: CPUs - 1, at most 4)",
        json_schema_extra={"env": "DOCPIPE_INDEX_PARALLEL_WORKERS", "secret": False},
    )
    commit_group_rows: int = var(
        "DOCPIPE_COMMIT_GROUP_ROWS", 2000, "rows per commit transaction", ge=1
    )
    commit_workers: int = var("DOCPIPE_COMMIT_WORKERS", 2, "connections committing at once", ge=1)
    # --- storage
    storage_backend: StorageBackend = var("DOCPIPE_STORAGE_BACKEND", "folder", "folder | supabase")
    storage_dir: str = var("DOCPIPE_STORAGE_DIR", "", "folder backend root ($DOCPIPE_HOME/storage)")
    storage_base_url: str = var("SUPABASE_URL", "http://127.0.0.1:8000", "Supabase project URL")
    storage_api_key: str = var("SUPABASE_SERVICE_KEY", "", "Supabase service key", secret=True)
    storage_bucket: str = var("DOCPIPE_STORAGE_BUCKET", "documents", "Supabase bucket")
    # --- the pipeline
    chunk_max_chars: int = var(
        "DOCPIPE_CHUNK_MAX_CHARS", ChunkingConfig.max_chars, "longest chunk, in characters"
    )
    chunk_overlap_chars: int = var(
        "DOCPIPE_CHUNK_OVERLAP_CHARS", ChunkingConfig.overlap_chars, "overlap between chunks"
    )
    batch_max_files: int = var("DOCPIPE_BATCH_MAX_FILES", 500, "files per batch run", ge=1)
    batch_max_bytes: Bytes = var("DOCPIPE_BATCH_MAX_BYTES", 64 * 1024 * 1024, "bytes per batch run")
    # Two runs at once keep both cores busy: while one batch waits on the embedder, the
    # other's commit keeps Postgres working (benchmarks/README.md has the figures).
    ingest_runs: int = var(
        "DOCPIPE_INGEST_RUNS", 2, "batch runs `docpipe ingest --wait` executes at once", ge=1
    )
    settle_seconds: float = var(
        "DOCPIPE_SETTLE_SECONDS", 1.0, "a file must be unchanged this long before intake"
    )
    max_file_bytes: Bytes = var("DOCPIPE_MAX_FILE_BYTES", 100 * 1024 * 1024, "larger files fail")
    max_attempts: int = var(
        "DOCPIPE_MAX_ATTEMPTS", 3, "attempts per document (transient errors)", ge=1
    )
    retry_base_seconds: float = var(
        "DOCPIPE_RETRY_BASE_SECONDS", 30.0, "first retry delay (doubles per attempt)"
    )
    stale_minutes: int = var(
        "DOCPIPE_STALE_MINUTES", 15, "an in-flight job untouched this long belongs to a dead run"
    )
    # --- automation (sensor intervals are read when the definitions load)
    sensor_interval_seconds: int = var("DOCPIPE_SENSOR_INTERVAL_SECONDS", 2, "intake sensor")
    retry_interval_seconds: int = var("DOCPIPE_RETRY_INTERVAL_SECONDS", 30, "retry sensor")
    health_interval_seconds: int = var("DOCPIPE_HEALTH_INTERVAL_SECONDS", 10, "health sensor")
    # --- search and the HTTP API
    search_language: str = var(
        "DOCPIPE_SEARCH_LANGUAGE", "english", "full-text configuration (unknown names: simple)"
    )
    search_mode: SearchMode = var(
        "DOCPIPE_SEARCH_MODE", "hybrid", "default mode: hybrid | vector | text"
    )
    search_ef_search: int | None = var(
        "DOCPIPE_SEARCH_EF_SEARCH", None, "HNSW ef_search per query (default: pgvector's 40)", ge=1
    )
    spaces_interval_seconds: int = var(
        "DOCPIPE_SPACES_INTERVAL_SECONDS", 30, "vector space sensor: backfill, then activate"
    )
    api_key: str = var("DOCPIPE_API_KEY", "", "bearer key of the HTTP API", secret=True)
    api_host: str = var("DOCPIPE_API_HOST", "127.0.0.1", "where the HTTP API listens")
    api_port: int = var("DOCPIPE_API_PORT", 8003, "the HTTP API's port", ge=1, le=65535)
    api_max_upload_bytes: Bytes | None = var(
        "DOCPIPE_API_MAX_UPLOAD_BYTES", None, "largest upload (default: DOCPIPE_MAX_FILE_BYTES)"
    )
    dagster_url: str = var(
        "DOCPIPE_DAGSTER_URL",
        "",
        "the Dagster webserver's base URL: uploads launch their run at once (empty: the sensor)",
    )
    watch_storage: bool = var(
        "DOCPIPE_WATCH_STORAGE",
        True,
        "with DOCPIPE_DAGSTER_URL and a folder storage: files dropped there launch at once too",
    )
    # --- logs
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = var(
        "DOCPIPE_LOG_FORMAT", "console", "console | json (one JSON object per line, for containers)"
    )
    # --- local mocks
    mock_api_key: str = var(
        "DOCPIPE_MOCK_API_KEY", LOCAL_MOCK_API_KEY, "the key the mocks accept; empty or none: any"
    )
    mock_latency_ms: float = var("DOCPIPE_MOCK_LATENCY_MS", 0.0, "added latency per request")
    mock_jitter_ms: float = var("DOCPIPE_MOCK_JITTER_MS", 0.0, "+ uniform(0, jitter) ms")
    mock_faults: str = var("DOCPIPE_MOCK_FAULTS", "", "JSON list of fault specs (mocks/README.md)")

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v.strip() if isinstance(v, str) else v
                for k, v in data.items()
                if k in _EMPTY_IS_A_VALUE or not (isinstance(v, str) and not v.strip())
            }
        return data

    @field_validator("parse_locally")
    @classmethod
    def _parse_locally(cls, value: str) -> str:
        return parse_locally_value(value)

    @property
    def vector_dims(self) -> int | None:
        """The vector size the pipeline writes: DOCPIPE_EMBEDDING_DIMENSIONS, else the
        model's native size (None: a model this table does not know, and no setting)."""
        from docpipe_dagster.core.models import MODEL_DIMENSIONS

        return self.embedding_dimensions or MODEL_DIMENSIONS.get(self.embedding_model)

    @classmethod
    def env_names(cls) -> list[str]:
        """Every variable the model reads, in declaration order."""
        return [f.json_schema_extra["env"] for f in cls.model_fields.values()]  # type: ignore[index]


PARSE_LOCALLY_MODES = ("text", "all", "none")


def parse_locally_value(value: str) -> str:
    """DOCPIPE_PARSE_LOCALLY normalised: "text", "all", "none", or a sorted comma list of
    extensions the local backend reads ("csv,md,txt"). Anything else raises ValueError."""
    from docpipe_dagster.core.extract import LOCAL_EXTENSIONS

    raw = value.strip().lower()
    if raw in PARSE_LOCALLY_MODES:
        return raw
    if not raw:
        return "none"  # the old spelling of "nothing in-process"
    exts = {"." + part.strip().lstrip(".") for part in raw.split(",") if part.strip()}
    unknown = sorted(exts - LOCAL_EXTENSIONS)
    if unknown:
        raise ValueError(
            f"expected text, all, none or extensions parsed in-process; cannot parse "
            f"{', '.join(unknown)} locally (possible: "
            f"{', '.join(sorted(e.lstrip('.') for e in LOCAL_EXTENSIONS))})"
        )
    return ",".join(sorted(e.lstrip(".") for e in exts))


def settings() -> Settings:
    """The settings from the environment now; a bad value is a readable ValueError."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "settings"
            problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
        raise ValueError("bad docpipe setting: " + "; ".join(problems)) from None


def default_of(field: str) -> Any:
    """A field's default (for resource fields, so each default is written once)."""
    return Settings.model_fields[field].get_default(call_default_factory=True)


def docpipe_home(current: Settings | None = None) -> Path:
    """Where local state lives: the embedded database, storage folder, DAGSTER_HOME.

    `DOCPIPE_HOME`, else `.docpipe/` in the checkout when running from source, else
    `./.docpipe` under the working directory (never inside site-packages).
    """
    raw = (current or settings()).home
    if raw:
        home = Path(raw).expanduser()
    else:
        home = (CHECKOUT_ROOT if is_checkout() else Path.cwd()) / ".docpipe"
    return home.resolve()


@dataclass(frozen=True)
class ServiceSettings:
    """Where the external services are. Base URLs default to the local mocks."""

    parser_base_url: str
    parser_api_key_env: str
    embedder_base_url: str
    embedder_api_key_env: str
    embedding_model: str
    storage_backend: StorageBackend
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


def env_name(field: str) -> str:
    """The environment variable behind a settings field."""
    return Settings.model_fields[field].json_schema_extra["env"]  # type: ignore[index]


def api_key_value(env_name: str, base_url: str) -> str:
    """The key from the environment; the mocks' public key for a local URL when unset."""
    value = os.environ.get(env_name, "").strip()
    if not value and is_local_url(base_url):
        return LOCAL_MOCK_API_KEY
    return value


def service_settings(current: Settings | None = None) -> ServiceSettings:
    s = current or settings()
    home = docpipe_home(s)
    return ServiceSettings(
        parser_base_url=s.parser_base_url.rstrip("/"),
        parser_api_key_env=env_name("parser_api_key"),
        embedder_base_url=s.embedder_base_url.rstrip("/"),
        embedder_api_key_env=env_name("embedder_api_key"),
        embedding_model=s.embedding_model,
        storage_backend=s.storage_backend,
        storage_dir=Path(s.storage_dir or str(home / "storage")).expanduser().resolve(),
        storage_base_url=s.storage_base_url.rstrip("/"),
        storage_api_key_env=env_name("storage_api_key"),
        storage_bucket=s.storage_bucket,
    )
