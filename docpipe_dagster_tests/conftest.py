"""Session-wide fixtures: one real embedded Postgres per test session, a fresh database per test.

The schema is migrated once into a template database; each test gets a copy made with
CREATE DATABASE ... TEMPLATE, which takes milliseconds and isolates tests completely.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from docpipe_dagster.store.migrate import migrate
from docpipe_dagster.store.server import database_name, ensure_database_exists, replace_database
from docpipe_dagster_tests.support import MockServer, start_mock

TEMPLATE_DB = "docpipe_test_template"


@pytest.fixture(scope="session")
def docpipe_test_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An isolated DOCPIPE_HOME so tests never touch the checkout's .docpipe/."""
    home = tmp_path_factory.mktemp("docpipe-home")
    os.environ["DOCPIPE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def pg_server_url(docpipe_test_home: Path) -> Iterator[str]:
    """URL of the session's embedded server (database `postgres`)."""
    from docpipe_dagster.store.server import _embedded_server

    pgdata = docpipe_test_home / "pgdata"
    server = _embedded_server(pgdata)
    url = server.get_uri("postgres")
    _no_durability(url)
    yield url
    server.stop()


def _no_durability(server_url: str) -> None:
    """The session's data is thrown away: no fsync. Each test's CREATE DATABASE and DROP
    DATABASE then stop waiting on the disk (a checkpoint each), a fixed cost of every test
    with a database. Process kills keep every committed row (the OS holds the writes); only
    an OS crash could lose them, and then the session is gone anyway."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def template_database_url(pg_server_url: str) -> str:
    ensure_database_exists(pg_server_url, TEMPLATE_DB)
    url = replace_database(pg_server_url, TEMPLATE_DB)
    migrate(url)
    return url


def _create_database(server_url: str, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            # FILE_COPY copies the template's files at once; the default (WAL_LOG) writes
            # every page through the WAL, slower for a database this small.
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)
    return replace_database(server_url, name)


def _drop_database(server_url: str, url: str) -> None:
    name = database_name(url)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(pg_server_url: str, template_database_url: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test."""
    url = _create_database(pg_server_url, TEMPLATE_DB)
    yield url
    _drop_database(pg_server_url, url)


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with nothing applied (for migration tests)."""
    url = _create_database(pg_server_url, None)
    yield url
    _drop_database(pg_server_url, url)


# --- mock services: real subprocesses on free loopback ports, one of each per session ------
# Reset (stats, faults, latency) before every test that uses one, so tests stay isolated.
WEBHOOK_SECRET = "test-webhook-secret"
MOCK_FIXTURES = ("llamaparse_mock", "openai_mock", "storage_mock")


@pytest.fixture(scope="session")
def openai_mock() -> Iterator[MockServer]:
    server = start_mock("openai")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llamaparse_mock() -> Iterator[MockServer]:
    # Jobs finish at once unless a test slows them via POST /_mock/pending (reset restores 0).
    server = start_mock("llamaparse", webhook_secret=WEBHOOK_SECRET, pending_seconds=0.0)
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
def _reset_used_mocks(request: pytest.FixtureRequest) -> None:
    # Only for tests that use a mock, so other tests don't start a process.
    for name in MOCK_FIXTURES:
        if name in request.fixturenames:
            server: MockServer = request.getfixturevalue(name)
            server.reset()
            server.set_latency(0.0, 0.0)
