"""Fixtures for the stage functions called directly: a real Store on a fresh database, a
storage folder, and the session's mock embedder. No Dagster anywhere."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from docpipe_dagster.clients.embeddings import EmbeddingsClient
from docpipe_dagster.clients.parsing import routing
from docpipe_dagster.clients.storage.folder import FolderStorage
from docpipe_dagster.core.chunking import ChunkingConfig
from docpipe_dagster.pipeline.chunk import chunk_documents
from docpipe_dagster.pipeline.commit import IndexSettings, commit_documents
from docpipe_dagster.pipeline.embed import embed_chunks
from docpipe_dagster.pipeline.intake import IntakeConfig, scan_storage
from docpipe_dagster.pipeline.report import StageReport
from docpipe_dagster.store.queries import ParsedJob, Store, VectorSpace
from docpipe_dagster_tests.support import MockServer
from docpipe_dagster_tests.support.rows import TableReads

PROFILE = "test-parser"  # the parse-cache profile the tests write and chunk_documents reads
CHUNKING = ChunkingConfig(max_chars=200, overlap_chars=0)
# A small space keeps vectors short; the mock shortens v3 vectors as the real API does.
SPACE = VectorSpace("text-embedding-3-small", 64)


@dataclass
class Stages(TableReads):
    """One test's store, storage folder and database, with helpers to set a stage's input up."""

    store: Store
    storage: FolderStorage
    database_url: str
    _clock: float = field(default_factory=lambda: time.time() - 3600)

    def write(self, key: str, data: str | bytes) -> None:
        """A file in storage, settled (its mtime in the past, unique per write)."""
        path = self.storage.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self._clock += 1.0
        os.utime(path, (self._clock, self._clock))

    def register(self) -> str:
        """One intake scan; the key of the one batch it opened."""
        result = scan_storage(self.storage, self.store, IntakeConfig(settle_seconds=0.0))
        assert len(result.batches) == 1, result.summary()
        return next(iter(result.batches))

    def parsed(self, markdown: dict[str, str]) -> str:
        """Files registered and parsed (storage key -> markdown), as the parse stage leaves
        them: the markdown in the parse cache, the jobs `parsed`. Returns the batch key."""
        for key, text in markdown.items():
            self.write(key, f"source of {key}: {text}")
        batch = self.register()
        jobs = self.store.jobs_in_batch(batch)
        saved = self.store.save_parses(
            [ParsedJob(j, PROFILE, markdown[j.storage_key], 1, None, False) for j in jobs]
        )
        assert len(saved) == len(markdown)
        return batch

    def chunk(self, batch: str) -> StageReport:
        return chunk_documents(
            self.store, batch, profile=PROFILE, config=CHUNKING, routes=routing("none")
        )

    def embed(
        self,
        batch: str,
        embedder: MockServer,
        *,
        max_attempts: int = 3,
        space: VectorSpace = SPACE,
        part_size: int = 256,
    ) -> StageReport:
        """embed_chunks against the mock, with a client as the embed resource makes one."""

        async def run() -> StageReport:
            async with EmbeddingsClient(
                f"{embedder.base_url}/v1",
                embedder.api_key or "",
                space.model,
                space.dims,
                max_attempts=max_attempts,
            ) as client:
                return await embed_chunks(
                    self.store,
                    client,
                    batch,
                    space=space,
                    max_attempts=max_attempts,
                    retry_base_seconds=30.0,
                    part_size=part_size,
                )

        return asyncio.run(run())

    def events(self, job_id: uuid.UUID) -> list[tuple[str, str]]:
        rows = self.rows(
            "SELECT stage, event_type FROM {S}.events WHERE job_id = %s ORDER BY event_id",
            (job_id,),
        )
        return [(r["stage"], r["event_type"]) for r in rows]


def through_embed(stages: Stages, embedder: MockServer, markdown: dict[str, str]) -> str:
    batch = stages.parsed(markdown)
    stages.chunk(batch)
    assert stages.embed(batch, embedder).failed == 0
    return batch


def commit(stages: Stages, batch: str) -> StageReport:
    return commit_documents(stages.store, batch, space=SPACE, max_attempts=3, index=IndexSettings())


@pytest.fixture
def stages(database_url: str, tmp_path: Path) -> Iterator[Stages]:
    root = tmp_path / "storage"
    root.mkdir()
    store = Store.open(database_url, max_size=4)
    try:
        yield Stages(store, FolderStorage(root), database_url)
    finally:
        store.close()
