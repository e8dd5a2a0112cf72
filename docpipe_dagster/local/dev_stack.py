"""Process management for `docpipe dev`: database, mocks, samples and Dagster's processes.

Each child runs in its own process group so that stopping the stack can signal a child's
whole tree (the code server's gRPC server and run workers) and escalate to SIGKILL: Dagster's
processes may ignore SIGINT/SIGTERM for many seconds when not attached to a terminal.
Every child, and the embedded Postgres the stack started, dies with the stack however it
ends (lifeline.py); the stack restarts a Postgres that dies under it (supervision.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from docpipe_dagster.bundled import bundled_path
from docpipe_dagster.clients.webserver import LOCATION_NAME
from docpipe_dagster.config import ENV_DAGSTER_DATABASE_URL, docpipe_home
from docpipe_dagster.local.lifeline import group_alive, lifeline, spawn
from docpipe_dagster.local.mocks import MocksDidNotStart, mock_ports, start_mocks
from docpipe_dagster.local.ports import PortInUse, free_port, require_free_ports
from docpipe_dagster.local.supervision import DatabaseWatch, OutputGate

SAMPLES_DIR = bundled_path("samples")
SAMPLES_PREFIX = "samples"
WORKSPACE_YAML = """\
# Written by docpipe dev: load the installed docpipe_dagster module.
load_from:
  - python_module:
      module_name: docpipe_dagster.definitions
      location_name: docpipe_dagster
"""
DAGSTER_CHILDREN = ("code server", "webserver", "daemon")
# The services' output while the database is down, and while the stack stops.
HIDDEN_LOG = "dev-hidden-output.log"


# What the shipped dagster.yaml leaves out (see its header): docpipe's own Postgres storage.
POSTGRES_STORAGE_YAML = """
# Added by docpipe: runs, event logs and schedules in Postgres.
storage:
  postgres:
    postgres_url:
      env: DOCPIPE_DAGSTER_DATABASE_URL
"""


def dev_instance_yaml() -> bytes:
    """The dev instance: the shipped dagster.yaml's settings plus Postgres storage."""
    return bundled_path("dagster.yaml").read_bytes() + POSTGRES_STORAGE_YAML.encode()


def prepare_dagster_home(home: Path | None = None) -> Path:
    """$DOCPIPE_HOME/dagster_home: the dev instance's dagster.yaml and a workspace.yaml.

    The workspace loads the installed module, so it works from a checkout and from a wheel.
    """
    dagster_home = (home or docpipe_home()) / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("dagster.yaml", dev_instance_yaml()),
        ("workspace.yaml", WORKSPACE_YAML.encode()),
    ):
        target = dagster_home / name
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    return dagster_home


def seed_samples(write: Callable[[str, bytes], object], home: Path | None = None) -> int:
    """Put the shipped sample documents into storage once (a marker remembers it)."""
    marker = (home or docpipe_home()) / ".samples-seeded"
    if marker.exists() or not SAMPLES_DIR.is_dir():
        return 0
    count = 0
    for path in sorted(SAMPLES_DIR.iterdir()):
        if path.is_file() and path.name != "README.md":
            write(f"{SAMPLES_PREFIX}/{path.name}", path.read_bytes())
            count += 1
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("samples were copied into storage once; delete this file to copy again\n")
    return count


def write_grpc_workspace(dagster_home: Path, code_port: int) -> Path:
    """A workspace.yaml for the webserver and the daemon: the code server on `code_port`."""
    path = dagster_home / "workspace-grpc.yaml"
    path.write_text(
        "# Written by docpipe dev: the webserver and the daemon load code from one code server.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {code_port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    return path


def wait_for_port(port: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> bool:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return True
        time.sleep(0.25)
    return False


def wait_for_http(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return True
        time.sleep(0.25)
    return False


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    output: threading.Thread | None = None  # copies its output through the gate

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float) -> None:
        """SIGTERM the child's process group, SIGKILL it if it has not gone after grace_s."""
        pgid = self.process.pid  # started with start_new_session: group id == pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None and not group_alive(pgid):
                    return self._release()
                time.sleep(0.1)
        self._release()

    def _release(self) -> None:
        lifeline().release_group(self.process.pid)


@dataclass
class DevStack:
    host: str = "127.0.0.1"
    port: int = 3000
    start_mocks: bool = True
    seed: bool = True
    echo: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    started_database: bool = False
    gate: OutputGate | None = None
    database: DatabaseWatch | None = None

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        if self.gate is None:
            self.gate = OutputGate(docpipe_home() / "logs" / HIDDEN_LOG)
        # Dies with the stack however it ends; its output passes the gate, which keeps the
        # services' tracebacks out of the console while the database is down.
        process = spawn(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        child = Child(name, process, self.gate.follow(process.stdout))
        self.children.append(child)
        return child

    def required_ports(self) -> list[tuple[str, int, str]]:
        """Every port this stack binds, with the setting that moves it."""
        from docpipe_dagster.api.settings import ApiSettings

        wanted = [
            ("Dagster UI", self.port, "pass --port"),
            ("HTTP API", ApiSettings.from_env().port, "set DOCPIPE_API_PORT"),
        ]
        if self.start_mocks:
            variables = {
                "storage": "SUPABASE_URL",
                "llamaparse": "LLAMAPARSE_BASE_URL",
                "openai": "OPENAI_BASE_URL",
            }
            for name, port in mock_ports().items():
                wanted.append(
                    (f"{name} mock", port, f"set {variables[name]} to a URL with another port")
                )
        return wanted

    def start(self) -> None:
        from docpipe_dagster.clients.factory import open_storage
        from docpipe_dagster.store.server import embedded_running, pgdata_dir, ready_database

        # Before anything starts: a taken port (often a second `docpipe dev`) is one line.
        require_free_ports(self.required_ports(), self.host)
        claim_supervision()
        self.gate = OutputGate(docpipe_home() / "logs" / HIDDEN_LOG)

        was_running = embedded_running()
        target = ready_database()
        self.started_database = target.embedded and not was_running
        self.echo(f"database: {'embedded' if target.embedded else 'external'}, migrated")
        if target.embedded:
            from docpipe_dagster.store.server import start_embedded

            if self.started_database:
                lifeline().adopt_postgres(pgdata_dir())  # it stops with the stack, however
            self.database = DatabaseWatch(pgdata_dir(), self.gate, self.echo, start_embedded)

        env = dict(os.environ)
        if self.start_mocks:
            ports = mock_ports()
            try:
                start_mocks(
                    ports,
                    host="127.0.0.1",
                    env=env,
                    launch=lambda args, env: self._spawn("mocks", args, env).process,
                )
            except MocksDidNotStart as exc:
                raise RuntimeError(str(exc)) from exc
            self.echo("mocks: " + ", ".join(f"{name} :{port}" for name, port in ports.items()))

        if self.seed:
            storage = open_storage()
            seeded = seed_samples(storage.write)
            if seeded:
                self.echo(f"samples: {seeded} documents put into {storage.describe()}")

        dagster_home = prepare_dagster_home()
        env.update(
            {
                "DAGSTER_HOME": str(dagster_home),
                ENV_DAGSTER_DATABASE_URL: target.dagster_url,
                "DOCPIPE_HOME": str(docpipe_home()),
            }
        )
        # Dagster's production topology on one machine (not the superseded `dagster dev`):
        # one code server, and the webserver and the daemon both talking to it over gRPC.
        code_port = free_port()
        workspace = write_grpc_workspace(dagster_home, code_port)
        bin_dir = Path(sys.executable).parent
        code = self._spawn(
            "code server",
            [
                sys.executable,
                "-m",
                "dagster",
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(code_port),
                "-m",
                "docpipe_dagster.definitions",
                "--location-name",
                LOCATION_NAME,
            ],
            env,
        )
        if not wait_for_port(code_port, 120, code.alive):
            raise RuntimeError("the Dagster code server did not come up (see its output above)")
        web = self._spawn(
            "webserver",
            [
                str(bin_dir / "dagster-webserver"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-w",
                str(workspace),
            ],
            env,
        )
        self._spawn("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env)
        if not wait_for_http(f"http://{self.host}:{self.port}/server_info", 180, web.alive):
            raise RuntimeError("the Dagster webserver did not come up (see its output above)")
        start_api(self, env)
        self.echo(f"Dagster UI: http://{self.host}:{self.port}  (Ctrl-C stops everything)")

    def wait(self) -> int:
        """Block until a child exits (that is an error), the database cannot be started
        again, or we are signalled."""
        while True:
            for child in self.children:
                if not child.alive():
                    self.echo(f"{child.name} exited with code {child.process.returncode}")
                    return 1
            if self.database is not None and not self.database.check():
                return 1
            time.sleep(0.5)

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.mute()  # Dagster's processes log tracebacks as they are torn down
        for child in reversed(self.children):
            child.stop(grace_s=10.0 if child.name in DAGSTER_CHILDREN else 3.0)
        self.children.clear()
        if self.gate is not None:
            self.gate.close()
        if self.started_database:
            from docpipe_dagster.store.server import pgdata_dir, stop_embedded

            stop_embedded()
            lifeline().release_postgres(pgdata_dir())
            self.echo("database: stopped")
        lifeline().close()
        release_supervision()


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def claim_supervision(home: Path | None = None) -> None:
    """$DOCPIPE_HOME/dev.pid: while it names a live `docpipe dev`, that one restarts the
    database, and other commands wait for it instead of starting it themselves."""
    from docpipe_dagster.store.server import SUPERVISOR_FILE

    path = (home or docpipe_home()) / SUPERVISOR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def release_supervision(home: Path | None = None) -> None:
    from docpipe_dagster.store.server import SUPERVISOR_FILE

    path = (home or docpipe_home()) / SUPERVISOR_FILE
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()


def dev_api_key(home: Path | None = None) -> str:
    """DOCPIPE_API_KEY, else a random key kept in $DOCPIPE_HOME/api-key (mode 0600) so that
    the dev API is never open and the key is never printed."""
    import secrets

    from docpipe_dagster.api.settings import api_key

    key = api_key()
    if key:
        return key
    path = (home or docpipe_home()) / "api-key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def start_api(stack: DevStack, env: dict[str, str]) -> None:
    """The HTTP API beside the UI (DOCPIPE_API_PORT, default 8003; same host as the UI)."""
    from docpipe_dagster.api.settings import ENV_API_KEY, ApiSettings

    port = ApiSettings.from_env().port
    # The push path: an upload is registered and its run launched through this webserver at
    # once, not on the intake sensor's next tick. A DOCPIPE_DAGSTER_URL the user set wins.
    web_host = "127.0.0.1" if stack.host in ("", "0.0.0.0", "::") else stack.host
    web_host = f"[{web_host}]" if ":" in web_host else web_host
    api_env = {
        **env,
        ENV_API_KEY: dev_api_key(),
        "DOCPIPE_DAGSTER_URL": env.get("DOCPIPE_DAGSTER_URL") or f"http://{web_host}:{stack.port}",
    }
    api = stack._spawn(
        "api",
        [sys.executable, "-m", "docpipe_dagster.api", "--host", stack.host, "--port", str(port)],
        api_env,
    )
    if not wait_for_http(f"http://{stack.host}:{port}/openapi.json", 60, api.alive):
        raise RuntimeError(f"the API did not start on port {port} (see its output above)")
    where = "DOCPIPE_API_KEY" if os.environ.get(ENV_API_KEY) else docpipe_home() / "api-key"
    stack.echo(f"API: http://{stack.host}:{port}/docs  (bearer key: {where})")


def run_dev(host: str, port: int, echo: Callable[[str], None]) -> int:
    from docpipe_dagster.config import service_settings

    stack = DevStack(
        host=host, port=port, start_mocks=service_settings().uses_local_mocks, echo=echo
    )

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a process started in the background of a non-interactive shell
    # inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt handler.
    # SIGHUP (a closed terminal, a dropped ssh session) stops the stack like Ctrl-C.
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        code = stack.wait()
    except KeyboardInterrupt:
        echo("stopping…")
    except PortInUse as exc:
        echo(f"error: {exc}")
        code = 2
    except RuntimeError as exc:
        echo(f"error: {exc}")
        code = 1
    finally:
        for sig in HANDLED_SIGNALS:  # a second Ctrl-C must not skip cleanup
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    return code
