"""`docpipe status` (documents by state; with KEY one document's story; --failed the
dead-letter list) and `docpipe verify` (the pipeline's invariants)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from docpipe_dagster.config import settings


@click.command("status")
@click.argument("storage_key", required=False)
@click.option("--failed", is_flag=True, help="Only the failed documents (the dead-letter list).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable output (docs/USAGE.md; with KEY, docs/API.md).",
)
def status_command(storage_key: str | None, failed: bool, as_json: bool) -> None:
    """Documents by state and failures; with STORAGE_KEY, that document's versions and events."""
    if storage_key:
        sys.exit(run_story(storage_key, as_json))
    if failed:
        sys.exit(run_failed(as_json))
    sys.exit(run_status(as_json))


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--stale-minutes",
    default=lambda: settings().stale_minutes,
    show_default="DOCPIPE_STALE_MINUTES, else 15",
    type=int,
    help="An in-flight document not moved for this long counts as stuck.",
)
def verify_command(as_json: bool, stale_minutes: int) -> None:
    """Check the pipeline's invariants; exit 1 with a readable report if any is violated.

    With the Dagster instance at hand (DAGSTER_HOME), a document in flight is fine while a
    run of its batch is live and `stranded` once every run of it has ended; without it, one
    not moved for --stale-minutes counts as stuck."""
    from datetime import timedelta

    from docpipe_dagster.store.invariants import check_invariants, in_flight_batches
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.server import ready_database

    with connect(ready_database().url) as conn:
        runs = _batch_run_states(in_flight_batches(conn))
        report = check_invariants(
            conn, stale_after=timedelta(minutes=stale_minutes), run_states=runs
        )
    if as_json:
        payload = {
            "ok": report.ok,
            "checked_jobs": report.checked_jobs,
            "in_live_runs": report.in_live_runs,
            "waiting": report.waiting,
            "runs_known": runs is not None,
            "violations": [v.__dict__ for v in report.violations],
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        click.echo(report.render())
    sys.exit(0 if report.ok else 1)


def _batch_run_states(batches: list[str]) -> dict[str, str] | None:
    """Each batch's runs as Dagster records them; None when no instance can be asked."""
    import os

    if not batches:
        return {}
    if not os.environ.get("DAGSTER_HOME"):
        return None
    try:
        import dagster as dg

        from docpipe_dagster.defs.intake.recovery import batch_run_states

        with dg.DagsterInstance.get() as instance:
            return batch_run_states(instance, batches)
    except Exception:  # no instance to ask: the staleness rule applies
        return None


def _open_store():
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    return Store.open(ready_database().url, max_size=1)


def _event_line(stage: str, kind: str, payload: dict, at: datetime) -> str:
    detail = payload.get("reason") or payload.get("batch") or ""
    extra = f"  {detail}" if detail else ""
    return f"    {at:%Y-%m-%d %H:%M:%S}  {stage:<7} {kind}{extra}"


def run_story(storage_key: str, as_json: bool) -> int:
    from docpipe_dagster.store.documents import document_story

    with _open_store() as store:
        story = store.document_story(storage_key)
    if story is None:
        click.echo(f"no document with storage key {storage_key!r} (see `docpipe status`)", err=True)
        return 1
    if as_json:
        payload = document_story(storage_key, story)
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
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


def run_status(as_json: bool) -> int:
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    with Store.open(ready_database().url, max_size=1) as store:
        status = store.status()
        waiting = store.parked_services()
    status["waiting"] = [w.as_dict() for w in waiting]
    if as_json:
        click.echo(json.dumps(status, ensure_ascii=False, indent=2, default=str))
        return 0
    docs = status["documents"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(docs["by_state"].items())) or "none"
    click.echo(f"documents: {docs['total']} ({states})")
    click.echo(
        f"searchable: {status['searchable_documents']} documents, {status['chunks']} chunks, {status['vectors']} vectors"
    )
    if status.get("parsers"):
        from docpipe_dagster.clients.parsing import parser_label

        by_label: dict[str, int] = {}
        for profile, n in status["parsers"].items():
            by_label[parser_label(profile)] = by_label.get(parser_label(profile), 0) + n
        click.echo("parsed by: " + ", ".join(f"{n} {label}" for label, n in by_label.items()))
    buffers = status["buffers"]
    if buffers["chunks"] or buffers["vectors"]:
        click.echo(f"staged: {buffers['chunks']} chunks, {buffers['vectors']} vectors in flight")
    _echo_waiting(waiting)
    for failure in status["failures"]:
        retry = " (retry scheduled)" if failure["retry_scheduled"] else ""
        click.echo(
            f"FAILED {failure['storage_key']} at {failure['stage']}: {failure['reason']}{retry}"
        )
    return 0


def _echo_waiting(waiting: list[Any]) -> None:
    """Parked documents: which service they wait for, since when, and what happens next."""
    for w in waiting:
        click.echo(f"{w.line()}: {w.reason}")
    if waiting:
        click.echo(
            "  they resume by themselves once it answers (under `docpipe dev`); "
            "or now: `docpipe ingest <folder> --wait`"
        )


COMMANDS = [status_command, verify_command]
