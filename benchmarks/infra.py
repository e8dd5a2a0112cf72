"""The benchmark's own servers: an embedded Postgres in a temp home, mocks on free ports.

Everything binds 127.0.0.1 (the embedded Postgres listens on a unix socket only), every
process is started in its own process group and stopped by the `Infra` context manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql

from docpipe_dagster.config import LOCAL_MOCK_API_KEY
from docpipe_dagster.local.mocks import start_mocks
from docpipe_dagster.local.ports import (  # noqa: F401 (re-exported)
    free_port,
    free_ports,
    named_free_ports,
)
from docpipe_dagster.store.migrate import migrate
from docpipe_dagster.store.server import (
    database_name,
    ensure_database_exists,
    replace_database,
    start_embedded,
    stop_started_here,
    stop_with_this_process,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "docpipe_bench_template"


@contextlib.contextmanager
def embedded_postgres(home: Path) -> Iterator[str]:
    """An embedded server in `home` for this benchmark, as a one-off command starts one:
    stopped on the way out, and by docpipe's lifeline if the benchmark is killed first.
    Yields the URL of its `postgres` database."""
    stop_with_this_process()
    target = start_embedded(home)
    try:
        yield replace_database(target.url, "postgres")
    finally:
        stop_started_here()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for processes the benchmark starts: none of the user's docpipe,
    Dagster or API settings leak in (only what the benchmark sets)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCPIPE_", "DAGSTER_", "LLAMA", "OPENAI_", "SUPABASE_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    # As on a user's machine: the first run writes __pycache__, later ones load it. (Some
    # sandboxes set this; then an editable checkout recompiles every module each process,
    # while the peers' site-packages were compiled by pip at install time.)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and its whole group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group


class Mock:
    """One mock service on a free 127.0.0.1 port (local/mocks.py `start_mocks`)."""

    def __init__(self, service: str, workdir: Path, **settings: Any) -> None:
        self.service = service
        self.log_path = workdir / f"mock-{service}.log"
        self.mocks = start_mocks(
            [service],
            env=child_env(),
            log_path=self.log_path,
            api_key=LOCAL_MOCK_API_KEY,
            **settings,
        )
        self.proc = self.mocks.process
        self.port = self.mocks.ports[service]
        self.base_url = self.mocks.url(service)
        self.http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def reset(self) -> None:
        """Counters and the mock's job table cleared (the parser mock caches by content)."""
        self.http.post("/_mock/reset").raise_for_status()

    def set_latency(self, latency_ms: float, per_input_ms: float = 0.0) -> None:
        """`latency_ms` per request, plus (the embedder) `per_input_ms` per input it embeds."""
        body = {"latency_ms": latency_ms, "jitter_ms": 0.0, "per_input_ms": per_input_ms}
        self.http.post("/_mock/latency", json=body).raise_for_status()

    def stats(self) -> dict:
        return self.http.get("/_mock/stats").raise_for_status().json()

    def stop(self) -> None:
        self.http.close()
        self.mocks.stop(grace_s=10.0)


class Infra:
    """Postgres (embedded in a temp home, or DOCPIPE_DATABASE_URL's server) and the mocks."""

    def __init__(self, workdir: Path | None = None, database_url: str | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="docpipe-bench-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.external_url = database_url
        self._server = contextlib.ExitStack()  # the embedded server, when there is one
        self.server_url = ""
        self.parser: Mock | None = None
        self.embedder: Mock | None = None
        self._databases: list[str] = []

    def __enter__(self) -> Infra:
        try:
            if self.external_url:
                self.server_url = self.external_url
            else:
                home = self.workdir / "home"
                self.server_url = self._server.enter_context(embedded_postgres(home))
            ensure_database_exists(self.server_url, TEMPLATE_DB)
            migrate(replace_database(self.server_url, TEMPLATE_DB))
            self.parser = Mock("llamaparse", self.workdir, pending_seconds=0.0)
            self.embedder = Mock("openai", self.workdir)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for mock in (self.parser, self.embedder):
            if mock is not None:
                with contextlib.suppress(Exception):
                    mock.stop()
        if self.external_url:
            for name in list(self._databases):
                with contextlib.suppress(Exception):
                    self.drop_database(name)
            with contextlib.suppress(Exception):
                self.drop_database(TEMPLATE_DB)
        with contextlib.suppress(Exception):
            self._server.close()
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()

    def postgres_pids(self) -> list[int]:
        """The embedded server's processes (postmaster and children), for RSS; none for an
        external server."""
        pidfile = self.workdir / "home" / "pgdata" / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
            root = psutil.Process(pid)
            return [pid] + [c.pid for c in root.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def new_database(self, label: str) -> str:
        """A fresh, migrated database (a copy of the migrated template)."""
        name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
                )
            )
        self._databases.append(name)
        return replace_database(self.server_url, name)

    def drop_database(self, name_or_url: str) -> None:
        name = database_name(name_or_url) if "/" in name_or_url else name_or_url
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self._databases:
            self._databases.remove(name)

    def reset_mocks(
        self,
        parser_latency_ms: float = 0.0,
        embedder_latency_ms: float = 0.0,
        embedder_per_input_ms: float = 0.0,
    ) -> None:
        assert self.parser and self.embedder
        self.parser.reset()
        self.parser.set_latency(parser_latency_ms)
        self.embedder.reset()
        self.embedder.set_latency(embedder_latency_ms, embedder_per_input_ms)

    def mock_calls(self) -> dict[str, int]:
        assert self.parser and self.embedder
        parser = self.parser.stats()
        embedder = self.embedder.stats()
        return {
            "parser_requests": parser["total"],
            "parser_uploads": parser["by_route"].get("POST /api/v2/parse/upload", 0)
            + parser["by_route"].get("POST /api/parsing/upload", 0),
            "embedder_requests": embedder["total"],
        }


class RssSampler:
    """Peak RSS of a process tree (the process and its children), sampled every 50 ms."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
