"""The pieces behind "nothing outlives docpipe": the lifeline, the port pre-check, the output
gate, and a one-off command meeting a crashed embedded database. Real processes and ports."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from docpipe_dagster.local.lifeline import pid_alive, postmaster_pid
from docpipe_dagster.local.supervision import OutputGate
from docpipe_dagster.store.server import embedded_running, stop_embedded
from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.dev_stack import wait_for, wait_for_none
from docpipe_dagster_tests.support.mock_servers import free_ports


def test_a_killed_parent_takes_its_children_and_grandchildren_along(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from docpipe_dagster.local.lifeline import spawn
            # a child that ignores SIGTERM, with a grandchild in its process group
            child = spawn(["bash", "-c", "trap '' TERM; sleep 300 & sleep 301; wait"])
            print(child.pid, flush=True)
            time.sleep(300)
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        family = wait_for(
            lambda: [c.pid for c in psutil.Process(child_pid).children()], 10, "the grandchild"
        )
        parent.kill()
        parent.wait(5)
        # SIGTERM is ignored: the watchdog's SIGKILL after its grace period ends them.
        survivors = wait_for_none(lambda: [p for p in [child_pid, *family] if pid_alive(p)], 10)
        assert survivors == []
    finally:
        if parent.poll() is None:
            parent.kill()


def test_dev_checks_the_api_port_first_and_names_the_whole_holder(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    api_port, ui_port = free_ports(2)
    # A holder whose command line is longer than the 80 characters the message used to keep.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True); "
            "time.sleep(120)",
            str(api_port),
            "--a-long-argument-so-the-command-line-is-well-past-eighty-characters",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        env = {**cli_env, "DOCPIPE_API_PORT": str(api_port)}
        started = time.monotonic()
        out = docpipe(env, "dev", "--port", str(ui_port), timeout=60)
    finally:
        holder.kill()
        holder.wait()
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert time.monotonic() - started < 30  # refused before anything started
    assert f"port {api_port} (HTTP API) is already in use by pid {holder.pid}" in text
    assert "--a-long-argument-so-the-command-line-is-well-past-eighty-characters" in text
    assert "DOCPIPE_API_PORT" in text
    assert "database:" not in text and "Traceback" not in text


def test_the_gate_keeps_output_out_of_the_console_while_muted(tmp_path: Path) -> None:
    console = io.BytesIO()
    gate = OutputGate(tmp_path / "hidden.log", console)
    gate.write(b"before\n")
    gate.mute()
    gate.write(b"Traceback (most recent call last):\n")
    gate.write(b"psycopg2.OperationalError: connection refused\n")
    gate.unmute_after(0.2)
    gate.write(b"still quiet\n")
    time.sleep(0.3)
    gate.write(b"after\n")
    gate.close()
    assert console.getvalue() == b"before\nafter\n"
    assert gate.hidden == 3
    assert (tmp_path / "hidden.log").read_bytes().count(b"\n") == 3


def test_the_gate_mutes_on_a_refused_database_line_only_when_it_is_down(tmp_path: Path) -> None:
    console = io.BytesIO()
    gate = OutputGate(tmp_path / "hidden.log", console)
    down = False
    gate.database_down = lambda line: b".s.PGSQL." in line and down
    gate.write(b'connection to server on socket "/x/.s.PGSQL.5432" failed\n')
    down = True
    gate.write(b'connection to server on socket "/x/.s.PGSQL.5432" failed\n')
    gate.write(b"and its traceback\n")
    assert console.getvalue().count(b"\n") == 1
    assert gate.hidden == 2


def test_a_stale_postmaster_pid_is_not_a_running_server(tmp_path: Path) -> None:
    pgdata = tmp_path / "home" / "pgdata"
    pgdata.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (pgdata / "postmaster.pid").write_text(f"{gone.pid}\n{pgdata}\n")
    assert postmaster_pid(pgdata) is None
    assert not embedded_running(tmp_path / "home")
    assert stop_embedded(tmp_path / "home") is False  # and nothing was started to stop it


def test_a_command_meeting_a_crashed_database_says_so_and_stops_it_again(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    env["DOCPIPE_HOME"] = str(home)
    started = docpipe(env, "db", "start")
    assert started.returncode == 0, started.stderr
    pid = postmaster_pid(home / "pgdata")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash: postmaster.pid stays behind
    wait_for(lambda: not pid_alive(pid), 10, "the postmaster to die")
    assert (home / "pgdata" / "postmaster.pid").exists()

    out = docpipe(env, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count("the embedded database had stopped without a clean shutdown") == 1
    assert "stops when it ends" in out.stderr
    # the command restarted it for itself only: nobody is left running it
    assert postmaster_pid(home / "pgdata") is None


def test_while_docpipe_dev_supervises_the_database_others_wait_instead_of_starting_it(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from docpipe_dagster.store import server

    home = tmp_path / "home"
    home.mkdir()
    supervisor = subprocess.Popen(["sleep", "60"])  # stands in for a live `docpipe dev`
    try:
        (home / server.SUPERVISOR_FILE).write_text(f"{supervisor.pid}\n")
        monkeypatch.setattr(server, "SUPERVISOR_WAIT_S", 1.0)
        try:
            server.start_embedded(home)
        except RuntimeError as exc:
            assert "did not come back within 1 s" in str(exc)
            assert f"pid {supervisor.pid}" in str(exc)
        else:
            raise AssertionError("started the database under a supervisor's feet")
    finally:
        supervisor.kill()
        supervisor.wait()
    assert f"waiting for `docpipe dev` (pid {supervisor.pid}) to restart it" in (
        capsys.readouterr().err
    )
    assert not (home / "pgdata" / "postmaster.pid").exists()
