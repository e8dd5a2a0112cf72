"""`docpipe search` (body), `docpipe api`: registered on the main group by `register()`."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

import click

from docpipe_dagster.store.search import MODES


def run_search(
    query: str,
    k: int,
    as_json: bool,
    *,
    mode: str | None = None,
    prefix: str | None = None,
    media_types: tuple[str, ...] = (),
    document_ids: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    ef_search: int | None = None,
    space: str | None = None,
) -> int:
    """`docpipe search`: the SQL search function, printed for a person or as JSON."""
    import uuid

    from docpipe_dagster.api.service import QueryError, answer
    from docpipe_dagster.api.settings import SearchSettings
    from docpipe_dagster.clients.embeddings import EmbeddingError
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.search import SearchError, SearchFilters, set_search_language
    from docpipe_dagster.store.server import ready_database

    settings = SearchSettings.from_env()
    try:
        ids = [uuid.UUID(d) for d in document_ids]
    except ValueError as exc:
        raise click.BadParameter(f"not a document id (uuid): {exc}") from exc
    model, dims = parse_space(space)
    filters = SearchFilters(prefix, media_types or None, ids or None, since, until)
    with connect(ready_database().url, autocommit=True) as conn:
        set_search_language(conn, settings.language)
        try:
            payload = asyncio.run(
                answer(
                    conn,
                    query,
                    k=k,
                    mode=mode or settings.mode,
                    filters=filters,
                    ef_search=ef_search or settings.ef_search,
                    space_model=model,
                    space_dims=dims,
                )
            )
        except (QueryError, SearchError) as exc:
            raise click.ClickException(str(exc)) from exc
        except EmbeddingError as exc:
            raise click.ClickException(f"embedding service error: {exc}") from exc
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return 0
    if not payload["results"]:
        click.echo("no results (nothing searchable yet? see `docpipe status`)")
        return 0
    for r in payload["results"]:
        heading = " > ".join(r["heading_path"])
        where = f"chars {r['char_start']}-{r['char_end']}" if r["char_start"] is not None else ""
        if r["page_start"] is not None:
            where = f"{page_label(r['page_start'], r['page_end'])}  {where}"
        click.secho(
            f"{r['rank']}. {r['storage_key']} #{r['chunk_index']}  score {r['score']:.3f}"
            f"  {where}".rstrip(),
            bold=True,
        )
        if heading:
            click.echo(f"   {heading}")
        text = " ".join(str(r["text"]).split())
        click.echo(f"   {text[:400]}{'…' if len(text) > 400 else ''}\n")
    return 0


def page_label(first: int, last: int | None) -> str:
    """The page range as people write it: page 2, pages 2–3."""
    if last is None or last == first:
        return f"page {first}"
    return f"pages {first}\u2013{last}"


def parse_space(space: str | None) -> tuple[str | None, int | None]:
    """MODEL[:DIMS] -> (model, dims)."""
    if not space:
        return None, None
    model, _, dims = space.rpartition(":") if ":" in space else (space, "", "")
    if not dims:
        return space, None
    if not dims.isdigit():
        raise click.BadParameter(f"space is MODEL[:DIMS], got {space!r}")
    return model, int(dims)


def search_options(command: click.Command) -> click.Command:
    """The options `docpipe search` adds beyond QUERY, -k and --json."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default=None, help="Default: hybrid."),
        click.option("--prefix", default=None, help="Only storage keys starting with this."),
        click.option("--media-type", "media_types", multiple=True, help="e.g. application/pdf"),
        click.option("--document-id", "document_ids", multiple=True, help="Only these documents."),
        click.option("--since", type=click.DateTime(), default=None, help="Committed at or after."),
        click.option("--until", type=click.DateTime(), default=None, help="Committed before."),
        click.option("--ef-search", type=click.IntRange(1, 1000), default=None),
        click.option("--space", default=None, help="MODEL[:DIMS]; default: the active space."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def register(main: click.Group) -> None:
    """Add `docpipe api` and `docpipe spaces` to the main command group."""

    @main.group("spaces", invoke_without_command=True)
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
        from docpipe_dagster.store.pool import connect
        from docpipe_dagster.store.server import ready_database
        from docpipe_dagster.store.spaces import SpaceError, drop_space

        model, dims = parse_space(space)
        assert model is not None
        with connect(ready_database().url, autocommit=True) as conn:
            try:
                dropped = drop_space(conn, model, dims)
            except SpaceError as exc:
                raise click.ClickException(str(exc)) from exc
        click.echo(f"dropped {dropped.model}:{dropped.dims}")

    @spaces_group.command("backfill")
    def spaces_backfill() -> None:
        """Embed every completed document into the configured space; activate it when complete."""
        from docpipe_dagster.api.service import QueryError, sync_configured_space
        from docpipe_dagster.store.server import ready_database

        try:
            result = sync_configured_space(ready_database().url, click.echo)
        except QueryError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(
            f"backfilled {result['documents']} documents ({result['chunks']} chunks); "
            f"{'active' if result['active'] else 'not active yet'}"
        )

    @main.command("api")
    @click.option("--host", default=None, help="Default DOCPIPE_API_HOST or 127.0.0.1.")
    @click.option("--port", default=None, type=int, help="Default DOCPIPE_API_PORT or 8003.")
    def api_command(host: str | None, port: int | None) -> None:
        """The HTTP API alone: upload, documents, search, health (needs DOCPIPE_API_KEY)."""
        from docpipe_dagster.api.server import serve

        sys.exit(serve(host, port, click.echo))
