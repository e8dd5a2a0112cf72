"""The embedded server keeps its data across restarts; an external URL is honoured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from docpipe_dagster.store.server import database_name, redact_url, resolve_database


def _docpipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docpipe_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    env["DOCPIPE_HOME"] = str(tmp_path / "home")
    return env


@pytest.mark.slow  # starts and stops a Postgres server twice
def test_embedded_server_restarts_with_data_intact(isolated_env: dict[str, str]) -> None:
    started = _docpipe("db", "start", env=isolated_env)
    assert started.returncode == 0, started.stderr
    assert (
        "migrations applied now: 1" in started.stdout or "migrations applied now:" in started.stdout
    )
    url = _docpipe("db", "url", env=isolated_env).stdout.strip()
    assert database_name(url) == "docpipe"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.survivor (note text)")
            conn.execute("INSERT INTO public.survivor VALUES ('still here')")

        stopped = _docpipe("db", "stop", env=isolated_env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=3).close()

        again = _docpipe("db", "start", env=isolated_env)
        assert again.returncode == 0, again.stderr
        assert "migrations applied now: 0" in again.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT note FROM public.survivor").fetchone() == ("still here",)
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='upload_pipeline'"
            ).fetchone()[0]
            assert tables >= 8
    finally:
        _docpipe("db", "stop", env=isolated_env)


def test_external_database_url_is_honoured(
    isolated_env: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_env["DOCPIPE_DATABASE_URL"] = database_url
    printed = _docpipe("db", "url", env=isolated_env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == database_url
    migrated = _docpipe("db", "migrate", env=isolated_env)
    assert migrated.returncode == 0 and "up to date" in migrated.stdout, migrated.stderr
    # no embedded server was started for this home
    assert not (Path(isolated_env["DOCPIPE_HOME"]) / "pgdata").exists()

    monkeypatch.setenv("DOCPIPE_DATABASE_URL", database_url)
    monkeypatch.delenv("DOCPIPE_DAGSTER_DATABASE_URL", raising=False)
    target = resolve_database()
    assert target.url == database_url and not target.embedded
    assert database_name(target.dagster_url) == f"{database_name(database_url)}_dagster"
    assert target.dagster_url.startswith("postgresql+psycopg2://")  # what dagster-postgres needs
    with psycopg.connect(target.dagster_url.replace("+psycopg2", "", 1)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_redact_url_hides_the_password() -> None:
    assert (
        redact_url("postgresql://app:s3cret@db.example:5432/x")
        == "postgresql://app:***@db.example:5432/x"
    )
    assert (
        redact_url("postgresql://postgres:@/docpipe?host=/tmp/x")
        == "postgresql://postgres:@/docpipe?host=/tmp/x"
    )
