"""Start the mocks: the one way `docpipe mocks`, `docpipe dev`, `ingest --wait`, the tests and
the benchmarks run them.

One process, `python -m docpipe_dagster_mocks all` (the three uvicorn servers on one loop),
serves the mocks asked for, each on its own port. It is started through the lifeline (it dies
with whoever started it, however that ends) and is ready when every mock's `/health` answers.
No Dagster import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from docpipe_dagster.local.lifeline import group_alive, lifeline, spawn
from docpipe_dagster.local.ports import free_ports

MOCKS_MODULE = "docpipe_dagster_mocks"  # the installed name of the repo's mocks/ folder
SERVICES: tuple[str, ...] = ("storage", "llamaparse", "openai")
DEFAULT_PORTS: dict[str, int] = {"storage": 8000, "llamaparse": 8001, "openai": 8002}
# Keyword settings of start_mocks -> flags of `python -m docpipe_dagster_mocks`.
FLAGS: dict[str, str] = {
    "latency_ms": "--latency-ms",
    "jitter_ms": "--jitter-ms",
    "faults": "--faults",
    "data_dir": "--data-dir",
    "webhook_secret": "--webhook-secret",
    "pending_seconds": "--pending-seconds",
    "seed": "--seed",
}
_DEFAULT_KEY = object()  # api_key not given: the mock's own (DOCPIPE_MOCK_API_KEY or the default)

# How a caller starts the process: args and environment in, a Popen in its own process group
# out (`docpipe dev` passes its own, which routes the output through its gate).
Launch = Callable[[list[str], dict[str, str]], subprocess.Popen]


class MocksDidNotStart(RuntimeError):
    """The mocks' process ended, or a mock did not answer in time; the message has its output."""


@dataclass
class RunningMocks:
    """The mocks' process and where each mock listens."""

    process: subprocess.Popen
    ports: dict[str, int]
    log_path: Path | None = None
    owns_log: bool = False
    _stopped: bool = field(default=False, repr=False)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 4000) -> str:
        """The end of what the mocks printed (when it went to a file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers; the lifeline forgets it."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.process.pid  # started in a session of its own: group id == pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None and not group_alive(pgid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        lifeline().release_group(pgid)
        if self.owns_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def mocks_command(ports: Mapping[str, int], host: str | None = None, **settings: Any) -> list[str]:
    """`python -m docpipe_dagster_mocks all` serving `ports`' mocks on those ports, the rest
    skipped. settings: api_key (None turns auth off) and the keys of FLAGS."""
    unknown = set(ports) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown mock(s) {sorted(unknown)}; choose from {list(SERVICES)}")
    args = [sys.executable, "-m", MOCKS_MODULE, "all"]
    if host is not None:
        args += ["--host", host]
    args += [f"--{name}-port={port}" for name, port in ports.items()]
    args += [f"--skip={name}" for name in SERVICES if name not in ports]
    api_key = settings.pop("api_key", _DEFAULT_KEY)
    if api_key is not _DEFAULT_KEY:
        args += ["--api-key", "none" if api_key is None else str(api_key)]
    for key, value in settings.items():
        if key not in FLAGS:
            raise TypeError(f"unknown mock setting {key!r}; choose from {sorted(FLAGS)}")
        if value is None:
            continue
        if key == "faults" and not isinstance(value, str):
            import json

            value = json.dumps(value)
        args += [FLAGS[key], str(value)]
    return args


def _launch_to_file(log_path: Path) -> Launch:
    def launch(args: list[str], env: dict[str, str]) -> subprocess.Popen:
        with log_path.open("ab") as out:
            return spawn(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    return launch


def _wait_healthy(mocks: RunningMocks, timeout_s: float) -> str | None:
    """None when every mock answers /health, else what went wrong."""
    waiting = list(mocks.ports)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as http:
        while waiting:
            if not mocks.alive():
                return f"the mocks exited with code {mocks.process.returncode}"
            if time.monotonic() >= deadline:
                return f"the {waiting[0]} mock did not answer on port {mocks.ports[waiting[0]]} in {timeout_s:.0f} s"
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{mocks.url(waiting[0])}/health").status_code == 200:
                    waiting.pop(0)
                    continue
            time.sleep(0.05)
    return None


def start_mocks(
    services: Mapping[str, int] | Iterable[str],
    *,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
    launch: Launch | None = None,
    log_path: Path | None = None,
    timeout_s: float = 30.0,
    **settings: Any,
) -> RunningMocks:
    """Start the mocks and wait until each answers; raise MocksDidNotStart if one does not.

    services: {mock: port}, or mock names to put on free loopback ports (then a port taken
    between picking and binding is retried). host: where they listen (the mocks' default,
    127.0.0.1, when None). env: the process's environment (default: this one's). launch:
    how to start the process (default: through the lifeline, output to log_path or a
    temporary file). settings: api_key and the keys of FLAGS (see mocks/README.md).
    """
    fixed = isinstance(services, Mapping)
    names = list(services)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
    problem = ""
    for _attempt in range(1 if fixed else 3):
        ports = dict(services) if fixed else dict(zip(names, free_ports(len(names)), strict=True))
        args = mocks_command(ports, host, **settings)
        owns_log = launch is None and log_path is None
        if owns_log:
            fd, name = tempfile.mkstemp(prefix="docpipe-mocks-", suffix=".log")
            os.close(fd)
            path: Path | None = Path(name)
        else:
            path = log_path
        process = (launch or _launch_to_file(path))(args, child_env)  # type: ignore[arg-type]
        mocks = RunningMocks(process, ports, path, owns_log)
        trouble = _wait_healthy(mocks, timeout_s)
        if trouble is None:
            return mocks
        output = mocks.output()
        problem = f"{trouble}: {output.strip()[-1500:]}" if output.strip() else trouble
        mocks.stop()
        if "address already in use" not in output.lower():
            break
    raise MocksDidNotStart(f"the local mocks did not start ({problem})")


def mock_ports() -> dict[str, int]:
    """Where the configuration points each mock `docpipe dev` starts (default 8000/8001/8002);
    no parser mock when nothing is sent to a parser (DOCPIPE_PARSE_LOCALLY=all)."""
    from urllib.parse import urlsplit

    from docpipe_dagster.clients.parsing import routing
    from docpipe_dagster.config import service_settings

    settings = service_settings()
    urls = {
        "storage": settings.storage_base_url,
        "llamaparse": settings.parser_base_url,
        "openai": settings.embedder_base_url,
    }
    if not routing().uses_service:
        del urls["llamaparse"]
    return {name: urlsplit(url).port or DEFAULT_PORTS[name] for name, url in urls.items()}
