"""Fixtures for the pipeline's tests: real Postgres, real HTTP to the mocks, folder storage.

`pipeline` wires one test: env vars pointing at the session's mocks and the test's fresh
database, resources from `build_resources()`, an ephemeral Dagster instance and helpers to
write files into the storage folder and read state back from the store.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from docpipe_dagster.clients.embeddings import EmbeddingsClient
from docpipe_dagster.defs.intake.sensors import storage_intake_sensor
from docpipe_dagster.defs.partitions import BATCHES
from docpipe_dagster.defs.resources import PipelineSettings, build_resources
from docpipe_dagster.runner import BatchOutcome, run_batch
from docpipe_dagster.store.pool import connect
from docpipe_dagster.store.queries import Store, VectorSpace
from docpipe_dagster.store.search import SearchResult, search
from docpipe_dagster_tests.support import MockServer
from docpipe_dagster_tests.support.env import apply_env, pipeline_env
from docpipe_dagster_tests.support.rows import TableReads


@dataclass
class Pipeline(TableReads):
    """One test's pipeline: storage folder, resources, instance, database and mocks."""

    database_url: str
    storage_dir: Path
    resources: dict[str, Any]
    instance: dg.DagsterInstance
    parser: MockServer
    embedder: MockServer
    _clock: float = field(default_factory=lambda: time.time() - 3600)

    # --- storage -----------------------------------------------------------------------------
    def write(self, key: str, data: bytes | str, *, mtime: float | None = None) -> Path:
        """Write a file; its mtime is in the past (settled) and unique unless given."""
        path = self.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        if mtime is None:
            self._clock += 1.0
            mtime = self._clock
        os.utime(path, (mtime, mtime))
        return path

    def delete(self, key: str) -> None:
        (self.storage_dir / key).unlink()

    # --- resources ---------------------------------------------------------------------------
    def with_settings(self, **overrides: Any) -> dict[str, Any]:
        """The resources with PipelineSettings fields overridden."""
        fields = {"settle_seconds": 0.0, **overrides}
        return {**self.resources, "pipeline_settings": PipelineSettings(**fields)}

    def parse_remotely(self) -> None:
        """DOCPIPE_PARSE_LOCALLY=none from now on: text-like types (md, csv, html) go to the
        parser mock too, for tests about the parser's behaviour."""
        parser = self.resources["parser"]
        fields = {name: getattr(parser, name) for name in type(parser).model_fields}
        self.resources = {
            **self.resources,
            "parser": type(parser)(**fields | {"parse_locally": "none"}),
        }

    def run(self, batch_key: str, resources: dict[str, Any] | None = None) -> BatchOutcome:
        return run_batch(batch_key, resources=resources or self.resources, instance=self.instance)

    def check_results(self, run_id: str) -> dict[str, bool]:
        """Asset check name -> passed, for every check evaluated in the run."""
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        results: dict[str, bool] = {}
        for record in records:
            event = record.event_log_entry.dagster_event
            assert event is not None
            evaluation = event.asset_check_evaluation_data
            results[evaluation.check_name] = evaluation.passed
        return results

    def materializations(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Asset name -> its materialization metadata (raw values), for the run."""
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        found: dict[str, dict[str, Any]] = {}
        for record in records:
            event = record.event_log_entry.dagster_event
            assert event is not None and event.asset_key is not None
            metadata = event.step_materialization_data.materialization.metadata
            found[event.asset_key.to_user_string()] = {k: v.value for k, v in metadata.items()}
        return found

    def calls(self) -> tuple[int, int]:
        """HTTP requests the parser and the embedder mocks have served (since reset)."""
        return self.parser.stats()["total"], self.embedder.stats()["total"]

    # --- database ----------------------------------------------------------------------------
    @contextmanager
    def store(self) -> Iterator[Store]:
        store = Store.open(self.database_url, max_size=2)
        try:
            yield store
        finally:
            store.close()

    def space(self) -> VectorSpace:
        return self.resources["embedder"].space()

    def search(self, text: str, k: int = 5) -> list[SearchResult]:
        """Top-k chunks by vector through the product's SQL search (upload_pipeline.search)."""
        embedder = self.resources["embedder"]

        async def embed() -> list[float]:
            async with EmbeddingsClient(
                self.embedder.base_url + "/v1", self.embedder.api_key or "", embedder.model
            ) as client:
                batch = await client.embed([text])
            vector = batch.vectors[0]
            assert vector is not None
            return vector

        vector = asyncio.run(embed())
        with connect(self.database_url, autocommit=True) as conn:
            return search(conn, text, vector, k=k, mode="vector", space=self.space())


def tick(
    pipeline: Pipeline, cursor: str | None, resources: dict[str, Any] | None = None
) -> dg.SensorResult:
    """One evaluation of storage_intake_sensor."""
    with dg.build_sensor_context(
        cursor=cursor, resources=resources or pipeline.resources, instance=pipeline.instance
    ) as context:
        result = storage_intake_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def batch_keys(result: dg.SensorResult) -> list[str]:
    """The batches a tick asked to run, checked for shape on the way."""
    keys = []
    for request in result.run_requests or []:
        assert request.partition_key is not None
        assert request.partition_key == request.run_key
        keys.append(request.partition_key)
    added = [
        key
        for request in result.dynamic_partitions_requests or []
        if isinstance(request, dg.AddDynamicPartitionsRequest)
        for key in request.partition_keys or []
    ]
    for request in result.dynamic_partitions_requests or []:
        assert request.partitions_def_name == BATCHES
    assert sorted(added) == sorted(keys), "every run's batch must be added as a partition"
    return keys


@contextmanager
def wired_pipeline(
    monkeypatch: pytest.MonkeyPatch,
    storage_dir: Path,
    database_url: str,
    parser: MockServer,
    embedder: MockServer,
    **env: str,
) -> Iterator[Pipeline]:
    """The environment pointed at this test's database, folder and mocks (reset); a Pipeline
    on it. `env` adds or overrides variables (e.g. DOCPIPE_EMBEDDING_DIMENSIONS, secrets)."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    apply_env(monkeypatch, pipeline_env(database_url, storage_dir, parser, embedder, **env))
    resources = build_resources()
    assert isinstance(resources["pipeline_settings"], PipelineSettings)
    for mock in (parser, embedder):
        mock.reset()
        mock.set_latency(0.0, 0.0)
    with dg.DagsterInstance.ephemeral() as instance:
        yield Pipeline(
            database_url=database_url,
            storage_dir=storage_dir,
            resources=resources,
            instance=instance,
            parser=parser,
            embedder=embedder,
        )


@pytest.fixture
def pipeline(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
) -> Iterator[Pipeline]:
    with wired_pipeline(
        monkeypatch, tmp_path / "storage", database_url, llamaparse_mock, openai_mock
    ) as wired:
        yield wired
