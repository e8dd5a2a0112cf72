"""A newcomer's first commands: ingest with nothing else running, a dead or unauthorised
service, a port already taken. Real subprocesses, real ports, a fresh database each."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import psutil

from docpipe_dagster.local.ports import port_in_use
from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.mock_servers import free_port, free_ports


def _docs(root: Path) -> Path:
    folder = root / "my-docs"
    folder.mkdir()
    (folder / "kites.md").write_text("# Kites\n\nA kite flies when wind lifts its sail.\n")
    (folder / "tides.txt").write_text("Tides follow the moon; spring tides are the largest.\n")
    return folder


def _mock_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if (
            "docpipe_dagster_mocks" in cmd
            and "all" in cmd
            and any(a.startswith("--openai-port") for a in cmd)
        ):
            found.append(proc)
    return found


def _alone_env(cli_env: dict[str, str]) -> dict[str, str]:
    """Local endpoints on ports where nothing listens: what a newcomer has after Ctrl-C."""
    env = dict(cli_env)
    parser_port, embedder_port = free_ports(2)  # mocks will be started on them: distinct
    env["LLAMAPARSE_BASE_URL"] = f"http://127.0.0.1:{parser_port}"
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{embedder_port}/v1"
    env.pop("LLAMA_CLOUD_API_KEY")
    env.pop("OPENAI_API_KEY")
    return env


def test_ingest_wait_starts_the_mocks_it_needs_and_stops_them(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = _alone_env(cli_env)
    before = {p.pid for p in _mock_processes()}
    out = docpipe(env, "ingest", str(_docs(tmp_path)), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 completed, 0 failed" in out.stdout
    assert "started the local mocks for this command" in out.stderr
    ports = [
        int(env[v].rsplit(":", 1)[1].split("/")[0])
        for v in ("LLAMAPARSE_BASE_URL", "OPENAI_BASE_URL")
    ]
    assert not any(port_in_use(p) for p in ports), "the mocks outlived the command"
    assert {p.pid for p in _mock_processes()} <= before


def test_unreachable_remote_parser_fails_in_seconds_and_marks_nothing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(cli_env)
    # Not a local URL to docpipe (so no mock is started for it), yet nothing listens: loopback.
    env["LLAMAPARSE_BASE_URL"] = f"http://127.0.0.2:{free_port()}"
    started = time.monotonic()
    out = docpipe(env, "ingest", str(_docs(tmp_path)), "--wait")
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stdout + out.stderr
    assert env["LLAMAPARSE_BASE_URL"] in out.stderr and "LLAMAPARSE_BASE_URL" in out.stderr
    assert elapsed < 15, elapsed  # the probe's own limit is 5 s; the rest is interpreter start
    status = docpipe(env, "status", "--json")
    assert '"total": 0' in status.stdout, status.stdout  # nothing registered, nothing failed


def test_wrong_key_names_the_variable_to_fix(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(cli_env)
    env["OPENAI_API_KEY"] = "sk-wrong"
    out = docpipe(env, "ingest", str(_docs(tmp_path)), "--wait")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "OPENAI_API_KEY" in out.stderr
    assert "sk-wrong" not in out.stderr + out.stdout  # the key itself is never echoed


def test_dev_with_a_taken_port_says_which_and_who_holds_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        out = docpipe(cli_env, "dev", "--port", str(port), timeout=60)
    finally:
        holder.close()
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert f"port {port} (Dagster UI) is already in use" in text
    assert f"pid {os.getpid()}" in text  # this test process holds it
    assert "--port" in text
    assert "Traceback" not in text


def test_the_readme_path_alone_leaves_no_process_behind(tmp_path: Path) -> None:
    """`ingest --wait`, then `search`, with nothing running and the embedded database: each
    command starts what it needs (database, mocks) and stops it again."""
    from docpipe_dagster_tests.support.dev_stack import processes_mentioning

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    for key in ("LLAMA_CLOUD_API_KEY", "OPENAI_API_KEY", "SUPABASE_SERVICE_KEY"):
        env.pop(key, None)
    parser_port, embedder_port = free_ports(2)
    env.update(
        DOCPIPE_HOME=str(home),
        LLAMAPARSE_BASE_URL=f"http://127.0.0.1:{parser_port}",
        OPENAI_BASE_URL=f"http://127.0.0.1:{embedder_port}/v1",
    )
    ingested = docpipe(env, "ingest", str(_docs(tmp_path)), "--wait")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert not (home / "pgdata" / "postmaster.pid").exists()
    found = docpipe(env, "search", "wind lifts a kite", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    assert "started the local mocks" in found.stderr
    assert '"storage_key": "my-docs/kites.md"' in found.stdout
    assert not (home / "pgdata" / "postmaster.pid").exists()
    assert processes_mentioning(str(home)) == []


def test_ports_picked_together_are_distinct_and_free() -> None:
    """One after another, the kernel can hand back a port just released: the mocks of one
    stack were once given the same port (storage and embedder), and the embedder never
    started. Picked together, every port is different and can be bound."""
    ports = free_ports(24)
    assert len(set(ports)) == 24
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
