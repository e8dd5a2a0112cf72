"""The `docpipe` command: database, mocks, the dev stack, ingest, search, status."""

from __future__ import annotations

import json
import os
import sys
import warnings

import click

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
    click.echo(f"export DAGSTER_HOME={_shell_quote(str(dagster_home))}")
    click.echo(f"export {ENV_DAGSTER_DATABASE_URL}={_shell_quote(target.dagster_url)}")
    click.echo(f"export DOCPIPE_HOME={_shell_quote(str(docpipe_home()))}")


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


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


if __name__ == "__main__":  # pragma: no cover
    main()
