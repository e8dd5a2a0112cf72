"""The `docpipe` command: database, mocks, the dev stack, ingest, search, status."""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings

import click

from docpipe_dagster.api.cli import register as register_api
from docpipe_dagster.api.cli import search_options
from docpipe_dagster.config import ENV_DAGSTER_DATABASE_URL, ENV_DATABASE_URL, docpipe_home


def _quiet_warnings() -> None:
    warnings.filterwarnings("ignore", category=Warning, module="platformdirs")
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """docpipe: files in storage -> parsed -> chunked -> embedded -> searchable in pgvector.

    \b
    Quick start:
      docpipe dev                      database, mocks and the Dagster UI on :3000
      docpipe ingest ./docs --wait     process files without the UI
      docpipe search "question"        top matching chunks
      docpipe status                   documents by state, failures with reasons
    """
    _quiet_warnings()


# --- database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The Postgres database (embedded unless DOCPIPE_DATABASE_URL is set)."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server (if used) and apply migrations."""
    from docpipe_dagster.store.migrate import migrate
    from docpipe_dagster.store.server import redact_url, resolve_database

    target = resolve_database()
    applied = migrate(target.url)
    where = f"embedded, data in {target.pgdata}" if target.embedded else "external"
    click.echo(f"database ready ({where}): {redact_url(target.url)}")
    click.echo(f"migrations applied now: {len(applied)}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server (its data stays)."""
    from docpipe_dagster.store.server import stop_embedded

    if os.environ.get(ENV_DATABASE_URL):
        click.echo("DOCPIPE_DATABASE_URL is set: an external database is not stopped by docpipe")
        return
    click.echo("stopped" if stop_embedded() else "the embedded server was not running")


@db.command("url")
@click.option("--dagster", "which", flag_value="dagster", help="URL of Dagster's storage database.")
@click.option(
    "--app", "which", flag_value="app", default=True, help="URL of the pipeline's database."
)
def db_url(which: str) -> None:
    """Print a connection URL (starts the embedded server if needed): psql "$(docpipe db url)"."""
    from docpipe_dagster.store.server import ready_database

    target = ready_database()
    click.echo(target.dagster_url if which == "dagster" else target.url)


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations from sql/ (a no-op when current)."""
    from docpipe_dagster.store.migrate import MigrationError, migrate
    from docpipe_dagster.store.server import resolve_database

    target = resolve_database()
    try:
        applied = migrate(target.url)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    if not applied:
        click.echo("migrations: up to date")
    for migration in applied:
        click.echo(f"applied {migration.path.name}")


@main.command("env")
def env_command() -> None:
    """Print shell exports for running `dagster` yourself: eval "$(docpipe env)"."""
    from docpipe_dagster.devstack import prepare_dagster_home
    from docpipe_dagster.store.server import ready_database

    target = ready_database()
    dagster_home = prepare_dagster_home()
    click.echo(f"export DAGSTER_HOME={shlex.quote(str(dagster_home))}")
    click.echo(f"export {ENV_DAGSTER_DATABASE_URL}={shlex.quote(target.dagster_url)}")
    click.echo(f"export DOCPIPE_HOME={shlex.quote(str(docpipe_home()))}")


# --- health -----------------------------------------------------------------------------


@main.command("validate")
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


# --- services ---------------------------------------------------------------------------


@main.command("mocks")
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


@main.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the UI listens.")
@click.option("--port", default=3000, show_default=True, type=int)
def dev_command(host: str, port: int) -> None:
    """Database, migrations, mocks, sample documents and `dagster dev` (UI on :3000)."""
    from docpipe_dagster.devstack import run_dev

    sys.exit(run_dev(host, port, click.echo))


# --- documents ----------------------------------------------------------------------------


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option(
    "--wait", is_flag=True, help="Process now, in this process, and wait for the outcome."
)
@click.option("--prefix", default="", help="Storage key prefix for the uploaded files.")
def ingest_command(paths: tuple[str, ...], wait: bool, prefix: str) -> None:
    """Put files (or folders) into storage; with --wait, process them through the asset graph.

    Exit status with --wait: 0 when every file completed, 1 when any failed (listed with why).
    Without --wait the files are left for the running `docpipe dev` sensor.
    """
    from docpipe_dagster.cli_documents import run_ingest

    sys.exit(run_ingest(paths, wait=wait, prefix=prefix))


@main.command("search")
@click.argument("query")
@click.option("-k", "--top-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (shape in README).")
@search_options
def search_command(query: str, k: int, as_json: bool, **options: object) -> None:
    """Top-k chunks for QUERY (hybrid, vector or text), with provenance and score."""
    from docpipe_dagster.api.cli import run_search

    sys.exit(run_search(query, k, as_json, **options))


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (shape in README).")
def status_command(as_json: bool) -> None:
    """Documents by state, chunk and vector totals, failures with reasons."""
    from docpipe_dagster.cli_documents import run_status

    sys.exit(run_status(as_json))


@main.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--stale-minutes",
    default=15,
    show_default=True,
    type=int,
    help="An in-flight document not moved for this long counts as stuck.",
)
def verify_command(as_json: bool, stale_minutes: int) -> None:
    """Check the pipeline's invariants; exit 1 with a readable report if any is violated."""
    from datetime import timedelta

    from docpipe_dagster.store.invariants import check_invariants
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.server import ready_database

    with connect(ready_database().url) as conn:
        report = check_invariants(conn, stale_after=timedelta(minutes=stale_minutes))
    if as_json:
        payload = {
            "ok": report.ok,
            "checked_jobs": report.checked_jobs,
            "violations": [v.__dict__ for v in report.violations],
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        click.echo(report.render())
    sys.exit(0 if report.ok else 1)


register_api(main)

if __name__ == "__main__":  # pragma: no cover
    main()
