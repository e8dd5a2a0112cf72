"""Fixtures for the fault tests (test_fault_matrix.py, test_crash_recovery.py).

Everything here is prefixed `fault_`: other reliability tests share this folder. The rig
reuses the pipeline tests' `Pipeline` helper (docpipe_dagster_tests/defs/conftest.py) with
its own mocks and resources whose clients retry fast (tiny backoff, three attempts), so a
fault that outlasts the client's retries costs milliseconds, not the production backoff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner

from docpipe_dagster.defs.intake.sensors import retry_sensor
from docpipe_dagster.defs.resources import (
    DatabaseResource,
    EmbedderResource,
    FolderStorageResource,
    ParserResource,
    PipelineSettings,
)
from docpipe_dagster.runner import BatchOutcome, ingest_pending, run_batch
from docpipe_dagster.store.invariants import InvariantReport, check_invariants
from docpipe_dagster_mocks.llamaparse.app import job_id_for
from docpipe_dagster_mocks.llamaparse.v2 import v2_job_id
from docpipe_dagster_tests.defs.conftest import Pipeline
from docpipe_dagster_tests.support import MockServer
from docpipe_dagster_tests.support.env import apply_env, pipeline_env

# Client-side retries per HTTP request in these tests (the production default is 5-6).
FAULT_CLIENT_ATTEMPTS = 3
FAULT_MAX_ATTEMPTS = 3  # per document (PipelineSettings.max_attempts)


@pytest.fixture
def fault_parser_mock(llamaparse_mock: MockServer) -> MockServer:
    return llamaparse_mock  # the session mock, reset before each test by the root conftest


@pytest.fixture
def fault_embedder_mock(openai_mock: MockServer) -> MockServer:
    return openai_mock


class FaultRig(Pipeline):
    """A Pipeline with fast-retrying clients, plus the fault tests' recurring steps."""

    # --- resources -----------------------------------------------------------------------
    def parser_resource(self, **overrides: Any) -> ParserResource:
        fields: dict[str, Any] = {
            "base_url": self.parser.base_url,
            "api_key": self.parser.api_key or "",
            "poll_interval_s": 0.05,
            "deadline_s": 30.0,
            "timeout_s": 5.0,
            "retry_max_attempts": FAULT_CLIENT_ATTEMPTS,
            "retry_base_delay_s": 0.01,
            # The faults aim at the parser: md and html go to it (text-like types are parsed
            # in-process by default; .txt, which LlamaParse does not read, stays local).
            "parse_locally": "none",
            **overrides,
        }
        return ParserResource(**fields)

    def embedder_resource(self, **overrides: Any) -> EmbedderResource:
        fields: dict[str, Any] = {
            "base_url": self.embedder.base_url + "/v1",
            "api_key": self.embedder.api_key or "",
            "timeout_s": 5.0,
            "retry_max_attempts": FAULT_CLIENT_ATTEMPTS,
            "retry_base_delay_s": 0.01,
            **overrides,
        }
        return EmbedderResource(**fields)

    def with_clients(
        self, parser: dict[str, Any] | None = None, embedder: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The rig's resources with parser/embedder fields overridden."""
        return {
            **self.resources,
            "parser": self.parser_resource(**(parser or {})),
            "embedder": self.embedder_resource(**(embedder or {})),
        }

    # --- running -------------------------------------------------------------------------
    def ingest(self, resources: dict[str, Any] | None = None) -> BatchOutcome:
        """Register what storage holds and run it: exactly one batch is expected."""
        outcomes = ingest_pending(resources=resources or self.resources, instance=self.instance)
        assert len(outcomes) == 1, outcomes
        (outcome,) = outcomes
        assert outcome.success, "document failures must not fail the run"
        return outcome

    def retry_due(self, resources: dict[str, Any] | None = None) -> list[BatchOutcome]:
        """One retry_sensor tick (backoff 0: every transient failure is due), then its runs."""
        resources = resources or self.resources
        settings = resources["pipeline_settings"]
        assert isinstance(settings, PipelineSettings) and settings.retry_base_seconds == 0
        with dg.build_sensor_context(resources=resources, instance=self.instance) as context:
            result = retry_sensor(context)
        assert isinstance(result, dg.SensorResult)
        outcomes = []
        for request in result.run_requests or []:
            assert request.partition_key is not None
            outcomes.append(
                run_batch(request.partition_key, resources=resources, instance=self.instance)
            )
        return outcomes

    # --- the mock parser's job ids ------------------------------------------------------
    def parse_job_path(self, key: str) -> str:
        """The mock's status path of the parse job for the file at `key` (a path filter
        for faults that hit one document only: its upload path is shared, this is not),
        for the API the rig's parser resource speaks."""
        content = (self.storage_dir / key).read_bytes()
        name = key.rsplit("/", 1)[-1]
        parser = self.resources["parser"]
        if parser.api == "v1":
            return f"/api/parsing/job/{job_id_for(content, name, {})}"
        configuration = {"tier": parser.tier, "version": parser.version}
        return f"/api/v2/parse/{v2_job_id(content, name, configuration)}"

    # --- checks --------------------------------------------------------------------------
    def invariants(self, live_batches: set[str] | None = None) -> InvariantReport:
        with psycopg.connect(self.database_url) as conn:
            return check_invariants(
                conn, live_batches=set() if live_batches is None else live_batches
            )

    def failed_event_count(self, key: str) -> int:
        (row,) = self.rows(
            "SELECT count(*) AS n FROM {S}.events e JOIN {S}.upload_jobs j USING (job_id)"
            " WHERE j.storage_key = %s AND e.event_type = 'failed'",
            (key,),
        )
        return row["n"]

    def assert_all_completed_and_consistent(self, keys: set[str]) -> None:
        """Every document completed, the invariants hold with nothing running, no chunk is
        stored twice, vectors = chunks, buffers are empty, and `docpipe verify` passes."""
        jobs = self.jobs()
        assert set(jobs) == keys
        states = {key: (j["state"], j["failure_reason"]) for key, j in jobs.items()}
        assert states == {key: ("completed", None) for key in keys}
        report = self.invariants()
        assert report.ok, report.render()
        (totals,) = self.rows(
            "SELECT count(*) AS chunks, count(DISTINCT chunk_id) AS ids,"
            " count(DISTINCT (document_id, chunk_index)) AS positions,"
            " count(*) FILTER (WHERE vector_dims(embedding) = dims AND dims = %s) AS vectors,"
            " (SELECT coalesce(sum(chunk_count), 0) FROM {S}.upload_jobs"
            "  WHERE state = 'completed') AS expected,"
            " (SELECT count(*) FROM {S}.document_chunk_buffer) AS chunk_buffer,"
            " (SELECT count(*) FROM {S}.document_vector_buffer) AS vector_buffer"
            " FROM {S}.document_chunks",
            (self.space().dims,),
        )
        assert totals["chunks"] > 0
        assert totals["chunks"] == totals["ids"] == totals["positions"], totals  # no duplicates
        assert totals["vectors"] == totals["chunks"] == totals["expected"], totals
        assert (totals["chunk_buffer"], totals["vector_buffer"]) == (0, 0), totals
        self.assert_verify_passes()

    def assert_verify_passes(self) -> None:
        """`docpipe verify --json` against this database exits 0."""
        from docpipe_dagster.cli import main

        result = CliRunner().invoke(
            main,
            ["verify", "--json"],
            env={"DOCPIPE_DATABASE_URL": self.database_url},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["ok"] is True


def fault_environment(
    database_url: str,
    storage_dir: Path,
    parser: MockServer,
    embedder: MockServer,
) -> dict[str, str]:
    """The variables build_resources() (in this process or a child) reads for one test."""
    return pipeline_env(
        database_url,
        storage_dir,
        parser,
        embedder,
        DOCPIPE_RETRY_BASE_SECONDS="0",
        DOCPIPE_MAX_ATTEMPTS=str(FAULT_MAX_ATTEMPTS),
        DOCPIPE_PARSE_LOCALLY="none",  # md/html to the parser, as parser_resource() does
    )


def fault_rig_for(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    storage_dir: Path,
    parser: MockServer,
    embedder: MockServer,
    instance: dg.DagsterInstance,
) -> FaultRig:
    for mock in (parser, embedder):
        mock.reset()
        mock.set_latency(0.0, 0.0)
    storage_dir.mkdir(parents=True, exist_ok=True)
    apply_env(monkeypatch, fault_environment(database_url, storage_dir, parser, embedder))
    rig = FaultRig(
        database_url=database_url,
        storage_dir=storage_dir,
        resources={},
        instance=instance,
        parser=parser,
        embedder=embedder,
    )
    rig.resources = {
        "database": DatabaseResource(max_connections=4),
        "storage": FolderStorageResource(root=str(storage_dir)),
        "parser": rig.parser_resource(),
        "embedder": rig.embedder_resource(),
        "pipeline_settings": PipelineSettings(
            settle_seconds=0.0, retry_base_seconds=0.0, max_attempts=FAULT_MAX_ATTEMPTS
        ),
    }
    return rig


@pytest.fixture
def fault_rig(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    fault_parser_mock: MockServer,
    fault_embedder_mock: MockServer,
) -> Iterator[FaultRig]:
    """One fault test's pipeline: fresh database, storage folder, reset mocks, ephemeral
    Dagster instance, clients that retry three times with ~10 ms backoff."""
    with dg.DagsterInstance.ephemeral() as instance:
        rig = fault_rig_for(
            monkeypatch,
            database_url,
            tmp_path / "storage",
            fault_parser_mock,
            fault_embedder_mock,
            instance,
        )
        yield rig
    for mock in (fault_parser_mock, fault_embedder_mock):
        mock.clear_faults()
        mock.set_latency(0.0, 0.0)


def fault_child_env(extra: dict[str, str]) -> dict[str, str]:
    """Environment for a pipeline subprocess: this one's, minus Dagster home and mock knobs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DAGSTER_HOME" and not k.startswith("DOCPIPE_MOCK_")
    }
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- bad input, load and security tests (test_bad_inputs.py, test_load.py, test_security.py) --
# Prefixed `corpus_`; the corpus and the wiring helper live in reliability/corpus.py.


@pytest.fixture(scope="session")
def corpus_mocks(
    llamaparse_mock: MockServer, openai_mock: MockServer
) -> tuple[MockServer, MockServer]:
    """A parser and an embedder mock (the well-known local key) for the corpus tests."""
    return llamaparse_mock, openai_mock


@pytest.fixture
def corpus_pipeline(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    corpus_mocks: tuple[MockServer, MockServer],
) -> Iterator[Pipeline]:
    """A Pipeline over a fresh database and storage folder. Embeddings are 256-dimensional
    (a `dimensions` request to the mock): HNSW inserts are several times faster than at
    1,536, and the mock's hashed vectors still rank the right document first."""
    from docpipe_dagster_tests.reliability.corpus import wired_pipeline

    parser, embedder = corpus_mocks
    with wired_pipeline(
        monkeypatch,
        tmp_path / "storage",
        database_url,
        parser,
        embedder,
        DOCPIPE_EMBEDDING_DIMENSIONS="256",
    ) as pipeline:
        yield pipeline
