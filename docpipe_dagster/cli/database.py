"""The database commands: `docpipe db start|stop|url|migrate` and `docpipe env`."""

from __future__ import annotations

import shlex

import click

from docpipe_dagster.config import ENV_DAGSTER_DATABASE_URL, docpipe_home, settings


@click.group()
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

    if settings().database_url:
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
    from docpipe_dagster.store.server import embedded_running, resolve_database, stop_embedded

    was_running = embedded_running()
    target = resolve_database()
    try:
        applied = migrate(target.url)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        # Like every one-off command: an embedded server started for this is stopped again
        # (`docpipe db start` is the one that leaves it running).
        if target.embedded and not was_running:
            stop_embedded()
    if not applied:
        click.echo("migrations: up to date")
    for migration in applied:
        click.echo(f"applied {migration.path.name}")


@click.command("env")
def env_command() -> None:
    """Print shell exports for running `dagster` yourself: eval "$(docpipe env)"."""
    from docpipe_dagster.local.dev_stack import prepare_dagster_home
    from docpipe_dagster.store.server import ready_database

    target = ready_database()
    dagster_home = prepare_dagster_home()
    click.echo(f"export DAGSTER_HOME={shlex.quote(str(dagster_home))}")
    click.echo(f"export {ENV_DAGSTER_DATABASE_URL}={shlex.quote(target.dagster_url)}")
    click.echo(f"export DOCPIPE_HOME={shlex.quote(str(docpipe_home()))}")


COMMANDS = [db, env_command]
