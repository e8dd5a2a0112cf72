"""The local stack: `docpipe dev`, `docpipe mocks`, `docpipe validate`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import click


@click.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--webserver-url",
    default=None,
    help="Also check a Dagster webserver (default: http://127.0.0.1:3000 when it answers).",
)
def validate_command(as_json: bool, webserver_url: str | None) -> None:
    """Check every component: database, pgvector, migrations, services, webserver, daemon."""
    from docpipe_dagster.health import run_all_checks

    results = run_all_checks(webserver_url=webserver_url)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="docpipe environment")
        for column in ("check", "status", "latency ms", "detail"):
            table.add_column(column)
        for r in results:
            status = "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
            table.add_row(r.name, status, f"{r.latency_ms:.1f}", r.detail)
        Console().print(table)
    sys.exit(0 if all(r.ok for r in results) else 1)


@click.command("mocks")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency-ms", type=float, default=None, help="Added latency per request.")
@click.option("--jitter-ms", type=float, default=None, help="Random extra latency, 0..N ms.")
@click.option("--faults", default=None, help="JSON list of fault specs (see mocks/README.md).")
def mocks_command(
    host: str, latency_ms: float | None, jitter_ms: float | None, faults: str | None
) -> None:
    """Run the mocks where the service URLs point (storage :8000, LlamaParse :8001, OpenAI :8002)."""
    from docpipe_dagster.local.mocks import MocksDidNotStart, mock_ports, start_mocks
    from docpipe_dagster.local.ports import PortInUse, require_free_ports

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit, as in `docpipe dev`: started in the background of a non-interactive shell,
    # SIGINT arrives ignored; a closed terminal (SIGHUP) or SIGTERM stops the mocks too. Were
    # this process killed outright, the lifeline stops them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    wanted = mock_ports()  # as `docpipe dev` starts them (none for a parser not used)
    try:
        require_free_ports(
            [(f"{name} mock", port, "stop it") for name, port in wanted.items()], host
        )
        # Their output comes to this terminal; they stop with this command, however it ends.
        mocks = start_mocks(
            wanted,
            host=host,
            launch=_in_this_terminal,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            faults=faults,
        )
    except (PortInUse, MocksDidNotStart) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        sys.exit(0)  # stopped while starting: the lifeline stops what had started
    ports = ", ".join(f"{name} :{port}" for name, port in wanted.items())
    click.echo(f"mocks on {host}: {ports} (Ctrl-C stops)")
    try:
        code = mocks.process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        mocks.stop()
    sys.exit(code)


def _in_this_terminal(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    from docpipe_dagster.local.lifeline import spawn

    return spawn(args, env=env, stdin=subprocess.DEVNULL)


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the UI listens.")
@click.option("--port", default=3000, show_default=True, type=int)
def dev_command(host: str, port: int) -> None:
    """Database, migrations, mocks, samples, and Dagster (code server, webserver on :3000, daemon)."""
    from docpipe_dagster.local.dev_stack import run_dev

    sys.exit(run_dev(host, port, click.echo))


COMMANDS = [validate_command, mocks_command, dev_command]
