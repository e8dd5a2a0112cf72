"""The `docpipe` command: database, mocks, the dev stack, ingest, search, status.

One module per command group: database.py (db, env), stack.py (dev, mocks, validate),
ingest.py, search.py, status.py (status, verify), retry.py, spaces.py, api.py, metrics.py.
Each lists its commands in COMMANDS; the use cases they run live in actions/. Imports inside
the commands keep `--help` fast.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import click


def _quiet_warnings() -> None:
    warnings.filterwarnings("ignore", category=Warning, module="platformdirs")
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    # Dagster's notes on its own internals are filtered where the code loads
    # (definitions.DAGSTERS_OWN_WARNINGS), precisely, in every process that loads it.


def _skip_the_final_collection() -> None:
    """At exit the interpreter garbage-collects everything still alive: after `ingest
    --wait`, Dagster's definitions and the runs' events, ~0.8 s after the summary was
    printed. The process is ending and the OS takes the memory back: freeze it instead."""
    gc.freeze()


# Commands that start the embedded database on purpose and leave it running for others.
KEEPS_DATABASE = frozenset({"db", "dev", "env"})


def _stop_database_if_started(ctx: click.Context) -> None:
    """A one-off command (ingest, search, status…) that had to start the embedded database
    stops it again when done: nothing is left running behind the user's back."""
    from docpipe_dagster.config import settings
    from docpipe_dagster.store.server import (
        embedded_running,
        stop_started_here,
        stop_with_this_process,
    )

    if settings().database_url or ctx.invoked_subcommand in KEEPS_DATABASE:
        return
    if embedded_running():
        return  # someone else's (a `docpipe dev`, `docpipe db start`): theirs to stop
    stop_with_this_process()  # a server it starts stops with it, even if it is killed
    ctx.call_on_close(stop_started_here)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """docpipe: files in storage -> parsed -> chunked -> embedded -> searchable in pgvector.

    \b
    Quick start:
      docpipe dev                      database, mocks and the Dagster UI on :3000
      docpipe ingest ./docs --wait     process files without the UI
      docpipe search "question"        top matching chunks
      docpipe status                   documents by state, failures with reasons
    """
    _quiet_warnings()
    # Registered first, so it runs last, after the command has said everything it says.
    ctx.call_on_close(_skip_the_final_collection)
    from docpipe_dagster.logs import configure as configure_logging

    try:
        configure_logging(level=logging.WARNING)
    except ValueError:  # a bad DOCPIPE_LOG_FORMAT must not hide `--help`; commands report it
        configure_logging("console", level=logging.WARNING)
    with contextlib.suppress(ValueError):  # a bad setting is the command's to report
        _stop_database_if_started(ctx)


def run_command(
    command: click.Command,
    argv: Sequence[str] | None = None,
    prog_name: str | None = None,
    obj: Any = None,
) -> int:
    """Run a click command as a function: its exit status (2 for a usage error, printed)
    instead of a SystemExit. For `python -m` entry points that return their status; `obj`
    becomes the context's `obj`."""
    try:
        command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog_name,
            obj=obj,
            standalone_mode=False,
        )
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 1
    return 0


def _register() -> None:
    from docpipe_dagster.cli import (
        api,
        database,
        ingest,
        metrics,
        retry,
        search,
        spaces,
        stack,
        status,
    )

    for module in (database, stack, ingest, search, status, retry, spaces, api, metrics):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
