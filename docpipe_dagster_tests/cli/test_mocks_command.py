"""`docpipe mocks`: the mocks where the service URLs point, until Ctrl-C, then nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from docpipe_dagster.local.ports import named_free_ports, port_in_use


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_docpipe_mocks_serves_where_configured_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    ports = named_free_ports(["storage", "llamaparse", "openai"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    env.update(
        DOCPIPE_HOME=str(tmp_path / "home"),
        SUPABASE_URL=f"http://127.0.0.1:{ports['storage']}",
        LLAMAPARSE_BASE_URL=f"http://127.0.0.1:{ports['llamaparse']}",
        OPENAI_BASE_URL=f"http://127.0.0.1:{ports['openai']}/v1",
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "mocks", "--latency-ms", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert lines and "Ctrl-C stops" in lines[-1], "".join(lines)
        for name, port in ports.items():
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert health.json()["service"] == name
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not any(port_in_use(p) for p in ports.values()), "a mock outlived `docpipe mocks`"
    assert _processes_with(f"--openai-port={ports['openai']}") == []
