"""`docpipe status KEY`, `docpipe status --failed` and `docpipe retry`: one document's story,
the dead-letter list, and putting failed documents back in the queue."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

import click


def _open_store():
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    return Store.open(ready_database().url, max_size=1)


def _event_line(stage: str, kind: str, payload: dict, at: datetime) -> str:
    detail = payload.get("reason") or payload.get("batch") or ""
    extra = f"  {detail}" if detail else ""
    return f"    {at:%Y-%m-%d %H:%M:%S}  {stage:<7} {kind}{extra}"


def run_story(storage_key: str, as_json: bool) -> int:

    with _open_store() as store:
        story = store.document_story(storage_key)
    if story is None:
        click.echo(f"no document with storage key {storage_key!r} (see `docpipe status`)", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(story.as_dict(), ensure_ascii=False, indent=2))
        return 0
    click.echo(f"{story.storage_key}: {len(story.versions)} version(s), newest first")
    for v in story.versions:
        click.echo(
            f"  {v.state.upper()}  sha256 {v.content_sha256[:12]}  {v.size_bytes} bytes"
            f"  batch {v.batch_key}  attempts {v.attempts}"
            + (f"  chunks {v.chunk_count}" if v.chunk_count is not None else "")
        )
        if v.state == "failed":
            when = (
                f"; next attempt {v.next_attempt_at:%H:%M:%S}"
                if v.next_attempt_at
                else ("; dead-lettered: `docpipe retry` re-queues it" if v.retryable else "")
            )
            click.echo(
                f"    failed at {v.failed_stage}: {v.failure_reason} [{v.failure_code}]{when}"
            )
        for e in v.events:
            click.echo(_event_line(e.stage, e.event_type, e.payload, e.created_at))
    return 0


def run_failed(as_json: bool) -> int:

    with _open_store() as store:
        failed = store.failed_versions()
    rows = [
        {"storage_key": j.storage_key, "reason": j.failure_reason, "attempts": j.attempts}
        for j in failed
    ]
    if as_json:
        click.echo(json.dumps({"failed": rows}, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        click.echo("no failed documents")
    for row in rows:
        click.echo(f"FAILED {row['storage_key']} (attempts {row['attempts']}): {row['reason']}")
    return 0


def run_retry(keys: Sequence[str], all_failed: bool, stage: str | None, wait: bool) -> int:
    """Re-queue the named failed documents (or every failed one) into a new batch."""
    from docpipe_dagster.core.ids import batch_key as make_batch_key
    from docpipe_dagster.store.documents import REQUEUE_PREFIX

    if not keys and not all_failed:
        raise click.UsageError("name the documents to retry (storage keys) or pass --all-failed")
    with _open_store() as store:
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
        batch = REQUEUE_PREFIX + make_batch_key(
            datetime.now(timezone.utc), [j.job_id for j in jobs]
        )
        moved = store.requeue_failed(
            jobs, batch, "requested with docpipe retry", reset_attempts=True
        )
    click.echo(f"re-queued {len(moved)} document(s) into batch {batch}")
    if not wait:
        click.echo("a running `docpipe dev` (its retry_sensor) picks them up; or pass --wait")
        return 1 if missing else 0
    from docpipe_dagster.cli.documents import process_and_report

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
