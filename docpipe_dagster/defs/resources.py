"""Resources: one per external system, each with a local and a remote implementation.

Secrets (API keys, the database URL with its password) come from the environment via
`dg.EnvVar`, so Dagster shows the variable's name, never its value. With no key set and
a base URL on 127.0.0.1, the local mocks' well-known (non-secret) key is used.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import dagster as dg
from pydantic import PrivateAttr

from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS, EmbeddingsClient
from docpipe_dagster.clients.llamaparse import LlamaParseClient
from docpipe_dagster.clients.parsing import (
    DEFAULT_PARSE_LOCALLY,
    Routing,
    make_parser_client,
    routing,
)
from docpipe_dagster.clients.storage import FolderStorage, StorageBackend, SupabaseStorage
from docpipe_dagster.config import (
    LOCAL_MOCK_API_KEY,
    Settings,
    default_of,
    is_local_url,
    service_settings,
    settings,
)
from docpipe_dagster.core.chunking import ChunkingConfig
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster.pipeline.commit import IndexSettings
from docpipe_dagster.pipeline.intake import IntakeConfig
from docpipe_dagster.store.queries import Store, VectorSpace


class DatabaseResource(dg.ConfigurableResource):
    """The pipeline's Postgres: DOCPIPE_DATABASE_URL, else the embedded server.

    The URL is read from the environment at run time and never stored in config. The pool
    opens on first use and closes with the run (or sensor tick). Migrations are not run
    here: a startup check (once per process) refuses a database that lacks one.
    """

    max_connections: int = 8
    _store: Store | None = PrivateAttr(default=None)

    def store(self) -> Store:
        if self._store is None:
            from docpipe_dagster.store.server import checked_database

            self._store = Store.open(checked_database().url, max_size=self.max_connections)
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class StorageResource(dg.ConfigurableResource, ABC):
    """Where files land. Subclasses: a local folder, or the Supabase Storage API.

    `open()` gives the run's (or tick's) one backend, made on first use and closed with it.
    """

    _backend: StorageBackend | None = PrivateAttr(default=None)

    @abstractmethod
    def _connect(self) -> StorageBackend: ...

    def open(self) -> StorageBackend:
        if self._backend is None:
            self._backend = self._connect()
        return self._backend

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        backend, self._backend = self._backend, None
        close = getattr(backend, "close", None)
        if close is not None:
            close()


class FolderStorageResource(StorageResource):
    root: str

    def _connect(self) -> StorageBackend:
        os.makedirs(self.root, exist_ok=True)
        return FolderStorage(self.root)


class SupabaseStorageResource(StorageResource):
    base_url: str
    api_key: str
    bucket: str = default_of("storage_bucket")

    def _connect(self) -> StorageBackend:
        backend = SupabaseStorage(self.base_url, self.api_key, self.bucket)
        backend.ensure_bucket()  # once per run or tick, not per call
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
    deadline_s: float = default_of("parse_deadline_seconds")
    max_concurrency: int = 8
    retry_max_attempts: int = 5
    api: str = default_of("parser_api")  # "v2" or "v1"
    tier: str = default_of("parse_tier")  # v2: fast | cost_effective | agentic | agentic_plus
    version: str = default_of("parse_version")  # v2: "latest" or a dated version YYYY-MM-DD
    parse_locally: str = DEFAULT_PARSE_LOCALLY  # text | all | none | extensions (docs/PARSER.md)

    @property
    def profile(self) -> str:
        """Parse-cache key: the same bytes parsed with the same settings give the same text.
        v2: the tier and version are part of it (a new tier re-parses)."""
        if self.api == "v1":
            return f"llamaparse-v1:{self.result_type}"
        return f"llamaparse-v2:{self.tier}:{self.version}:{self.result_type}"

    @property
    def routing(self) -> Routing:
        """Which file types are parsed in-process, which by the service, which refused."""
        return routing(self.parse_locally)

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

    model: str = default_of("embedding_model")
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
    """Knobs of the pipeline itself (chunking, batching, retries, the HNSW index).

    Defaults come from the settings model (docpipe_dagster.config), so each is written once.
    """

    chunk_max_chars: int = default_of("chunk_max_chars")
    chunk_overlap_chars: int = default_of("chunk_overlap_chars")
    batch_max_files: int = default_of("batch_max_files")
    batch_max_bytes: int = default_of("batch_max_bytes")
    max_batches_per_tick: int = 5
    settle_seconds: float = default_of("settle_seconds")
    max_file_bytes: int = default_of("max_file_bytes")
    max_attempts: int = default_of("max_attempts")
    retry_base_seconds: float = default_of("retry_base_seconds")
    # An in-flight job untouched this long belongs to a dead run (retry sensor, index rebuild).
    stale_minutes: int = default_of("stale_minutes")
    index_bulk_threshold: float = default_of("index_bulk_threshold")
    index_maintenance_work_mem: int = default_of("index_maintenance_work_mem")  # bytes
    index_parallel_workers: int = default_of("index_parallel_workers")
    commit_group_rows: int = default_of("commit_group_rows")
    commit_workers: int = default_of("commit_workers")

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

    @property
    def stale_after(self) -> timedelta:
        return timedelta(minutes=self.stale_minutes)

    def index(self) -> IndexSettings:
        return IndexSettings(
            bulk_threshold=self.index_bulk_threshold,
            maintenance_work_mem_mb=max(1, self.index_maintenance_work_mem // 2**20),
            parallel_workers=self.index_parallel_workers,
            in_flight_within=self.stale_after,
            group_rows=max(1, self.commit_group_rows),
            workers=max(1, self.commit_workers),
        )


def api_key(env_name: str, base_url: str) -> str | dg.EnvVar:
    """The key as an EnvVar when set; the mocks' public key when talking to a local mock."""
    if os.environ.get(env_name, "").strip():
        return dg.EnvVar(env_name)
    if is_local_url(base_url):
        return LOCAL_MOCK_API_KEY
    # Unset for a remote service: resolving fails with Dagster's "env var not set" error.
    return dg.EnvVar(env_name)


def parser_env(current: Settings | None = None) -> dict[str, str]:
    """ParserResource fields from DOCPIPE_PARSER_API / _PARSE_TIER / _PARSE_VERSION /
    _PARSE_LOCALLY (the settings model validated them: a typo fails at load, naming the
    variable)."""
    s = current or settings()
    return {
        "api": s.parser_api,
        "tier": s.parse_tier,
        "version": s.parse_version,
        "parse_locally": s.parse_locally,
    }


def build_resources(current: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from the settings model (see .env.example for every variable)."""
    s = current or settings()
    services = service_settings(s)
    if services.storage_backend == "supabase":
        storage: StorageResource = SupabaseStorageResource(
            base_url=services.storage_base_url,
            api_key=api_key(services.storage_api_key_env, services.storage_base_url),
            bucket=services.storage_bucket,
        )
    else:
        storage = FolderStorageResource(root=str(services.storage_dir))
    native = MODEL_DIMENSIONS.get(s.embedding_model)
    dimensions = s.vector_dims
    if dimensions is None:
        raise ValueError(
            f"set DOCPIPE_EMBEDDING_DIMENSIONS for embedding model {s.embedding_model!r}"
        )
    knobs = {
        name: getattr(s, name)
        for name in PipelineSettings.model_fields
        if name in Settings.model_fields
    }
    return {
        "database": DatabaseResource(),
        "storage": storage,
        "parser": ParserResource(
            base_url=services.parser_base_url,
            api_key=api_key(services.parser_api_key_env, services.parser_base_url),
            deadline_s=s.parse_deadline_seconds,
            **parser_env(s),
        ),
        "embedder": EmbedderResource(
            base_url=services.embedder_base_url,
            api_key=api_key(services.embedder_api_key_env, services.embedder_base_url),
            model=s.embedding_model,
            dimensions=dimensions,
            send_dimensions=s.embedding_dimensions is not None and dimensions != native,
            vector_type=s.vector_type,
        ),
        "pipeline_settings": PipelineSettings(**knobs),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
