"""`docpipe ingest`: put files into storage and, with --wait, process them in-process;
`process_and_report` (also what `docpipe retry --wait` runs) and the summary."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

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

    from docpipe_dagster.actions.requeue import requeue_transient_now
    from docpipe_dagster.actions.spaces import sync_configured_space
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
            requeued = requeue_transient_now(store, settings().max_attempts)
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


COMMANDS = [ingest_command]
