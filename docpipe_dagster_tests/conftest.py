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
    yield url
    server.stop()


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
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
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
