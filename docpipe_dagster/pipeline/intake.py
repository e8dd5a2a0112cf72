"""Find new, changed and deleted files in storage and register them as jobs in batches.

The database is the only state: a tick lists storage, compares each object with the
newest registered version of its key (size and mtime first, content hash when those
changed), and registers what is new. A file modified within the last `settle_seconds`
may still be being written, so it waits for a later tick.

Each new file is read once on the way in: the tick that hashes it also judges its content
(type, sniffed content against its name) and fails what no parser reads at once, stage
`intake`. The batch run's `raw_documents` check then needs no download (the size limit is
judged on the registered size), and the parse stage reads the bytes it parses, verifying
them against the registered hash (a file changed since registration is superseded there).

`register_upload` is the same judgement for one file the HTTP API just wrote (the push
path, docs/API.md): a batch of its own, registered atomically on the job id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from docpipe_dagster.clients.storage import StorageBackend, StoredObject
from docpipe_dagster.config import default_of
from docpipe_dagster.core.batching import pack
from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.ids import batch_key as make_batch_key
from docpipe_dagster.core.ids import document_id as make_document_id
from docpipe_dagster.core.ids import job_id as make_job_id
from docpipe_dagster.core.media import detect_media_type, is_ignored_key
from docpipe_dagster.pipeline.report import StageReport, batch_jobs, fail_job
from docpipe_dagster.store.documents import UPLOAD_PREFIX
from docpipe_dagster.store.queries import JobRow, NewVersion, Store

if TYPE_CHECKING:
    from docpipe_dagster.clients.parsing import Routing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeConfig:
    settle_seconds: float = default_of("settle_seconds")
    batch_max_files: int = default_of("batch_max_files")
    batch_max_bytes: int = default_of("batch_max_bytes")
    max_batches_per_tick: int = 5
    # A tick stops reading new files after this long and defers the rest: it must return
    # inside Dagster's sensor timeout (60 s), or the batches it registered get no run until
    # the stale-job recovery finds them.
    read_budget_seconds: float = 20.0
    sync_deletions: bool = True
    # Batches come in a multiple of this many, as even as the caps allow: the runs that will
    # process them side by side (`docpipe ingest --wait`) then finish together instead of
    # one of them running the short last batch alone.
    spread_over: int = 1


@dataclass
class IntakeResult:
    batches: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    listed: int = 0
    registered: int = 0
    unchanged: int = 0
    unstable: int = 0  # still being written: taken on a later tick
    ignored: int = 0  # hidden, temporary and lock files
    deferred: int = 0  # over this tick's cap or read budget: taken on a later tick
    deleted: int = 0
    refused: int = 0  # registered and failed at once: content no configured parser reads
    newest_modified: float = 0.0

    def summary(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "registered": self.registered,
            "batches": len(self.batches),
            "unchanged": self.unchanged,
            "unstable": self.unstable,
            "ignored": self.ignored,
            "deferred": self.deferred,
            "deleted": self.deleted,
            "refused": self.refused,
        }


def _as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _same_signature(obj: StoredObject, known: JobRow) -> bool:
    if known.size_bytes != obj.size or known.source_modified_at is None:
        return False
    return abs(known.source_modified_at.timestamp() - obj.modified_at) < 1e-3


def scan_storage(
    backend: StorageBackend,
    store: Store,
    config: IntakeConfig,
    *,
    now: float | None = None,
    clock: Callable[[], datetime] | None = None,
    routes: Routing | None = None,
) -> IntakeResult:
    """One intake tick: register new/changed files in capped batches, sync deletions.
    A new file whose content no parser under `routes` (default: DOCPIPE_PARSE_LOCALLY)
    reads is registered and failed at once with the reason, from the bytes just hashed."""
    now = time.time() if now is None else now
    if routes is None:
        # Imported here: the parser clients' module is not needed by a no-op `ingest`.
        from docpipe_dagster.clients.parsing import routing

        routes = routing()
    result = IntakeResult()
    known = store.current_versions()
    seen: set[str] = set()
    found: list[NewVersion] = []
    refusals: dict[uuid.UUID, str] = {}
    touched: dict[uuid.UUID, datetime] = {}
    capacity = config.batch_max_files * config.max_batches_per_tick
    reading_until = time.monotonic() + config.read_budget_seconds

    for obj in backend.list_objects():
        result.listed += 1
        if is_ignored_key(obj.key):
            result.ignored += 1
            continue
        seen.add(obj.key)
        result.newest_modified = max(result.newest_modified, obj.modified_at)
        if now - obj.modified_at < config.settle_seconds:
            result.unstable += 1
            continue
        current = known.get(obj.key)
        if current is not None and _same_signature(obj, current):
            result.unchanged += 1
            continue
        if len(found) >= capacity or (found and time.monotonic() > reading_until):
            result.deferred += 1
            continue
        data = backend.read(obj.key)
        if len(data) != obj.size:
            # written to between listing and reading: wait until it settles
            result.unstable += 1
            continue
        version, refusal = judge_version(obj, data, current, routes)
        if version is None:
            assert current is not None
            touched[current.job_id] = _as_datetime(obj.modified_at)
            result.unchanged += 1
            continue
        if refusal:
            refusals[version.job_id] = refusal
        found.append(version)

    store.touch_source_modified(touched)
    stamp = clock() if clock else datetime.now(timezone.utc)
    for group in _group_into_batches(found, config):
        key = make_batch_key(stamp, [v.job_id for v in group])
        queued = store.register_versions(group, key)
        if queued:
            result.batches[key] = queued
            result.registered += len(queued)
    result.refused = _refuse(store, refusals, result.batches)

    if config.sync_deletions:
        unreadable = _unreadable_paths(backend)
        gone = [
            job.document_id
            for key, job in known.items()
            if key not in seen
            and not is_ignored_key(key)
            # not listed because it could not be read: not evidence of deletion
            and not any(u == "." or key == u or key.startswith(u + "/") for u in unreadable)
        ]
        store.mark_deleted(gone, "file removed from storage")
        result.deleted = len(gone)
    return result


def judge_version(
    obj: StoredObject, data: bytes, current: JobRow | None, routes: Routing
) -> tuple[NewVersion | None, str | None]:
    """One file's bytes against its newest registered version: None when the content is
    unchanged (only its mtime moved), else the new version and the reason no configured
    parser reads it (None: it can be parsed)."""
    sha = sha256_bytes(data)
    if current is not None and current.content_sha256 == sha:
        return None, None
    document = make_document_id(obj.key)
    version = NewVersion(
        job_id=make_job_id(document, sha),
        document_id=document,
        storage_key=obj.key,
        content_sha256=sha,
        size_bytes=len(data),
        media_type=detect_media_type(obj.key, data),
        source_modified_at=_as_datetime(obj.modified_at),
    )
    return version, routes.refusal(obj.key, data)


@dataclass(frozen=True)
class UploadRegistration:
    """What registering one uploaded file did. Only the caller that registered the version
    (`batch_key` set) launches its run; `refused` versions need none (they failed here)."""

    job_id: uuid.UUID | None
    batch_key: str | None = None  # set when this call registered the version
    refused: str | None = None
    unchanged: bool = False  # the same content as the registered version: nothing to do

    @property
    def needs_run(self) -> bool:
        return self.batch_key is not None and self.refused is None


def register_upload(
    store: Store,
    obj: StoredObject,
    data: bytes,
    *,
    clock: Callable[[], datetime] | None = None,
    routes: Routing | None = None,
) -> UploadRegistration:
    """Register one file just written to storage (`obj`, what the write reported, and its
    bytes) as intake would, in a batch of its own (`upload-...`): the same content judgement,
    the same ids, the same `registered` event. Registration is atomic on the job id: when
    the intake sensor registered this version first, nothing is registered here."""
    if routes is None:
        from docpipe_dagster.clients.parsing import routing

        routes = routing()
    if obj.size != len(data):
        # Written over since: the sensor registers whatever is there once it settles.
        return UploadRegistration(job_id=None)
    current = store.current_versions([obj.key]).get(obj.key)
    version, refusal = judge_version(obj, data, current, routes)
    if version is None:
        assert current is not None
        store.touch_source_modified({current.job_id: _as_datetime(obj.modified_at)})
        return UploadRegistration(job_id=current.job_id, unchanged=True)
    stamp = clock() if clock else datetime.now(timezone.utc)
    key = UPLOAD_PREFIX + make_batch_key(stamp, [version.job_id])
    queued = store.register_versions([version], key)
    if not queued:
        return UploadRegistration(job_id=version.job_id)
    refused = _refuse(store, {version.job_id: refusal} if refusal else {}, {key: queued})
    return UploadRegistration(
        job_id=version.job_id, batch_key=key, refused=refusal if refused else None
    )


def _refuse(store: Store, refusals: dict[uuid.UUID, str], batches: dict[str, list]) -> int:
    """Fail the just-registered jobs whose content was refused, stage `intake`."""
    queued = {job_id for ids in batches.values() for job_id in ids}
    refused = [job_id for job_id in refusals if job_id in queued]
    for job_id in refused:
        store.mark_failed(job_id, "intake", refusals[job_id], code="UNSUPPORTED")
    return len(refused)


def check_raw_documents(store: Store, batch_key: str, *, max_file_bytes: int) -> StageReport:
    """The batch run's intake check, with no download: files over the size limit fail here
    (on the registered size, so a lowered limit applies to queued files too). Content was
    judged when the file was read and hashed (`scan_storage`); a file changed or removed
    since then is caught where its bytes are read (`pipeline/parse.py`)."""
    report = StageReport("intake")
    for job in batch_jobs(store, batch_key, ["uploaded"], report):
        report.count("bytes", job.size_bytes)
        if job.size_bytes > max_file_bytes:
            reason = (
                f"file is {job.size_bytes / 1e6:.1f} MB, over the {max_file_bytes / 1e6:.0f} MB "
                "limit (DOCPIPE_MAX_FILE_BYTES)"
            )
            fail_job(store, report, job, reason, code="TOO_LARGE")
            continue
        report.succeeded += 1
    return report.finish()


def storage_in_sync(
    objects: Iterable[StoredObject], known: dict[str, JobRow], config: IntakeConfig
) -> bool:
    """True when a tick over this listing would register, touch and delete nothing: every
    file has the size and mtime of its registered version and every registered key is
    listed. Reads no file; any doubt (a new mtime, an unreadable folder) says False."""
    listed = 0
    for obj in objects:
        if is_ignored_key(obj.key):
            continue
        current = known.get(obj.key)
        if current is None or not _same_signature(obj, current):
            return False
        listed += 1
    if not config.sync_deletions:
        return True
    return listed == sum(1 for key in known if not is_ignored_key(key))


def _unreadable_paths(backend: StorageBackend) -> list[str]:
    """Folders/files the listing could not read (FolderStorage records them in `skipped`)."""
    skipped = getattr(backend, "skipped", None) or []
    return [rel for rel, reason in skipped if reason.startswith(("cannot read", "cannot stat"))]


def _group_into_batches(versions: list[NewVersion], config: IntakeConfig) -> list[list[NewVersion]]:
    return pack(
        sorted(versions, key=lambda v: v.storage_key),
        weight=lambda v: v.size_bytes,
        max_weight=config.batch_max_bytes,
        max_items=even_batch_size(len(versions), config.batch_max_files, config.spread_over),
    )


def even_batch_size(files: int, max_files: int, spread_over: int = 1) -> int:
    """Files per batch: as few batches as `max_files` allows, rounded up to a multiple of
    `spread_over`, and the files spread evenly over them (300 files, 200 at most, two runs:
    150 and 150, not 200 and 100)."""
    if files <= 0:
        return max_files
    spread = max(1, spread_over)
    count = min(files, -(-files // max_files // spread) * spread)
    return -(-files // count)
