"""The services a command needs, made ready or refused in one clear line.

- Ports: before `docpipe dev` binds anything, each port it needs is checked; a taken one is
  reported with the process holding it (where it can be known) and the setting that moves it.
- `docpipe ingest --wait`: local endpoints with nothing listening get the mocks started for
  the command's duration; every endpoint (local or remote) is probed first, so an unreachable
  or unauthorised service stops the command within seconds, before any document is touched.
No Dagster import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from docpipe_dagster.config import ServiceSettings, is_local_url, service_settings


class ServiceProblem(RuntimeError):
    """A service a command needs is not usable; the message says what to change."""


class PortInUse(ServiceProblem):
    pass


class ServiceUnreachable(ServiceProblem):
    pass


@dataclass(frozen=True)
class Endpoint:
    """One external service as the pipeline is configured to reach it."""

    check: str  # the name in health.SERVICE_PROBES
    mock: str  # the mock that stands in for it locally (python -m mocks <mock>)
    what: str
    url: str
    url_variable: str
    key_variable: str

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def local(self) -> bool:
        return is_local_url(self.url)


def endpoints(settings: ServiceSettings | None = None) -> list[Endpoint]:
    """The parser and embedder, and Supabase storage when that backend is chosen."""
    from docpipe_dagster.clients.parsing import routing

    s = settings or service_settings()
    found = [
        Endpoint(
            "parser",
            "llamaparse",
            "parser",
            s.parser_base_url,
            "LLAMAPARSE_BASE_URL",
            s.parser_api_key_env,
        ),
        Endpoint(
            "embedder",
            "openai",
            "embedder",
            s.embedder_base_url,
            "OPENAI_BASE_URL",
            s.embedder_api_key_env,
        ),
    ]
    if not routing().uses_service:  # DOCPIPE_PARSE_LOCALLY=all: no parser service at all
        found = [e for e in found if e.check != "parser"]
    if s.storage_backend == "supabase":
        found.append(
            Endpoint(
                "storage",
                "storage",
                "storage",
                s.storage_base_url,
                "SUPABASE_URL",
                s.storage_api_key_env,
            )
        )
    return found


# --- ports -------------------------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens there (the check a server's bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too: sockets lingering in TIME_WAIT are no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_holder(port: int) -> str | None:
    """'pid 123 (python -m mocks all)' for the process listening on `port`, if it can be known."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return None
                proc = psutil.Process(conn.pid)
                cmdline = " ".join(
                    os.path.basename(a) if i == 0 else a for i, a in enumerate(proc.cmdline())
                )
                return f"pid {conn.pid} ({cmdline or proc.name()})"
    except Exception:  # no permission, a process gone meanwhile: the port is still taken
        return None
    return None


def require_free_ports(wanted: Sequence[tuple[str, int, str]], host: str = "127.0.0.1") -> None:
    """(label, port, how to change it) each; raise PortInUse naming the first taken one."""
    for label, port, change in wanted:
        if port_in_use(port, host):
            holder = port_holder(port)
            by = f" by {holder}" if holder else ""
            raise PortInUse(
                f"port {port} ({label}) is already in use{by}: stop that process or {change}"
            )


# --- services for one command ----------------------------------------------------------------


def _probe(endpoint: Endpoint) -> str | None:
    """None when the service answers an authenticated request, else what is wrong."""
    from docpipe_dagster.health import service_checks

    (result,) = service_checks([endpoint.check])
    if result.ok:
        return None
    detail = result.detail
    if " 401" in detail or " 403" in detail or "auth" in detail.lower():
        return f"refused the key: check {endpoint.key_variable} ({detail})"
    return f"is unavailable: {detail}; check {endpoint.url_variable}"


PROBE_TIMEOUT_S = 5.0


def probe_all(
    wanted: Sequence[Endpoint], timeout_s: float = PROBE_TIMEOUT_S
) -> list[tuple[Endpoint, str]]:
    """Probe every endpoint at once; one that has not answered within timeout_s is a problem."""
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=max(1, len(wanted)))
    futures = {pool.submit(_probe, e): e for e in wanted}
    done, _ = wait(futures, timeout=timeout_s)
    pool.shutdown(wait=False, cancel_futures=True)  # a hung probe must not hold the command
    problems = []
    for future, endpoint in futures.items():
        if future not in done:
            problems.append(
                (
                    endpoint,
                    f"did not answer within {timeout_s:.0f} s; check {endpoint.url_variable}",
                )
            )
        elif (problem := future.result()) is not None:
            problems.append((endpoint, problem))
    return problems


@dataclass
class StartedMocks:
    process: subprocess.Popen
    names: list[str]

    def stop(self) -> None:
        from docpipe_dagster.lifeline import lifeline

        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
                break
        lifeline().release_group(self.process.pid)


def _start_mocks(missing: Sequence[Endpoint], timeout_s: float = 30.0) -> StartedMocks:
    args = [sys.executable, "-m", "mocks", "all", "--host", "127.0.0.1"]
    # `all` serves the three; the ones not missing are moved to a free port nobody uses.
    mocks = ("storage", "llamaparse", "openai")
    # The missing ports are free too, so the kernel may hand one out: pick that many extra.
    taken = {e.port for e in missing}
    spare = iter([p for p in free_ports(len(mocks) + len(taken)) if p not in taken])
    for mock in mocks:
        match = [e for e in missing if e.mock == mock]
        args.append(f"--{mock}-port={match[0].port if match else next(spare)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_MOCK_")}
    from docpipe_dagster.lifeline import spawn

    # They die with this command, however it ends (a SIGKILL included).
    process = spawn(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = StartedMocks(process, [e.mock for e in missing])
    deadline = time.monotonic() + timeout_s
    waiting = list(missing)
    while waiting and time.monotonic() < deadline:
        if process.poll() is not None:
            err = (process.stderr.read() if process.stderr else b"").decode(errors="replace")
            raise ServiceUnreachable(f"the local mocks did not start: {err.strip()[-300:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{waiting[0].port}/health", timeout=1.0).is_success:
                waiting.pop(0)
                continue
        time.sleep(0.1)
    if waiting:
        started.stop()
        raise ServiceUnreachable(
            f"the local {waiting[0].mock} mock did not start in {timeout_s:.0f} s"
        )
    return started


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Each socket stays bound until all are picked:
    ports asked for one after another can come back the same (the kernel reuses a port
    just released), and two services would then fight over one."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def named_free_ports(names: Sequence[str]) -> dict[str, int]:
    """A distinct free loopback port for each name (free_ports)."""
    return dict(zip(names, free_ports(len(names)), strict=True))


@contextlib.contextmanager
def services_for_command(
    echo: Callable[[str], None],
    settings: ServiceSettings | None = None,
    *,
    only: Sequence[str] | None = None,
) -> Iterator[list[str]]:
    """Make the parser/embedder(/storage) usable for one command, or raise ServiceProblem.

    Local endpoints with nothing listening: the mocks are started now and stopped after.
    `only`: the endpoints the command needs (names as in health.SERVICE_PROBES).
    Then every endpoint is probed (one authenticated request each); any failure raises
    before the caller has registered or touched a document. Yields the mocks it started.
    """
    wanted = [e for e in endpoints(settings) if only is None or e.check in only]
    missing = [e for e in wanted if e.local and not port_in_use(e.port)]
    started = _start_mocks(missing) if missing else None
    try:
        if started:
            ports = ", ".join(f"{e.what} :{e.port}" for e in missing)
            echo(f"started the local mocks for this command ({ports}); they stop when it ends")
        problems = probe_all(wanted)
        if problems:
            lines = [f"{e.what} at {e.url} {p}" for e, p in problems]
            raise ServiceUnreachable("; ".join(lines))
        yield started.names if started else []
    finally:
        if started:
            started.stop()
