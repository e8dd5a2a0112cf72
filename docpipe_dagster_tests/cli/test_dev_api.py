"""Under `docpipe dev`: a document uploaded through the HTTP API completes (sensor + daemon)
and is found by the API's search; Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from docpipe_dagster_tests.cli.test_dev_stack import (
    _port_open,
    _processes_mentioning,
    _wait_for,
    _wait_for_none,
)
from docpipe_dagster_tests.support.mock_servers import free_port

pytestmark = pytest.mark.timeout(420)


def test_api_round_trip_under_docpipe_dev(tmp_path: Path) -> None:
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
    log_path = tmp_path / "dev.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "dev", "--port", str(ports["ui"])],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{ports['api']}"
    try:

        def api_up_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            if not _port_open(ports["api"]):
                return False
            try:
                return httpx.get(f"{api}/openapi.json", timeout=5).is_success
            except httpx.HTTPError:
                return False

        _wait_for(api_up_or_exited, 300, "the API under docpipe dev")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        output = log_path.read_text()
        # the generated key lives in a file readable by its owner only, never in the output
        key_file = home / "api-key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key = key_file.read_text().strip()
        assert key and key not in output
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{api}/v1/search", params={"q": "x"}).status_code == 401

        up = httpx.post(
            f"{api}/v1/documents",
            headers=auth,
            files={
                "file": (
                    "puffins.md",
                    b"# Puffins\n\nAtlantic puffins dig burrows on turf cliffs.\n",
                )
            },
            data={"prefix": "api"},
            params={"wait": 30},
            timeout=60,
        )
        assert up.status_code == 202, up.text
        assert up.json()["registered"] is True  # the sensor registered it within the wait

        def completed() -> dict | None:
            doc = httpx.get(f"{api}/v1/documents/api/puffins.md", headers=auth, timeout=10).json()
            return doc if doc["state"] == "completed" else None

        doc = _wait_for(completed, 180, "the uploaded document to complete", 1)
        assert doc["versions"][0]["job_id"] == up.json()["job_id"]
        found = httpx.get(
            f"{api}/v1/search",
            params={"q": "puffins burrows turf cliffs", "k": 3},
            headers=auth,
            timeout=30,
        ).json()
        assert found["results"][0]["storage_key"] == "api/puffins.md"
        health = httpx.get(f"{api}/health", timeout=30)
        assert health.status_code == 200, health.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    leftovers = _wait_for_none(lambda: _processes_mentioning(str(home)), 20)
    assert leftovers == [], [p.cmdline() for p in leftovers]
