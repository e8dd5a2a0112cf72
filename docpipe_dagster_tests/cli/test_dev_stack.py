"""`docpipe dev` as a user runs it: the UI answers, a dropped file completes, Ctrl-C cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from docpipe_dagster_tests.support.mock_servers import free_port

pytestmark = pytest.mark.timeout(420)


def _processes_mentioning(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or environment mentions marker (our DOCPIPE_HOME)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.environ() if marker not in cmdline else {}
            if marker in cmdline or environ.get("DOCPIPE_HOME") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.pid != os.getpid()]


def _wait_for(predicate, timeout_s: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _graphql(base: str, query: str) -> dict:
    response = httpx.post(f"{base}/graphql", json={"query": query}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]


def test_docpipe_dev_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = {name: free_port() for name in ("ui", "storage", "llamaparse", "openai", "api")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    env.update(
        {
            "DOCPIPE_HOME": str(home),
            "LLAMAPARSE_BASE_URL": f"http://127.0.0.1:{ports['llamaparse']}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{ports['openai']}/v1",
            "SUPABASE_URL": f"http://127.0.0.1:{ports['storage']}",
            "DOCPIPE_SETTLE_SECONDS": "1",
            "DOCPIPE_SENSOR_INTERVAL_SECONDS": "2",
            "DOCPIPE_API_PORT": str(ports["api"]),
        }
    )
    for key in ("LLAMA_CLOUD_API_KEY", "OPENAI_API_KEY", "SUPABASE_SERVICE_KEY"):
        env.pop(key, None)
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "dev", "--port", str(ports["ui"])],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal would give it
    )
    base = f"http://127.0.0.1:{ports['ui']}"
    try:

        def webserver_up_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            if not _port_open(ports["ui"]):
                return False
            return httpx.get(f"{base}/server_info", timeout=2).is_success

        _wait_for(webserver_up_or_exited, 240, "the Dagster webserver")
        assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]

        # the shipped samples were put into storage on first start
        storage = home / "storage"
        samples = sorted(p.name for p in (storage / "samples").iterdir())
        assert len(samples) >= 4

        dropped = storage / "dropped" / "otters.md"
        dropped.parent.mkdir(parents=True, exist_ok=True)
        dropped.write_text(
            "# Otters\n\nSea otters hold hands while sleeping so they do not drift apart.\n"
        )

        def completed() -> dict | None:
            out = subprocess.run(
                [sys.executable, "-m", "docpipe_dagster.cli", "status", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            status = json.loads(out.stdout) if out.returncode == 0 else {}
            done = status.get("documents", {}).get("by_state", {}).get("completed", 0)
            return status if done == len(samples) + 1 else None

        status = _wait_for(completed, 120, "the samples and the dropped file to complete", 2)
        assert status["failures"] == []

        def finished_runs() -> list[dict] | None:
            runs = _graphql(
                base,
                '{ runsOrError(filter: {pipelineName: "ingest_batch"}) { ... on Runs { results { status } } } }',
            )["runsOrError"]["results"]
            # A document is completed before its run has finished its checks: wait for that.
            busy = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}
            return runs if runs and not any(r["status"] in busy for r in runs) else None

        runs = _wait_for(finished_runs, 60, "the batch runs to finish", 1)
        assert all(r["status"] == "SUCCESS" for r in runs)

        found = subprocess.run(
            [
                sys.executable,
                "-m",
                "docpipe_dagster.cli",
                "search",
                "otters sleeping holding hands",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(found.stdout)["results"][0]["storage_key"] == "dropped/otters.md"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    output = (tmp_path / "dev.log").read_text()
    assert proc.returncode == 0, output[-3000:]
    leftovers = _wait_for_none(lambda: _processes_mentioning(str(home)), 20)
    assert leftovers == [], [p.cmdline() for p in leftovers]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_none(probe, timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    found = probe()
    while found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = probe()
    return found
