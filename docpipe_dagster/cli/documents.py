"""The document commands: `docpipe ingest`, `search`, `status`, `verify`, and what they run
(search itself: docpipe_dagster.api.cli, shared with the HTTP API)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from docpipe_dagster.api.cli import search_options
from docpipe_dagster.config import settings
from docpipe_dagster.core.media import is_ignored_key
from docpipe_dagster.store.schema import JobState


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option(
    "--wait", is_flag=True, help="Process now, in this process, and wait for the outcome."
)
@click.option("--prefix", default="", help="Storage key prefix for the uploaded files.")
def ingest_command(paths: tuple[str, ...], wait: bool, prefix: str) -> None:
    """Put files (or folders) into storage; with --wait, process them through the asset graph.

    Exit status with --wait: 0 when every file completed, 1 when any failed (listed with why).
    Without --wait the files are left for the running `docpipe dev` sensor.
    """
    sys.exit(run_ingest(paths, wait=wait, prefix=prefix))


@click.command("search")
@click.argument("query")
@click.option("-k", "--top-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (shape in README).")
@search_options
def search_command(query: str, k: int, as_json: bool, **options: object) -> None:
    """Top-k chunks for QUERY (hybrid, vector or text), with provenance and score."""
    from docpipe_dagster.api.cli import run_search
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


@click.command("status")
@click.argument("storage_key", required=False)
@click.option("--failed", is_flag=True, help="Only the failed documents (the dead-letter list).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (shape in README).")
def status_command(storage_key: str | None, failed: bool, as_json: bool) -> None:
    """Documents by state and failures; with STORAGE_KEY, that document's versions and events."""
    from docpipe_dagster.cli.retry import run_failed, run_story

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


def _collect(paths: tuple[str, ...], prefix: str) -> list[tuple[str, Path]]:
    """(storage key, file) pairs: a file keeps its name, a folder its name and layout."""
    prefix = prefix.strip("/")
    pairs: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            pairs.append((path.name, path))
            continue
        base = path.resolve()
        for file in sorted(base.rglob("*")):
            if file.is_file() and not file.is_symlink():
                pairs.append((f"{base.name}/{file.relative_to(base).as_posix()}", file))
    if prefix:
        pairs = [(f"{prefix}/{key}", file) for key, file in pairs]
    return pairs


@dataclass
class Upload:
    """What `docpipe ingest` is about: the files it was given, and what became of them."""

    files: list[tuple[str, Path]]  # (storage key, file), hidden/temporary files left out
    ignored: list[str]
    written: list[str] = field(default_factory=list)  # the rest were there, byte for byte
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, paths: tuple[str, ...], prefix: str) -> Upload:
        files, ignored = [], []
        for key, file in _collect(paths, prefix):
            if is_ignored_key(key):
                ignored.append(key)
            else:
                files.append((key, file))
        return cls(files, ignored)

    @property
    def keys(self) -> list[str]:
        """Every file the command is about: written now or already there, byte for byte."""
        failed = {key for key, _ in self.rejected}
        return [key for key, _ in self.files if key not in failed]


def run_ingest(paths: tuple[str, ...], *, wait: bool, prefix: str) -> int:
    """Exit status: 0 all completed, 1 any failed or rejected, 2 a service is unusable."""
    upload = Upload.of(paths, prefix)
    if not wait:
        return _put(upload, wait=False)
    # Every file already stored and nothing left to do: report from the database alone. No
    # service is probed or started and Dagster is not loaded, so a re-run costs well under
    # a second and makes no external call.
    settled = _settled_report(upload)
    if settled is not None:
        return settled
    from docpipe_dagster.local.services import ServiceProblem, services_for_command

    try:
        # Before anything is uploaded or registered: a dead or unauthorised service stops the
        # command here, in seconds, and costs no document an attempt.
        with services_for_command(lambda line: click.echo(line, err=True)):
            return _put(upload, wait=True)
    except ServiceProblem as exc:
        click.echo(f"error: {exc}", err=True)
        return 2


def _put(upload: Upload, *, wait: bool) -> int:
    from docpipe_dagster.clients.factory import open_storage
    from docpipe_dagster.clients.storage import StorageError

    storage = open_storage()
    for key, file in upload.files:
        try:
            data = file.read_bytes()
            # The same bytes already stored: writing them again would only change the file's
            # mtime, and intake would then touch its row. A re-run touches nothing.
            if _stored_bytes(storage, key) != data:
                storage.write(key, data)
                upload.written.append(key)
        except (StorageError, OSError) as exc:
            upload.rejected.append((key, str(exc)))
    _echo_put(upload, storage.describe())
    if not wait:
        click.echo("not waiting: a running `docpipe dev` picks them up (or rerun with --wait)")
        return 1 if upload.rejected else 0
    return process_and_report(upload.keys, upload.rejected)


def _echo_put(upload: Upload, where: str) -> None:
    unchanged = len(upload.keys) - len(upload.written)
    same = f" ({unchanged} already there, unchanged)" if unchanged else ""
    click.echo(f"put {len(upload.written)} files into {where}{same}")
    if upload.ignored:
        click.echo(
            f"ignored {len(upload.ignored)} hidden/temporary files (e.g. {upload.ignored[0]})"
        )
    for key, reason in upload.rejected:
        click.echo(f"rejected {key}: {reason}", err=True)


def _settled_report(upload: Upload) -> int | None:
    """The summary when there is nothing to process, else None (then the full path runs).

    Nothing to process: storage lists exactly the registered versions (same size and
    mtime, nothing new, nothing gone), each given file hashes to its key's registered
    version, no batch is open, no transient failure waits for a retry and the configured
    vector space is active and complete. Reads the given files, not storage's copies; any
    doubt returns None."""
    from docpipe_dagster.clients.factory import open_storage
    from docpipe_dagster.clients.storage import StorageError
    from docpipe_dagster.core.hashing import sha256_bytes
    from docpipe_dagster.pipeline.intake import IntakeConfig, storage_in_sync
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    current = settings()
    dims = current.vector_dims
    if dims is None:
        return None
    try:
        storage = open_storage()
        with Store.open(ready_database().url, max_size=1) as store:
            known = store.current_versions()
            if not storage_in_sync(storage.list_objects(), known, IntakeConfig()):
                return None
            for key, file in upload.files:
                job = known.get(key)
                if job is None or job.content_sha256 != sha256_bytes(file.read_bytes()):
                    return None
            if store.open_batches() or store.failed_versions(
                transient_only=True, max_attempts=current.max_attempts
            ):
                return None
            space = store.space_coverage(current.embedding_model, dims)
            if space is None or not space.is_active or not space.complete:
                return None
    except (StorageError, OSError):
        return None  # the full path probes storage, reads every file and says what is wrong
    _echo_put(upload, storage.describe())
    click.echo("nothing new to process")
    return summarise(upload.keys, upload.rejected, known)


def _stored_bytes(storage: Any, key: str) -> bytes | None:
    from docpipe_dagster.clients.storage import StorageError

    try:
        return storage.read(key)
    except StorageError:  # not there (or unreadable: then writing it is the way to find out)
        return None


SHOWN = 20  # per-document lines of a summary; the rest is counted


def process_and_report(keys: list[str], rejected: list[tuple[str, str]]) -> int:
    """Process every open batch in-process, then report on `keys` (exit status 0 or 1)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from docpipe_dagster.api.service import sync_configured_space
    from docpipe_dagster.runner import ingest_pending
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    target = ready_database()
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("ingest", total=len(keys), note="scanning storage")

        def on_batch(outcome: Any, scan: Any) -> None:
            done = len(store.jobs_in_batch(outcome.batch_key))
            progress.update(task, advance=done, note=f"batch {outcome.batch_key}")

        with Store.open(target.url, max_size=2) as store:
            requeued = _requeue_transient_now(store)
            if requeued:
                progress.update(task, note=f"retrying {requeued} transient failures now")
            ingest_pending(on_batch=on_batch, log_level="ERROR")
            progress.update(task, completed=len(keys), note="done")
            sync_configured_space(target.url, click.echo)
            current = store.current_versions()
    return summarise(keys, rejected, current)


def summarise(keys: list[str], rejected: list[tuple[str, str]], current: dict[str, Any]) -> int:
    """Print how each of `keys` ended; exit status 0 when all completed, else 1."""
    states = {key: current.get(key) for key in keys}
    completed = [
        k for k, job in states.items() if job is not None and job.state == JobState.COMPLETED
    ]
    failed = [
        (k, job) for k, job in states.items() if job is not None and job.state == JobState.FAILED
    ]
    other = [
        (k, job.state if job else "not registered")
        for k, job in states.items()
        if job is None or job.state not in (JobState.COMPLETED, JobState.FAILED)
    ]
    click.echo(f"{len(completed)} completed, {len(failed)} failed, {len(other)} other")
    for key, job in failed:
        click.echo(f"  FAILED {key}: {job.failure_reason}")
    for key, state in other[:SHOWN]:
        click.echo(f"  {state.upper()} {key}")
    if len(other) > SHOWN:
        click.echo(f"  … and {len(other) - SHOWN} more not finished")
    if other:
        # Left queued (a service went down mid-run, see the run's failure above) or still in
        # flight: nothing was counted against them.
        click.echo("  not finished: no attempt was used; run the same command again to go on")
    return 0 if not failed and not other and not rejected else 1


def _requeue_transient_now(store: Any) -> int:
    """The user asked to ingest now: transient failures are retried now, not after backoff.
    Dead-lettered documents (attempts used up) stay failed: `docpipe retry` revives them."""
    from datetime import datetime, timezone

    from docpipe_dagster.config import settings
    from docpipe_dagster.core.ids import batch_key as make_batch_key
    from docpipe_dagster.store.documents import REQUEUE_PREFIX

    max_attempts = settings().max_attempts
    jobs = store.failed_versions(transient_only=True, max_attempts=max_attempts)
    if not jobs:
        return 0
    batch = REQUEUE_PREFIX + make_batch_key(datetime.now(timezone.utc), [j.job_id for j in jobs])
    reason = "transient failure retried at once by docpipe ingest --wait"
    return len(store.requeue_failed(jobs, batch, reason, reset_attempts=False))


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


COMMANDS = [ingest_command, search_command, status_command, verify_command]
