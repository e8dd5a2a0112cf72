"""Nothing docpipe starts outlives it, whatever kills it; `docpipe dev` restarts its database.

Real processes throughout: `docpipe ingest --wait` and `docpipe dev` as a user runs them,
killed with SIGKILL or hung up with SIGHUP, then a psutil scan for any process whose command
line or environment names the test's DOCPIPE_HOME, and a check of every port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docpipe_dagster.local.lifeline import postmaster_pid
from docpipe_dagster.local.ports import free_ports
from docpipe_dagster_tests.support.dev_stack import (
    DEV_PORTS,
    graphql,
    launch_dev,
    port_open,
    processes_mentioning,
    wait_for,
    wait_for_none,
)
from docpipe_dagster_tests.support.mock_servers import named_free_ports

pytestmark = pytest.mark.timeout(600)

# SIGTERM, a 3 s grace, then SIGKILL for what ignored it; Postgres' fast shutdown.
SURVIVOR_WAIT_S = 15


def _runs(base: str, status: str) -> list[dict]:
    query = "{ runsOrError { ... on Runs { results { runId status } } } }"
    runs = graphql(base, query)["runsOrError"]["results"]
    return [r for r in runs if r["status"] == status]


def _no_survivors(home: Path, ports: list[int]) -> None:
    leftovers = wait_for_none(lambda: processes_mentioning(str(home)), SURVIVOR_WAIT_S)
    assert leftovers == [], [p.cmdline() for p in leftovers]
    still_bound = wait_for_none(lambda: [p for p in ports if port_open(p)], 5)
    assert still_bound == [], f"ports still bound: {still_bound}"
    assert postmaster_pid(home / "pgdata") is None


def test_sigkilled_ingest_wait_leaves_no_mock_and_no_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"note-{i:02d}.md").write_text(f"# Note {i}\n\nKites and otters, note {i}.\n")
    parser_port, embedder_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    for key in ("LLAMA_CLOUD_API_KEY", "OPENAI_API_KEY", "SUPABASE_SERVICE_KEY"):
        env.pop(key, None)
    env.update(
        DOCPIPE_HOME=str(home),
        LLAMAPARSE_BASE_URL=f"http://127.0.0.1:{parser_port}",
        OPENAI_BASE_URL=f"http://127.0.0.1:{embedder_port}/v1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "ingest", str(docs), "--wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Mid-run: the database it started is up and the mocks it started listen.
        wait_for(
            lambda: (
                proc.poll() is not None
                or (port_open(parser_port) and postmaster_pid(home / "pgdata"))
            ),
            120,
            "ingest to start its database and mocks",
            0.1,
        )
        assert proc.poll() is None, "ingest ended before it could be killed"
        assert postmaster_pid(home / "pgdata") is not None
    finally:
        proc.kill()
        proc.wait(10)
    _no_survivors(home, [parser_port, embedder_port])


@pytest.mark.slow  # two `docpipe dev` starts
def test_docpipe_dev_dies_with_sigkill_and_sighup_and_restarts_its_database(
    tmp_path: Path,
) -> None:
    ports = named_free_ports(DEV_PORTS)
    port_list = list(ports.values())

    # No samples: only this test's documents are in flight.
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".samples-seeded").write_text("")

    # 1. SIGKILL: nothing can run in the stack's process; its watchdog stops everything.
    stack = launch_dev(tmp_path, ports, log_name="dev-1.log")
    wait_for(lambda: port_open(ports["api"]), 120, "the API", 0.5)
    assert len(processes_mentioning(str(stack.home))) >= 8  # the stack as the issue counted it
    stack.proc.kill()
    stack.proc.wait(10)
    _no_survivors(stack.home, port_list)

    # 2. It starts again cleanly on the same ports and home (the mocks answer slowly, so
    #    that a batch is in flight when the database dies).
    stack = launch_dev(tmp_path, ports, log_name="dev-2.log", DOCPIPE_MOCK_LATENCY_MS="300")
    try:
        wait_for(lambda: port_open(ports["api"]), 120, "the API", 0.5)
        bulk = stack.home / "storage" / "bulk"
        bulk.mkdir(parents=True, exist_ok=True)
        for i in range(30):
            (bulk / f"otters-{i:02d}.md").write_text(f"# Otters {i}\n\nSea otters hold hands.\n")
        wait_for(lambda: _runs(stack.base, "STARTED"), 120, "a batch run in flight", 0.5)

        # 3. The database dies under it: one line, restarted with crash recovery, no
        #    traceback on the console, and the batch it interrupted completes.
        pid = postmaster_pid(stack.home / "pgdata")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "database: back after" in stack.log_path.read_text(), 30, "restart", 0.2)
        back_at = time.monotonic()
        log = stack.log_path.read_text()
        assert log.count("database: the embedded Postgres stopped unexpectedly") == 1, log
        new_pid = postmaster_pid(stack.home / "pgdata")
        assert new_pid is not None and new_pid != pid

        def all_completed() -> bool:
            by_state = stack.status().get("documents", {}).get("by_state", {})
            return by_state == {"completed": 30}

        wait_for(all_completed, 120, "every document to complete after the restart", 2)
        assert time.monotonic() - back_at < 120
        after_kill = stack.log_path.read_text().split("stopped unexpectedly", 1)[1]
        assert "Traceback" not in after_kill, after_kill[-3000:]
        # 4. SIGHUP (a closed terminal): stops like Ctrl-C, and nothing is left.
        stack.proc.send_signal(signal.SIGHUP)
        assert stack.proc.wait(60) == 0, stack.log()
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
    _no_survivors(stack.home, port_list)
