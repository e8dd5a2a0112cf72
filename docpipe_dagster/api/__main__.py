"""`python -m docpipe_dagster.api [--host H] [--port P]`: what `docpipe api` and `docpipe dev` run."""

from __future__ import annotations

import sys

import click

from docpipe_dagster.api.server import serve


@click.command()
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
def main(host: str | None, port: int | None) -> None:
    sys.exit(serve(host, port, click.echo))


if __name__ == "__main__":  # pragma: no cover
    main()
