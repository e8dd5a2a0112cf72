"""Fixtures: mock services running as real subprocesses on free ports.

Each mock fixture is session-scoped (one process per session) and reset (stats, faults,
latency) before every test that uses it. Append further mock fixtures below.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from docpipe_dagster_tests.support import MockServer, start_mock


@pytest.fixture(scope="session")
def openai_mock() -> Iterator[MockServer]:
    server = start_mock("openai")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_openai_mock(request: pytest.FixtureRequest) -> None:
    # Only for tests that use the mock, so other tests don't start a process.
    if "openai_mock" in request.fixturenames:
        server: MockServer = request.getfixturevalue("openai_mock")
        server.reset()
        server.set_latency(0.0, 0.0)


# --- llamaparse and storage mocks --------------------------------------------------------------


@pytest.fixture(scope="session")
def llamaparse_mock() -> Iterator[MockServer]:
    # Jobs finish at once unless a test slows them via POST /_mock/pending (reset restores 0).
    server = start_mock("llamaparse", webhook_secret="test-webhook-secret", pending_seconds=0.0)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def storage_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    # Objects persist for the session: tests isolate themselves with their own bucket names.
    data_dir = tmp_path_factory.mktemp("mock-storage")
    server = start_mock("storage", data_dir=str(data_dir))
    server.data_dir = data_dir  # type: ignore[attr-defined]  # for tests that look at the disk
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_parse_and_storage_mocks(request: pytest.FixtureRequest) -> None:
    for name in ("llamaparse_mock", "storage_mock"):
        if name in request.fixturenames:
            server: MockServer = request.getfixturevalue(name)
            server.reset()
            server.set_latency(0.0, 0.0)
