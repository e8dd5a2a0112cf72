"""The storage-folder watcher (api/watch.py) over a real folder, a real watchdog observer and
a real Store, with a Pusher whose webserver refuses (a closed port): a dropped file is
registered at once in a batch of its own and its launch deferred (retry_sensor launches it),
what intake ignores is ignored, a burst is left to the sensor, and a database that is gone
costs a log line, never the thread or the file."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docpipe_dagster.api import watch
from docpipe_dagster.api.push import Pusher
from docpipe_dagster.clients.parsing import routing
from docpipe_dagster.clients.storage.folder import FolderStorage
from docpipe_dagster.pipeline.intake import IntakeConfig, scan_storage
from docpipe_dagster.store.documents import UPLOAD_PREFIX
from docpipe_dagster.store.queries import Store
from docpipe_dagster_tests.support.mock_servers import free_port
from docpipe_dagster_tests.support.rows import TableReads

pytestmark = pytest.mark.timeout(60)

DOC = "# Terns\n\nArctic terns fly from pole to pole every year, {n}.\n"


@dataclass
class Folder(TableReads):
    storage: FolderStorage
    store: Store
    database_url: str

    def drop(self, key: str, n: int = 0) -> Path:
        """A file written in place, as an editor or `cp` leaves it (closed after writing)."""
        path = self.storage.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DOC.format(n=n))
        return path

    def scan(self):
        return scan_storage(self.storage, self.store, IntakeConfig(settle_seconds=0.0))


@pytest.fixture
def folder(database_url: str, tmp_path: Path) -> Iterator[Folder]:
    root = tmp_path / "storage"
    root.mkdir()
    store = Store.open(database_url, max_size=4)
    try:
        yield Folder(FolderStorage(root), store, database_url)
    finally:
        store.close()


@pytest.fixture
def refusing_pusher() -> Iterator[Pusher]:
    pusher = Pusher(f"http://127.0.0.1:{free_port()}", routes=routing())
    yield pusher
    pusher.close()


def watching(folder: Folder, pusher: Pusher, store: Store | None = None, **kw: Any):
    watcher = watch.StorageWatcher(folder.storage, store or folder.store, pusher, **kw)
    watcher.start()
    return watcher


def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def test_a_dropped_file_is_registered_at_once_and_its_launch_deferred(
    folder: Folder, refusing_pusher: Pusher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    watcher = watching(folder, refusing_pusher)
    try:
        started = time.monotonic()
        folder.drop("birds/tern.md")
        job = eventually(lambda: folder.jobs().get("birds/tern.md"))
        took = time.monotonic() - started
        # Well under the sensor's interval; generous for a shared machine.
        assert took < 2.0, took
        assert job["state"] == "uploaded" and job["batch_key"].startswith(UPLOAD_PREFIX)
        events = folder.rows(
            "SELECT stage, event_type FROM {S}.events WHERE job_id = %s", (job["job_id"],)
        )
        assert [(e["stage"], e["event_type"]) for e in events] == [("intake", "registered")]
        said = eventually(lambda: "could not be launched" in caplog.text and caplog.text)
        assert "dropped file birds/tern.md is registered" in said
        assert "retry_sensor launches the batch" in said

        # Ignored: what intake ignores, writes in progress, and FolderStorage.write's own
        # rename (its caller registers it). Then a rename into place, which is taken; the
        # watcher handles its queue in order, so by then the others were judged.
        folder.drop(".docpipe-tmp-0123")
        folder.drop(".hidden.md")
        folder.drop("notes.md.part")
        folder.storage.write("written/by-docpipe.md", b"# Own\n\nWritten through storage.\n")
        tmp = folder.drop(".incoming.md.tmp", n=1)
        os.replace(tmp, folder.storage.root / "moved.md")
        outside = folder.storage.root.parent / "outside.md"
        outside.write_text(DOC.format(n=2))
        shutil.move(str(outside), str(folder.storage.root / "birds" / "moved-in.md"))
        eventually(lambda: {"moved.md", "birds/moved-in.md"} <= set(folder.jobs()))
        assert set(folder.jobs()) == {"birds/tern.md", "moved.md", "birds/moved-in.md"}
    finally:
        watcher.stop()
    assert not watcher._worker.is_alive()

    # The sensor's next tick: what the watcher registered is unchanged, the rest is new.
    result = folder.scan()
    assert (result.unchanged, result.registered) == (3, 1), result.summary()
    assert len(folder.rows("SELECT 1 FROM {S}.upload_jobs")) == 4


def test_files_written_into_new_folders_are_taken_without_a_close_event_seen(
    folder: Folder, refusing_pusher: Pusher
) -> None:
    """A file written at once into a folder just made is often closed before watchdog has
    watched the folder: inotify then reports it only as created. It is taken anyway, once
    left unmodified for the settle time, not on the sensor's next tick."""
    watcher = watching(folder, refusing_pusher, burst_files=100, settle_s=0.3)
    try:
        keys = {f"new-{i}/deeper/doc.md" for i in range(20)}
        for i, key in enumerate(sorted(keys)):
            folder.drop(key, n=i)
        eventually(lambda: keys <= set(folder.jobs()), timeout_s=10.0)
        assert set(folder.jobs()) == keys
    finally:
        watcher.stop()
    assert not watcher._events.created, "every creation was taken or forgotten"


def test_a_burst_is_left_to_the_sensor_and_single_files_come_back(
    folder: Folder, refusing_pusher: Pusher
) -> None:
    watcher = watching(folder, refusing_pusher, burst_files=3, burst_window_s=1.5)
    try:
        for n in range(12):
            folder.drop(f"burst/{n:02d}.md", n)
        time.sleep(watch.GATHER_MAX_SECONDS + 1.0)
        # At most `burst_files` runs came from the watcher; the sensor batches the rest.
        pushed = folder.jobs()
        assert len(pushed) <= 3, sorted(pushed)
        result = folder.scan()
        assert result.registered == 12 - len(pushed) and len(result.batches) == 1
        assert not next(iter(result.batches)).startswith(UPLOAD_PREFIX)

        time.sleep(1.6)  # the window has passed: a single file takes the fast path again
        folder.drop("single.md")
        job = eventually(lambda: folder.jobs().get("single.md"))
        assert job["batch_key"].startswith(UPLOAD_PREFIX)
    finally:
        watcher.stop()


def test_a_database_that_is_gone_costs_a_log_line_not_the_file(
    folder: Folder, refusing_pusher: Pusher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    gone = Store.open(folder.database_url, max_size=1)
    gone.close()
    watcher = watching(folder, refusing_pusher, store=gone)
    try:
        folder.drop("first.md", 1)
        eventually(lambda: "watch: could not register first.md" in caplog.text)
        folder.drop("second.md", 2)  # the thread is still there
        eventually(lambda: "watch: could not register second.md" in caplog.text)
    finally:
        watcher.stop()
    assert "the intake sensor registers it later" in caplog.text
    assert folder.jobs() == {}
    assert folder.scan().registered == 2


def test_no_folder_to_watch_means_the_sensor_says_so(
    folder: Folder, refusing_pusher: Pusher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    missing = FolderStorage(tmp_path / "not-there")
    assert watch.start_watcher(missing, folder.store, refusing_pusher) is None
    assert f"cannot watch storage folder {missing.root}" in caplog.text
    assert "dropped files take the intake sensor" in caplog.text
    assert watch.start_watcher(object(), folder.store, refusing_pusher) is None  # not a folder
    started = watch.start_watcher(folder.storage, folder.store, refusing_pusher)
    assert isinstance(started, watch.StorageWatcher)
    started.stop()
