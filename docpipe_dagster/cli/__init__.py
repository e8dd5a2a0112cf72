"""The `docpipe` command: database, mocks, the dev stack, ingest, search, status.

One module per command group: database.py (db, env), stack.py (dev, mocks, validate),
documents.py (ingest, search, status, verify), retry.py (retry, and the story behind
`status KEY` / `status --failed`). Imports inside the commands keep `--help`
fast.
"""

from __future__ import annotations

import warnings

import click


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


def _register() -> None:
    from docpipe_dagster.cli import database, documents, retry, stack

    for module in (database, stack, documents, retry):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
