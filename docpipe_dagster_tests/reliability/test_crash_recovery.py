"""Crashes, not errors: the database restarts under a run, the run's process is SIGKILLed.

The run under test is a real child process (`ingest_pending`, what `docpipe ingest --wait`
runs) against the real mocks and a real Postgres. What must hold: the database is never
half-written (a document is searchable completely or not at all, in one version), and a
re-run repairs what the crash interrupted without paying the services twice.

To crash *inside* a commit every time, not when timing happens to allow it, the test
database gets a trigger on the commit's last write (its `commit/completed` event) that
sleeps while a flag says so (a slow disk, in effect): the commit transaction then sits
with its chunks inserted, its buffers emptied and its jobs marked completed, just before
COMMIT, for as long as the test needs. `client_connection_check_interval` lets the server
notice a killed client within 100 ms instead of at the end of the sleep.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.migrate import migrate
from docpipe_dagster.store.queries import S
from docpipe_dagster.store.server import (
    _embedded_server,
    database_name,
    ensure_database_exists,
    replace_database,
)
from docpipe_dagster_tests.reliability.conftest import (
    FaultRig,
    fault_child_env,
    fault_environment,
    fault_rig_for,
)
from docpipe_dagster_tests.support import MockServer
from docpipe_dagster_tests.support.mock_servers import REPO_ROOT

# A fault that makes the pipeline hang must fail the test, not stall the suite.
pytestmark = pytest.mark.timeout(120)

UPLOAD_ROUTE = "POST /api/v2/parse/upload"
IN_FLIGHT = {"uploaded", "parsing", "parsed", "chunked", "embedded"}
T = TypeVar("T")

# The child: what `docpipe ingest --wait` does after uploading, in its own process.
CHILD = textwrap.dedent(
    """
    import json
    from docpipe_dagster.runner import ingest_pending

    outcomes = ingest_pending(log_level="ERROR")
    print("OUTCOMES " + json.dumps([[o.batch_key, o.success] for o in outcomes]), flush=True)
    """
)

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "an", "el", "dor", "quin")


def document_text(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    lines = [f"# Field notes {seed}", ""]
    for n in range(sentences):
        words = " ".join("".join(rng.choices(SYLLABLES, k=3)) for _ in range(14))
        lines.append(f"Entry {seed}.{n}: {words}.")
        if n % 4 == 3:
            lines.append("")
    return "\n".join(lines) + "\n"


# --- the child run ----------------------------------------------------------------------


@dataclass
class Child:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL the child's process group (it leads its own: nothing else is in it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout_s: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run hung:\n{self.output()}")


def start_child(tmp_path: Path, env: dict[str, str]) -> Child:
    log = tmp_path / "child.log"
    (tmp_path / "child-tmp").mkdir(exist_ok=True)  # Dagster's temp files stay in the test
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=REPO_ROOT,
            env=fault_child_env({**env, "TMPDIR": str(tmp_path / "child-tmp")}),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Child(proc, log)


def wait_for(
    child: Child, what: str, condition: Callable[[], T | None], timeout_s: float = 60.0
) -> T:
    """Poll `condition` until it returns something truthy (returned); fail if the run ends
    first or time is up."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if child.proc.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{child.output()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no {what} within {timeout_s} s:\n{child.output()}")
        time.sleep(0.01)
    return found


def states(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(f"SELECT state, count(*) FROM {S}.upload_jobs GROUP BY state")
        return dict(rows.fetchall())


# --- a commit that takes as long as the test wants -------------------------------------------


@dataclass
class SlowCommit:
    """A trigger that sleeps `seconds` after a commit wrote its `commit/completed` event."""

    url: str

    def install(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.fault_slow_commit (seconds float NOT NULL)")
            conn.execute("INSERT INTO public.fault_slow_commit VALUES (0)")
            conn.execute(
                """CREATE FUNCTION public.fault_slow_commit() RETURNS trigger
                   LANGUAGE plpgsql AS $$
                   BEGIN
                       PERFORM pg_sleep(seconds) FROM public.fault_slow_commit
                       WHERE seconds > 0;
                       RETURN NULL;
                   END $$"""
            )
            conn.execute(
                f"""CREATE TRIGGER fault_slow_commit AFTER INSERT ON {S}.events FOR EACH ROW
                    WHEN (NEW.stage = 'commit' AND NEW.event_type = 'completed')
                    EXECUTE FUNCTION public.fault_slow_commit()"""
            )
            # The server checks for a vanished client every 100 ms, even mid-statement.
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET client_connection_check_interval = '100ms'").format(
                    sql.Identifier(database_name(self.url))
                )
            )

    def set(self, seconds: float) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE public.fault_slow_commit SET seconds = %s", (seconds,))

    def sleeping(self) -> int | None:
        """The pid of a commit that wrote its chunks and sleeps before COMMIT, if any."""
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            row = conn.execute(
                f"""SELECT a.pid FROM pg_stat_activity a
                    WHERE a.datname = current_database() AND a.wait_event = 'PgSleep'
                      AND a.query LIKE %s
                      AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted
                                  AND l.relation = '{S}.document_chunks'::regclass
                                  AND l.mode = 'RowExclusiveLock')""",
                (f"%INSERT INTO {S}.events%",),
            ).fetchone()
        return row[0] if row else None


# --- SIGKILL during commit ---------------------------------------------------------------

BATCH_FILES = 6
BATCHES = 3


def test_sigkill_during_commit_leaves_no_half_document_and_a_rerun_repairs_it(
    fault_rig: FaultRig, tmp_path: Path
) -> None:
    keys = set()
    for n in range(BATCH_FILES * BATCHES):
        key = f"notes/field-{n:02d}.md"
        fault_rig.write(key, document_text(n, 12))
        keys.add(key)
    url = fault_rig.database_url
    slow = SlowCommit(url)
    slow.install()
    child = start_child(tmp_path, {**os.environ, "DOCPIPE_BATCH_MAX_FILES": str(BATCH_FILES)})

    # Once something is committed, the next commit stalls after writing its chunks.
    wait_for(child, "a first commit", lambda: states(url).get("completed"))
    slow.set(30)
    wait_for(child, "a commit in the middle of its transaction", slow.sleeping)
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL

    # At this instant: committed documents are whole, the rest are not visible at all,
    # and nothing but "in flight with no live run" is wrong.
    by_state = states(url)
    assert by_state.get("completed", 0) >= 1 and by_state.get("embedded", 0) >= 1, by_state
    assert set(by_state) <= {"completed", *IN_FLIGHT}, by_state
    jobs = fault_rig.rows(
        "SELECT j.storage_key, j.state, j.chunk_count, count(c.chunk_id) AS visible"
        " FROM {S}.upload_jobs j LEFT JOIN {S}.document_chunks c ON c.job_id = j.job_id"
        " GROUP BY j.job_id"
    )
    for job in jobs:
        expected = job["chunk_count"] if job["state"] == "completed" else 0
        assert job["visible"] == expected, job
    in_flight = {j["storage_key"] for j in jobs if j["state"] != "completed"}
    report = fault_rig.invariants()
    assert report.counts() == {"in_flight_without_run": len(in_flight)}, report.render()
    assert {v.storage_key for v in report.violations} == in_flight

    # The server ends the dead run's transaction: rolled back, nothing of it shows.
    slow.set(0)
    deadline = time.monotonic() + 10
    while slow.sleeping():
        assert time.monotonic() < deadline, "the dead run's transaction never ended"
        time.sleep(0.05)
    assert states(url) == by_state

    # The re-run finds the open batches: the killed commit is only committed (no parser or
    # embedder call for it), the ones never reached run from the start. The child ran two
    # batches at once (DOCPIPE_INGEST_RUNS), so the other one may have been killed mid-parse:
    # a parse whose result was never stored is submitted again; nothing parsed is.
    uploads = fault_rig.parser.stats()["by_route"].get(UPLOAD_ROUTE, 0)
    outcomes = ingest_pending(resources=fault_rig.resources, instance=fault_rig.instance)
    assert outcomes and all(o.success for o in outcomes)
    new_uploads = fault_rig.parser.stats()["by_route"][UPLOAD_ROUTE] - uploads
    assert new_uploads == by_state.get("uploaded", 0) + by_state.get("parsing", 0)
    fault_rig.assert_all_completed_and_consistent(keys)
    assert_search_index_valid(fault_rig)


def assert_search_index_valid(rig: FaultRig) -> None:
    """The space's HNSW index (as vector_spaces names it) exists and is valid: a crash, say
    in the middle of a bulk load that dropped it, must not leave search without it."""
    (space,) = rig.rows("SELECT embedding_model, dims, index_name FROM {S}.vector_spaces")
    assert (space["embedding_model"], space["dims"]) == (rig.space().model, rig.space().dims)
    indexes = rig.rows(
        "SELECT i.indexrelid::regclass::text AS name, i.indisvalid AS valid"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
        " WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw'",
        (f"{S}.document_chunks",),
    )
    assert indexes == [{"name": f"{S}.{space['index_name']}", "valid": True}], (indexes, space)


# --- Postgres restarted mid-run -----------------------------------------------------------


@dataclass
class RestartableDatabase:
    pgdata: Path
    url: str

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def restart(self, down_s: float = 1.0) -> None:
        """pg_ctl stop (fast: sessions are terminated, open transactions rolled back), stay
        down for `down_s`, start again on the same data directory and socket."""
        before = self.postmaster_pid()
        _embedded_server(self.pgdata).stop()
        assert not (self.pgdata / "postmaster.pid").exists()
        time.sleep(down_s)
        server = _embedded_server(self.pgdata)
        assert replace_database(server.get_uri("postgres"), "docpipe") == self.url
        assert self.postmaster_pid() != before


@pytest.fixture
def fault_restartable_database(tmp_path: Path) -> Iterator[RestartableDatabase]:
    """A Postgres of this test's own (not the session's), free to be stopped and started."""
    pgdata = tmp_path / "pgdata"
    server = _embedded_server(pgdata)
    try:
        ensure_database_exists(server.get_uri("postgres"), "docpipe")
        url = server.get_uri("docpipe")
        migrate(url)
        yield RestartableDatabase(pgdata, url)
    finally:
        if (pgdata / "postmaster.pid").exists():
            _embedded_server(pgdata).stop()


def test_postgres_restart_mid_run_then_rerun_completes_everything(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault_restartable_database: RestartableDatabase,
    fault_parser_mock: MockServer,
    fault_embedder_mock: MockServer,
) -> None:
    db = fault_restartable_database
    with dg.DagsterInstance.ephemeral() as instance:
        rig = fault_rig_for(
            monkeypatch,
            db.url,
            tmp_path / "storage",
            fault_parser_mock,
            fault_embedder_mock,
            instance,
        )
        keys = set()
        for n in range(24):
            key = f"docs/note-{n:02d}.md"
            rig.write(key, document_text(100 + n, 6))
            keys.add(key)
        slow = SlowCommit(db.url)
        slow.install()
        rig.parser.set_latency(150.0)  # a slow parser: the run spends seconds parsing
        env = fault_environment(db.url, rig.storage_dir, rig.parser, rig.embedder)
        child = start_child(tmp_path, {**os.environ, **env})

        # 1. While documents are being parsed: the pool's connections all die at once.
        def parsing_under_way() -> bool:
            now = states(db.url)
            return now.get("parsed", 0) >= 3 and now.get("uploaded", 0) + now.get("parsing", 0) >= 3

        wait_for(child, "parsing under way", parsing_under_way)
        slow.set(30)  # from now on, a commit stalls after writing its chunks
        db.restart()
        rig.parser.set_latency(0.0)

        # 2. In the middle of a commit transaction: its writes are rolled back.
        wait_for(child, "a commit in the middle of its transaction", slow.sleeping)
        slow.set(0)
        db.restart()

        # The run survives both: it neither hangs nor crashes; whatever a restart hit is
        # failed with a reason (retryable) or still in flight, never half-written.
        assert child.wait() == 0, child.output()
        assert "OUTCOMES" in child.output()
        report = rig.invariants()
        assert set(report.counts()) <= {"in_flight_without_run"}, report.render()
        assert set(states(db.url)) <= {"completed", "failed", *IN_FLIGHT}
        for job in rig.jobs().values():
            if job["state"] == "failed":
                assert job["retryable"] and job["failure_reason"].strip(), job

        # Re-run: retry what failed, resume what was left in flight.
        for _ in range(3):
            if set(states(db.url)) == {"completed"}:
                break
            rig.retry_due()
            ingest_pending(resources=rig.resources, instance=rig.instance)
        # Under load, a document whose attempts all met the restarts' fallout (the pool
        # timing out while the server came back) ends dead-lettered, with that reason; what
        # a person does then is `docpipe retry --all-failed`, so the test does it too.
        if set(states(db.url)) != {"completed"}:
            from docpipe_dagster.store.documents import REQUEUE_PREFIX
            from docpipe_dagster.store.queries import Store

            with Store.open(db.url, max_size=2) as store:
                dead = store.failed_versions()
                assert all(j.failure_reason and j.attempts for j in dead), dead
                store.requeue_failed(
                    dead,
                    REQUEUE_PREFIX + "after-restarts",
                    "test: docpipe retry",
                    reset_attempts=True,
                )
            ingest_pending(resources=rig.resources, instance=rig.instance)
        rig.assert_all_completed_and_consistent(keys)
