"""A benchmark killed outright leaves no embedded Postgres behind (docpipe's lifeline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docpipe_dagster.local.lifeline import pid_alive, postmaster_pid, stop_postgres_fast
from docpipe_dagster_tests.support.dev_stack import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)

HOLD_INFRA = """
import sys, time
from benchmarks.infra import Infra
with Infra(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_killed_benchmark_leaves_no_postgres_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_INFRA, str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        postmaster = postmaster_pid(tmp_path / "home" / "pgdata")
        assert postmaster is not None
        holder.kill()  # SIGKILL: no __exit__, no atexit
        holder.wait(10)
        wait_for(lambda: not pid_alive(postmaster), 30, "the benchmark's Postgres to stop", 0.2)
    finally:
        if holder.poll() is None:
            holder.kill()
        stop_postgres_fast(tmp_path / "home" / "pgdata")  # when the test failed
