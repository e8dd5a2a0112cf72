"""`docpipe api`: the HTTP API alone (docs/API.md)."""

from __future__ import annotations

import sys

import click


@click.command("api")
@click.option("--host", default=None, help="Default DOCPIPE_API_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default DOCPIPE_API_PORT or 8003.")
def api_command(host: str | None, port: int | None) -> None:
    """The HTTP API alone: upload, documents, search, health (needs DOCPIPE_API_KEY)."""
    from docpipe_dagster.api.server import serve

    sys.exit(serve(host, port, click.echo))


COMMANDS = [api_command]
