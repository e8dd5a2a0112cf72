"""`docpipe search`: top-k chunks through the search action (actions/search.py), the
same answer GET /v1/search gives."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click

from docpipe_dagster.store.search import MODES


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


@click.command("search")
@click.argument("query")
@click.option("-k", "--top-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (shape in docs/API.md)."
)
@search_options
def search_command(query: str, k: int, as_json: bool, **options: object) -> None:
    """Top-k chunks for QUERY (hybrid, vector or text), with provenance and score."""
    from docpipe_dagster.local.services import ServiceProblem, services_for_command

    if options.get("mode") == "text":  # full text needs no embedder
        sys.exit(run_search(query, k, as_json, **options))
    try:
        # As ingest: a local embedder with nothing listening is started for this command.
        with services_for_command(lambda line: click.echo(line, err=True), only=("embedder",)):
            code = run_search(query, k, as_json, **options)
    except ServiceProblem as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    sys.exit(code)


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
    """`docpipe search`: the search action, printed for a person or as JSON."""
    import uuid

    from docpipe_dagster.actions import QueryError
    from docpipe_dagster.actions.search import run_query
    from docpipe_dagster.actions.spaces import parse_space
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
    try:
        parse_space(space)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from exc
    filters = SearchFilters(prefix, media_types or None, ids or None, since, until)
    with connect(ready_database().url, autocommit=True) as conn:
        set_search_language(conn, settings.language)
        try:
            payload = run_query(
                conn,
                query,
                k=k,
                mode=mode or settings.mode,
                filters=filters,
                ef_search=ef_search or settings.ef_search,
                space=space,
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


COMMANDS = [search_command]
