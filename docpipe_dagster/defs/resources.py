"""Resources: one per external system, each with a local and a remote implementation.

Secrets (API keys, the database URL with its password) come from the environment via
`dg.EnvVar`, so Dagster shows the variable's name, never its value. With no key set and
a base URL on 127.0.0.1, the local mocks' well-known (non-secret) key is used.
"""

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dagster as dg
from pydantic import PrivateAttr

from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS, EmbeddingsClient
from docpipe_dagster.clients.llamaparse import LlamaParseClient
from docpipe_dagster.clients.llamaparse_v2 import TIERS
from docpipe_dagster.clients.parsing import (
    DEFAULT_PARSE_LOCALLY,
    local_extensions,
    make_parser_client,
    parser_api,
)
from docpipe_dagster.clients.storage import FolderStorage, StorageBackend, SupabaseStorage
from docpipe_dagster.config import (
    LOCAL_MOCK_API_KEY,
    env_float,
    env_int,
    is_local_url,
    service_settings,
)
from docpipe_dagster.core.chunking import ChunkingConfig
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster.pipeline.intake import IntakeConfig
from docpipe_dagster.store.queries import Store, VectorSpace


class DatabaseResource(dg.ConfigurableResource):
    """The pipeline's Postgres: DOCPIPE_DATABASE_URL, else the embedded server.

    The URL is read from the environment at run time and never stored in config.
    """

    max_connections: int = 8
    _store: Store | None = PrivateAttr(default=None)

    def store(self) -> Store:
        if self._store is None:
            from docpipe_dagster.store.server import ready_database

            self._store = Store.open(ready_database().url, max_size=self.max_connections)
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class StorageResource(dg.ConfigurableResource):
    """Where files land. Subclasses: a local folder, or the Supabase Storage API."""

    def open(self) -> StorageBackend:
        raise NotImplementedError


class FolderStorageResource(StorageResource):
    root: str

    def open(self) -> StorageBackend:
        os.makedirs(self.root, exist_ok=True)
        return FolderStorage(self.root)


class SupabaseStorageResource(StorageResource):
    base_url: str
    api_key: str
    bucket: str = "documents"

    def open(self) -> StorageBackend:
        backend = SupabaseStorage(self.base_url, self.api_key, self.bucket)
        backend.ensure_bucket()
        return backend


class ApiResource(dg.ConfigurableResource):
    """What the HTTP API resources share: where, the key, and per-request retries."""

    base_url: str
    api_key: str
    timeout_s: float = 60.0
    max_concurrency: int = 4
    # Per HTTP request: attempts (including the first) and the backoff base (jittered,
    # doubling); a server's Retry-After / retry-after-ms wins over the backoff.
    retry_max_attempts: int = 6
    retry_base_delay_s: float = 0.5

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_max_attempts, base_delay_s=self.retry_base_delay_s
        )


class ParserResource(ApiResource):
    """LlamaParse (v2 API by default, v1 selectable; the local mock by default), and which
    file types are parsed in-process instead (docs/PARSER.md)."""

    result_type: str = "markdown"
    poll_interval_s: float = 0.25
    deadline_s: float = 600.0
    max_concurrency: int = 8
    retry_max_attempts: int = 5
    api: str = "v2"  # "v2" or "v1" (DOCPIPE_PARSER_API)
    tier: str = "cost_effective"  # v2: fast | cost_effective | agentic | agentic_plus
    version: str = "latest"  # v2: "latest" or a dated version YYYY-MM-DD
    parse_locally: str = DEFAULT_PARSE_LOCALLY  # extensions, comma-separated ("" = none)

    @property
    def profile(self) -> str:
        """Parse-cache key: the same bytes parsed with the same settings give the same text.
        v2: the tier and version are part of it (a new tier re-parses)."""
        if parser_api(self.api) == "v1":
            return f"llamaparse-v1:{self.result_type}"
        return f"llamaparse-v2:{self.tier}:{self.version}:{self.result_type}"

    @property
    def local_extensions(self) -> frozenset[str]:
        return local_extensions(self.parse_locally)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[LlamaParseClient]:
        async with make_parser_client(
            self.api,
            self.base_url,
            self.api_key,
            tier=self.tier,
            version=self.version,
            result_type=self.result_type,
            poll_interval_s=self.poll_interval_s,
            deadline_s=self.deadline_s,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            retry_policy=self.retry_policy(),
        ) as client:
            yield client


class EmbedderResource(ApiResource):
    """OpenAI embeddings API (the local mock by default)."""

    model: str = "text-embedding-3-small"
    dimensions: int = 1536
    send_dimensions: bool = False  # only v3 models accept `dimensions`
    max_inputs_per_request: int = 2048
    # What the HNSW index (and search) casts vectors to: "vector", "halfvec" (half the
    # index size) or "" for vector up to 2,000 dimensions and halfvec above.
    vector_type: str = ""

    def space(self) -> VectorSpace:
        return VectorSpace(self.model, self.dimensions, self.vector_type or None)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[EmbeddingsClient]:
        async with EmbeddingsClient(
            self.base_url,
            self.api_key,
            self.model,
            self.dimensions if self.send_dimensions else None,
            max_inputs_per_request=self.max_inputs_per_request,
            max_concurrency=self.max_concurrency,
            timeout_s=self.timeout_s,
            retry_policy=self.retry_policy(),
        ) as client:
            yield client


class PipelineSettings(dg.ConfigurableResource):
    """Knobs of the pipeline itself (chunking, batching, retries)."""

    chunk_max_chars: int = 1200
    chunk_overlap_chars: int = 150
    batch_max_files: int = 200
    batch_max_bytes: int = 64 * 1024 * 1024
    max_batches_per_tick: int = 5
    settle_seconds: float = 1.0
    max_file_bytes: int = 100 * 1024 * 1024
    max_attempts: int = 3
    retry_base_seconds: float = 30.0

    def chunking(self) -> ChunkingConfig:
        return ChunkingConfig(
            max_chars=self.chunk_max_chars, overlap_chars=self.chunk_overlap_chars
        )

    def intake(self) -> IntakeConfig:
        return IntakeConfig(
            settle_seconds=self.settle_seconds,
            batch_max_files=self.batch_max_files,
            batch_max_bytes=self.batch_max_bytes,
            max_batches_per_tick=self.max_batches_per_tick,
        )


def api_key(env_name: str, base_url: str) -> str | dg.EnvVar:
    """The key as an EnvVar when set; the mocks' public key when talking to a local mock."""
    if os.environ.get(env_name, "").strip():
        return dg.EnvVar(env_name)
    if is_local_url(base_url):
        return LOCAL_MOCK_API_KEY
    # Unset for a remote service: resolving fails with Dagster's "env var not set" error.
    return dg.EnvVar(env_name)


def parser_env() -> dict[str, str]:
    """ParserResource fields set by DOCPIPE_PARSER_API / _PARSE_TIER / _PARSE_VERSION /
    _PARSE_LOCALLY (validated here, so a typo fails at load with the variable's name)."""
    fields: dict[str, str] = {"api": parser_api()}
    for name, env in (("tier", "DOCPIPE_PARSE_TIER"), ("version", "DOCPIPE_PARSE_VERSION")):
        if value := os.environ.get(env, "").strip():
            fields[name] = value
    if fields.get("tier", "cost_effective") not in TIERS:
        raise ValueError(
            f"DOCPIPE_PARSE_TIER must be one of {', '.join(TIERS)}, got {fields['tier']!r}"
        )
    version = fields.get("version", "latest")
    if version != "latest" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
        raise ValueError(f"DOCPIPE_PARSE_VERSION must be 'latest' or YYYY-MM-DD, got {version!r}")
    if (local := os.environ.get("DOCPIPE_PARSE_LOCALLY")) is not None:
        local_extensions(local)
        fields["parse_locally"] = local
    return fields


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment (see .env.example for every variable)."""
    settings = service_settings()
    if settings.storage_backend == "supabase":
        storage: StorageResource = SupabaseStorageResource(
            base_url=settings.storage_base_url,
            api_key=api_key(settings.storage_api_key_env, settings.storage_base_url),
            bucket=settings.storage_bucket,
        )
    elif settings.storage_backend == "folder":
        storage = FolderStorageResource(root=str(settings.storage_dir))
    else:
        raise ValueError(
            f"DOCPIPE_STORAGE_BACKEND must be 'folder' or 'supabase', got {settings.storage_backend!r}"
        )
    dims_env = os.environ.get("DOCPIPE_EMBEDDING_DIMENSIONS", "").strip()
    native = MODEL_DIMENSIONS.get(settings.embedding_model)
    dimensions = int(dims_env) if dims_env else native
    if dimensions is None:
        raise ValueError(
            f"set DOCPIPE_EMBEDDING_DIMENSIONS for embedding model {settings.embedding_model!r}"
        )
    return {
        "database": DatabaseResource(),
        "storage": storage,
        "parser": ParserResource(
            base_url=settings.parser_base_url,
            api_key=api_key(settings.parser_api_key_env, settings.parser_base_url),
            deadline_s=env_float("DOCPIPE_PARSE_DEADLINE_SECONDS", 600.0),
            **parser_env(),
        ),
        "embedder": EmbedderResource(
            base_url=settings.embedder_base_url,
            api_key=api_key(settings.embedder_api_key_env, settings.embedder_base_url),
            model=settings.embedding_model,
            dimensions=dimensions,
            send_dimensions=bool(dims_env) and dimensions != native,
            vector_type=os.environ.get("DOCPIPE_VECTOR_TYPE", "").strip().lower(),
        ),
        "pipeline_settings": PipelineSettings(
            chunk_max_chars=env_int("DOCPIPE_CHUNK_MAX_CHARS", 1200),
            chunk_overlap_chars=env_int("DOCPIPE_CHUNK_OVERLAP_CHARS", 150),
            batch_max_files=env_int("DOCPIPE_BATCH_MAX_FILES", 200),
            batch_max_bytes=env_int("DOCPIPE_BATCH_MAX_BYTES", 64 * 1024 * 1024),
            settle_seconds=env_float("DOCPIPE_SETTLE_SECONDS", 1.0),
            max_file_bytes=env_int("DOCPIPE_MAX_FILE_BYTES", 100 * 1024 * 1024),
            max_attempts=env_int("DOCPIPE_MAX_ATTEMPTS", 3),
            retry_base_seconds=env_float("DOCPIPE_RETRY_BASE_SECONDS", 30.0),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
