"""Start a mock service as a real subprocess on a free port, for tests that speak real HTTP.

Each mock runs in its own process group (`start_new_session=True`) so `stop()` can kill it
and anything it spawned, even if it ignores SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from docpipe_dagster.services import (  # noqa: F401 (re-exported)
    free_port,
    free_ports,
    named_free_ports,
)
from mocks._common import DEFAULT_API_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
_STARTED: list[MockServer] = []

# Keyword arguments accepted by start_mock -> CLI flags of `python -m mocks`.
_FLAGS = {
    "latency_ms": "--latency-ms",
    "jitter_ms": "--jitter-ms",
    "data_dir": "--data-dir",
    "webhook_secret": "--webhook-secret",
    "pending_seconds": "--pending-seconds",
    "seed": "--seed",
}


class MockServer:
    """Handle on a running mock: URLs, key and the /_mock control endpoints."""

    def __init__(
        self, service: str, port: int, api_key: str | None, proc: subprocess.Popen, log: Path
    ) -> None:
        self.service = service
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_key = api_key
        self.proc = proc
        self.log_path = log
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def __repr__(self) -> str:
        return f"MockServer({self.service!r}, {self.base_url!r}, pid={self.proc.pid})"

    # --- control endpoints -----------------------------------------------------------------
    def set_faults(self, spec: dict | list[dict]) -> list[dict]:
        """Replace the active faults with `spec` (one spec or a list)."""
        self.clear_faults()
        return self.add_faults(spec)

    def add_faults(self, spec: dict | list[dict]) -> list[dict]:
        r = self._http.post("/_mock/faults", json=spec)
        r.raise_for_status()
        return r.json()

    def faults(self) -> list[dict]:
        return self._http.get("/_mock/faults").raise_for_status().json()

    def clear_faults(self) -> None:
        self._http.delete("/_mock/faults").raise_for_status()

    def stats(self) -> dict:
        return self._http.get("/_mock/stats").raise_for_status().json()

    def reset(self) -> None:
        self._http.post("/_mock/reset").raise_for_status()

    def set_latency(self, latency_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
        body = {"latency_ms": latency_ms, "jitter_ms": jitter_ms}
        self._http.post("/_mock/latency", json=body).raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- lifecycle -------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the process group (TERM, then KILL after 3 s)."""
        self._http.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self in _STARTED:
            _STARTED.remove(self)

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _command(service: str, port: int, settings: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "mocks", service, "--port", str(port)]
    api_key = settings.get("api_key", DEFAULT_API_KEY)
    cmd += ["--api-key", "none" if api_key is None else api_key]
    if settings.get("faults"):
        cmd += ["--faults", json.dumps(settings["faults"])]
    for key, flag in _FLAGS.items():
        if settings.get(key) is not None:
            cmd += [flag, str(settings[key])]
    return cmd


def start_mock(service: str, *, timeout_s: float = 20.0, **settings: Any) -> MockServer:
    """Start `python -m mocks <service>` on a free 127.0.0.1 port and wait for /health.

    settings: api_key (default "docpipe-local-key"; None disables auth), latency_ms,
    jitter_ms, faults, data_dir, webhook_secret, pending_seconds, seed.
    """
    unknown = set(settings) - {"api_key", "faults", *_FLAGS}
    if unknown:
        raise TypeError(f"unknown mock settings: {sorted(unknown)}")
    # The subprocess must not pick up settings from the developer's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_MOCK_")}
    env["PYTHONUNBUFFERED"] = "1"
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        log = Path(tempfile.mkstemp(prefix=f"mock-{service}-", suffix=".log")[1])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _command(service, port, settings),
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = MockServer(service, port, settings.get("api_key", DEFAULT_API_KEY), proc, log)
        _STARTED.append(server)
        if _wait_healthy(server, timeout_s):
            return server
        last_error = server.log()[-4000:]
        server.stop()
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"mock {service!r} did not become healthy in {timeout_s}s:\n{last_error}")


def _wait_healthy(server: MockServer, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        try:
            r = httpx.get(f"{server.base_url}/health", timeout=1.0)
            if r.status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


@atexit.register
def _stop_all() -> None:
    # Safety net: never leave mock processes behind after the test session.
    for server in list(_STARTED):
        with contextlib.suppress(Exception):
            server.stop()
