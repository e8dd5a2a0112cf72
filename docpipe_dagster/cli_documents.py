"""`docpipe ingest` and `status`: the pipeline without the UI (search: docpipe_dagster.api.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from docpipe_dagster.core.media import is_ignored_key


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


def run_ingest(paths: tuple[str, ...], *, wait: bool, prefix: str) -> int:
    from docpipe_dagster.clients.factory import open_storage
    from docpipe_dagster.clients.storage import StorageError

    storage = open_storage()
    uploaded: list[str] = []
    ignored: list[str] = []
    rejected: list[tuple[str, str]] = []
    for key, file in _collect(paths, prefix):
        if is_ignored_key(key):
            ignored.append(key)
            continue
        try:
            storage.write(key, file.read_bytes())
        except (StorageError, OSError) as exc:
            rejected.append((key, str(exc)))
            continue
        uploaded.append(key)
    click.echo(f"put {len(uploaded)} files into {storage.describe()}")
    if ignored:
        click.echo(f"ignored {len(ignored)} hidden/temporary files (e.g. {ignored[0]})")
    for key, reason in rejected:
        click.echo(f"rejected {key}: {reason}", err=True)
    if not wait:
        click.echo("not waiting: a running `docpipe dev` picks them up (or rerun with --wait)")
        return 1 if rejected else 0
    return _process(uploaded, rejected)


def _process(keys: list[str], rejected: list[tuple[str, str]]) -> int:
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
            ingest_pending(on_batch=on_batch, log_level="ERROR")
            progress.update(task, completed=len(keys), note="done")
            sync_configured_space(target.url, click.echo)
            current = store.current_versions()

    states = {key: current.get(key) for key in keys}
    completed = [k for k, job in states.items() if job is not None and job.state == "completed"]
    failed = [(k, job) for k, job in states.items() if job is not None and job.state == "failed"]
    other = [
        (k, job.state if job else "not registered")
        for k, job in states.items()
        if job is None or job.state not in ("completed", "failed")
    ]
    click.echo(f"{len(completed)} completed, {len(failed)} failed, {len(other)} other")
    for key, job in failed:
        click.echo(f"  FAILED {key}: {job.failure_reason}")
    for key, state in other:
        click.echo(f"  {state.upper()} {key}")
    return 0 if not failed and not other and not rejected else 1


def run_status(as_json: bool) -> int:
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.server import ready_database

    with Store.open(ready_database().url, max_size=1) as store:
        status = store.status()
    if as_json:
        click.echo(json.dumps(status, ensure_ascii=False, indent=2, default=str))
        return 0
    docs = status["documents"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(docs["by_state"].items())) or "none"
    click.echo(f"documents: {docs['total']} ({states})")
    click.echo(
        f"searchable: {status['searchable_documents']} documents, {status['chunks']} chunks, {status['vectors']} vectors"
    )
    buffers = status["buffers"]
    if buffers["chunks"] or buffers["vectors"]:
        click.echo(f"staged: {buffers['chunks']} chunks, {buffers['vectors']} vectors in flight")
    for failure in status["failures"]:
        retry = " (retry scheduled)" if failure["retry_scheduled"] else ""
        click.echo(
            f"FAILED {failure['storage_key']} at {failure['stage']}: {failure['reason']}{retry}"
        )
    return 0
