"""The local stack: `docpipe dev`, `docpipe mocks`, `docpipe validate`."""

from __future__ import annotations

import json
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
    """Run the three mocks: storage :8000, LlamaParse :8001, OpenAI :8002."""
    from mocks.serve import serve

    overrides: dict[str, object] = {}
    if latency_ms is not None:
        overrides["latency_ms"] = latency_ms
    if jitter_ms is not None:
        overrides["jitter_ms"] = jitter_ms
    if faults:
        overrides["faults"] = json.loads(faults)
    click.echo(f"mocks on {host}: storage :8000, llamaparse :8001, openai :8002 (Ctrl-C stops)")
    serve(["storage", "llamaparse", "openai"], host, **overrides)


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the UI listens.")
@click.option("--port", default=3000, show_default=True, type=int)
def dev_command(host: str, port: int) -> None:
    """Database, migrations, mocks, samples, and Dagster (code server, webserver on :3000, daemon)."""
    from docpipe_dagster.devstack import run_dev

    sys.exit(run_dev(host, port, click.echo))


COMMANDS = [validate_command, mocks_command, dev_command]
