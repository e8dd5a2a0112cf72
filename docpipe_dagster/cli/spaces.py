"""`docpipe spaces`: vector spaces with their coverage, `spaces backfill`, `spaces drop`."""

from __future__ import annotations

import json

import click


@click.group("spaces", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def spaces_group(ctx: click.Context, as_json: bool) -> None:
    """Vector spaces (one per embedding model and dimension): coverage, which is active."""
    if ctx.invoked_subcommand is not None:
        return
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.server import ready_database
    from docpipe_dagster.store.spaces import list_spaces

    with connect(ready_database().url, autocommit=True) as conn:
        spaces = [s.as_dict() for s in list_spaces(conn)]
    if as_json:
        click.echo(json.dumps(spaces, indent=2))
        return
    for s in spaces:
        mark = "*" if s["active"] else " "
        click.echo(
            f"{mark} {s['embedding_model']}:{s['dims']}  {s['vectors']} vectors, "
            f"{s['documents']}/{s['completed_documents']} documents "
            f"({s['coverage']:.0%}), index {s['index_state']}"
            + ("  [active]" if s["active"] else "")
        )


@spaces_group.command("drop")
@click.argument("space")
def spaces_drop(space: str) -> None:
    """Remove a space that search does not read: MODEL[:DIMS]."""
    from docpipe_dagster.actions import QueryError
    from docpipe_dagster.actions.spaces import parse_space
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.server import ready_database
    from docpipe_dagster.store.spaces import SpaceError, drop_space

    try:
        model, dims = parse_space(space)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from exc
    assert model is not None
    with connect(ready_database().url, autocommit=True) as conn:
        try:
            dropped = drop_space(conn, model, dims)
        except SpaceError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"dropped {dropped.name}")


@spaces_group.command("backfill")
def spaces_backfill() -> None:
    """Embed every completed document into the configured space; activate it when complete."""
    from docpipe_dagster.actions import QueryError
    from docpipe_dagster.actions.spaces import sync_configured_space
    from docpipe_dagster.store.server import ready_database

    try:
        result = sync_configured_space(ready_database().url, click.echo)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"backfilled {result['documents']} documents ({result['chunks']} chunks); "
        f"{'active' if result['active'] else 'not active yet'}"
    )


COMMANDS = [spaces_group]
