"""Run `docpipe dev` as a user does, for tests: its own process group, free ports, Ctrl-C at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from docpipe_dagster_tests.support.mock_servers import named_free_ports


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_for_none(probe: Callable[[], list], timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    found = probe()
    while found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = probe()
    return found


def graphql(base: str, query: str) -> dict:
    response = httpx.post(f"{base}/graphql", json={"query": query}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(marker: str) -> list[psutil.Process]:
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


@dataclass
class DevStack:
    base: str
    env: dict[str, str]
    home: Path
    proc: subprocess.Popen
    log_path: Path
    ports: dict[str, int]

    def docpipe(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docpipe_dagster.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict:
        out = self.docpipe("status", "--json")
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]


def dev_env(home: Path, ports: dict[str, int], **extra_env: str) -> dict[str, str]:
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
            **extra_env,
        }
    )
    for key in ("LLAMA_CLOUD_API_KEY", "OPENAI_API_KEY", "SUPABASE_SERVICE_KEY"):
        env.pop(key, None)
    return env


DEV_PORTS = ("ui", "storage", "llamaparse", "openai", "api")


def launch_dev(
    tmp_path: Path, ports: dict[str, int] | None = None, log_name: str = "dev.log", **extra_env: str
) -> DevStack:
    """`docpipe dev` started in its own process group, returned once the webserver answers."""
    home = tmp_path / "home"
    ports = ports or named_free_ports(DEV_PORTS)
    env = dev_env(home, ports, **extra_env)
    log_path = tmp_path / log_name
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docpipe_dagster.cli", "dev", "--port", str(ports["ui"])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal would give it
        )
    base = f"http://127.0.0.1:{ports['ui']}"
    stack = DevStack(base, env, home, proc, log_path, ports)

    def webserver_up_or_exited() -> bool:
        if proc.poll() is not None:
            return True
        if not port_open(ports["ui"]):
            return False
        return httpx.get(f"{base}/server_info", timeout=2).is_success

    try:
        wait_for(webserver_up_or_exited, 240, "the Dagster webserver")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        raise
    assert proc.poll() is None, stack.log()
    return stack


@contextlib.contextmanager
def docpipe_dev(tmp_path: Path, **extra_env: str) -> Iterator[DevStack]:
    """`docpipe dev` on free ports with its own DOCPIPE_HOME; stopped with SIGINT on exit.

    After the block: the exit status was 0 and no process mentioning the home is left.
    """
    stack = launch_dev(tmp_path, **extra_env)
    proc = stack.proc
    try:
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(timeout=60)
    assert proc.returncode == 0, stack.log()
    leftovers = wait_for_none(lambda: processes_mentioning(str(stack.home)), 20)
    assert leftovers == [], [p.cmdline() for p in leftovers]
