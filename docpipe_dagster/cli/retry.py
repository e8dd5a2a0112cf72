"""`docpipe retry`: put failed documents (dead-lettered ones too) back in the queue."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


def run_retry(keys: Sequence[str], all_failed: bool, stage: str | None, wait: bool) -> int:
    """Re-queue the named failed documents (or every failed one) into a new batch."""
    from docpipe_dagster.actions.requeue import requeue
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    if not keys and not all_failed:
        raise click.UsageError("name the documents to retry (storage keys) or pass --all-failed")
    with Store.open(ready_database().url, max_size=1) as store:
        jobs = store.failed_versions(keys, stage=stage)
        missing = sorted(set(keys) - {j.storage_key for j in jobs})
        for key in missing:
            click.echo(f"not retried {key}: its newest version is not failed", err=True)
        if not jobs:
            click.echo("nothing to retry")
            # Parked documents are not failed: say where they are, and how they go on.
            for waiting in store.parked_services():
                click.echo(
                    f"{waiting.line()}: not failed, they resume once it answers "
                    "(or now: `docpipe ingest <folder> --wait`)"
                )
            return 1 if missing else 0
        done = requeue(store, jobs, "requested with docpipe retry", reset_attempts=True)
    moved = done.moved
    click.echo(f"re-queued {len(moved)} document(s) into batch {done.batch}")
    if not wait:
        click.echo("a running `docpipe dev` (its retry_sensor) picks them up; or pass --wait")
        return 1 if missing else 0
    from docpipe_dagster.cli.ingest import process_and_report

    keys_moved = [j.storage_key for j in jobs if j.job_id in set(moved)]
    code = process_and_report(keys_moved, [])
    return code or (1 if missing else 0)


@click.command("retry")
@click.argument("storage_keys", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every failed document.")
@click.option("--stage", default=None, help="Only those that failed at this stage (parse, embed…).")
@click.option("--wait", is_flag=True, help="Process them now, in this process.")
def retry_command(
    storage_keys: tuple[str, ...], all_failed: bool, stage: str | None, wait: bool
) -> None:
    """Re-queue failed documents (dead-lettered ones too) whose content did not change."""
    sys.exit(run_retry(storage_keys, all_failed, stage, wait))


COMMANDS = [retry_command]
