"""Start a mock service as a real subprocess on a free port, for tests that speak real HTTP.

Started by `docpipe_dagster.local.mocks.start_mocks`, the way docpipe itself starts them: in a
process group of its own, tied to the test process by the lifeline (it dies with pytest, even
on SIGKILL), and `stop()` kills its whole group.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from docpipe_dagster.local.mocks import FLAGS, RunningMocks, start_mocks
from docpipe_dagster.local.ports import (  # noqa: F401 (re-exported)
    free_port,
    free_ports,
    named_free_ports,
)
from docpipe_dagster_mocks._common import DEFAULT_API_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
_STARTED: list[MockServer] = []


class MockControl:
    """The /_mock control endpoints, over `self._http` (a client with the mock's base URL)."""

    _http: httpx.Client

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


class MockServer(MockControl):
    """Handle on a running mock: URLs, key and the /_mock control endpoints."""

    def __init__(self, service: str, api_key: str | None, running: RunningMocks) -> None:
        self.service = service
        self.port = running.ports[service]
        self.base_url = running.url(service)
        self.api_key = api_key
        self.running = running
        self.proc: subprocess.Popen = running.process
        self.log_path: Path | None = running.log_path
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def __repr__(self) -> str:
        return f"MockServer({self.service!r}, {self.base_url!r}, pid={self.proc.pid})"

    def log(self) -> str:
        return self.running.output(tail=1_000_000)

    # --- lifecycle -------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the process group (TERM, then KILL after 3 s)."""
        self._http.close()
        self.running.stop(grace_s=3.0)
        if self in _STARTED:
            _STARTED.remove(self)

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_mock(service: str, *, timeout_s: float = 20.0, **settings: Any) -> MockServer:
    """Start the `service` mock on a free 127.0.0.1 port and wait for /health.

    settings: api_key (default "docpipe-local-key"; None disables auth), latency_ms,
    jitter_ms, faults, data_dir, webhook_secret, pending_seconds, seed.
    """
    unknown = set(settings) - {"api_key", *FLAGS}
    if unknown:
        raise TypeError(f"unknown mock settings: {sorted(unknown)}")
    api_key = settings.pop("api_key", DEFAULT_API_KEY)
    # The subprocess must not pick up settings from the developer's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_MOCK_")}
    running = start_mocks([service], env=env, timeout_s=timeout_s, api_key=api_key, **settings)
    server = MockServer(service, api_key, running)
    _STARTED.append(server)
    return server


@atexit.register
def _stop_all() -> None:
    # Safety net: never leave mock processes behind after the test session.
    for server in list(_STARTED):
        with contextlib.suppress(Exception):
            server.stop()
