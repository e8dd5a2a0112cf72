"""`docpipe metrics`: a standalone Prometheus exporter (docs/OPERATIONS.md)."""

from __future__ import annotations

import sys

import click


@click.command("metrics")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Where to listen (0.0.0.0 in a container, behind its network).",
)
@click.option("--port", default=9464, show_default=True, type=int)
def metrics_command(host: str, port: int) -> None:
    """Serve the pipeline's Prometheus metrics at /metrics, read from the database per scrape."""
    from docpipe_dagster.config import settings
    from docpipe_dagster.metrics.exporter import serve
    from docpipe_dagster.store.server import resolve_database

    # An external database as configured; else the embedded one, never started from here
    # (the exporter reports it down until it runs).
    url = settings().database_url or resolve_database(start=False).url
    sys.exit(serve(url, host, port, click.echo))


COMMANDS = [metrics_command]
