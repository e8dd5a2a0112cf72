"""The folder watcher: a file dropped into the storage folder takes the push path too.

The intake sensor finds a dropped file on its next tick (Dagster evaluates sensors every few
seconds at best). With `DOCPIPE_DAGSTER_URL` set and a folder storage, the API also watches
the folder (watchdog's inotify observer, `DOCPIPE_WATCH_STORAGE`) and hands each file that
arrives complete to `Pusher.push` with `docpipe/reason=watch`: registered exactly as intake
would, in a batch of its own (`upload-...`), its run launched through the webserver.

Arriving complete means: its writer closed it after writing (`FileClosedEvent`) or it was
renamed or moved into place (`FileMovedEvent`, its destination). A file written into a folder
just created can be closed before the folder has its own watch: inotify then reports it only
as created (watchdog lists the new folder), so a created file with no close event is taken
once it has been left unmodified for the settle time, as intake judges it.

Skipped: what intake skips (`is_ignored_key`: hidden and temporary names, `.docpipe-tmp-`
writes in progress among them, and whatever `FolderStorage.stat` says `list_objects` would
not list), and a rename from a `.docpipe-tmp-` name: that is docpipe's own
`FolderStorage.write`, whose caller (an API upload, `docpipe ingest`) registers the file
itself or says the sensor will.

Bursts are left to the sensor: files arriving within `QUIET_SECONDS` of each other are taken
as one group, and a group is pushed only while at most `BURST_FILES` files arrived in the last
`BURST_WINDOW_SECONDS` (the group counted). A copy of a thousand files therefore launches
none (or the first handful) of single-file runs; the sensor registers the rest in batches on
its next tick. Nothing here can lose a file: whatever the watcher skips or fails on (storage
unreadable, Postgres or the webserver down) the sensor registers later, and `retry_sensor`
launches a registered batch whose launch failed. No Dagster import (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from docpipe_dagster.clients.storage import InvalidKeyError, StorageError
from docpipe_dagster.clients.storage.base import _TMP_PREFIX
from docpipe_dagster.config import default_of, settings
from docpipe_dagster.core.media import is_ignored_key

if TYPE_CHECKING:
    from docpipe_dagster.api.push import Pusher
    from docpipe_dagster.clients.storage.folder import FolderStorage
    from docpipe_dagster.store.queries import Store

log = logging.getLogger(__name__)

REASON = "watch"  # the runs' `docpipe/reason` tag
# Files arriving closer together than this are one group; a group is gathered at most
# GATHER_MAX_SECONDS, so a long copy is judged while it runs.
QUIET_SECONDS = 0.05
GATHER_MAX_SECONDS = 0.5
# More files than this within the window are a burst: left to the sensor, which batches them.
BURST_FILES = 10
BURST_WINDOW_SECONDS = 10.0


class _Arrivals(FileSystemEventHandler):
    """Called on watchdog's thread: queue the storage key of each file that arrived complete,
    and note each created file until its close event (or the settle time) says it is."""

    def __init__(self, root: str, keys: queue.Queue[str]) -> None:
        self.root = root
        self.keys = keys
        self.created: dict[str, float] = {}  # path -> when its creation was reported
        self.lock = threading.Lock()

    def on_created(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent):
            path = os.fsdecode(event.src_path)
            with self.lock:
                self.created.setdefault(path, time.monotonic())

    def on_closed(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self._arrived(os.fsdecode(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if not isinstance(event, FileMovedEvent) or not event.dest_path:
            return  # a file moved out of the folder: the sensor marks it deleted
        source = os.fsdecode(event.src_path)
        self._forget(source)
        if os.path.basename(source).startswith(_TMP_PREFIX):
            return  # FolderStorage.write: its caller registers the file (module docstring)
        self._arrived(os.fsdecode(event.dest_path))

    def settled_creations(self, settle_s: float) -> None:
        """Queue the created files no close event followed that have been left unmodified
        for `settle_s`; forget those that are gone."""
        now = time.monotonic()
        with self.lock:
            waiting = [path for path, seen in self.created.items() if now - seen >= settle_s]
        for path in waiting:
            try:
                idle = time.time() - os.stat(path).st_mtime
            except OSError:
                self._forget(path)  # gone (moved or deleted): its own event says what happened
                continue
            # Only if still noted: a close event since the snapshot has queued it already.
            if idle >= settle_s and self._forget(path):
                self._queue(path)

    def _forget(self, path: str) -> bool:
        """Stop waiting for `path`'s close event; whether it was waited for."""
        with self.lock:
            return self.created.pop(path, None) is not None

    def _arrived(self, path: str) -> None:
        self._forget(path)
        self._queue(path)

    def _queue(self, path: str) -> None:
        rel = os.path.relpath(path, self.root)
        if rel.startswith(".." + os.sep) or rel == "..":
            return
        key = rel.replace(os.sep, "/")
        if not is_ignored_key(key):
            self.keys.put(key)


class StorageWatcher:
    """Watches `storage`'s folder and pushes what arrives there through `pusher`."""

    def __init__(
        self,
        storage: FolderStorage,
        store: Store,
        pusher: Pusher,
        *,
        burst_files: int = BURST_FILES,
        burst_window_s: float = BURST_WINDOW_SECONDS,
        settle_s: float = default_of("settle_seconds"),
    ) -> None:
        self.storage = storage
        self.settle_s = settle_s
        self.store = store
        self.pusher = pusher
        self.burst_files = burst_files
        self.burst_window_s = burst_window_s
        self._keys: queue.Queue[str] = queue.Queue()
        self._arrivals: deque[float] = deque()
        self._in_burst = False
        self._stopping = threading.Event()
        self._observer = InotifyObserver(generate_full_events=True)
        self._events = _Arrivals(str(storage.root), self._keys)
        self._worker = threading.Thread(target=self._work, name="docpipe-watch", daemon=True)

    def start(self) -> None:
        """Start watching; StorageError when the folder cannot be watched."""
        root = str(self.storage.root)
        try:
            self._observer.schedule(
                self._events,
                root,
                recursive=True,
                # DirCreatedEvent: watchdog watches a new subfolder only when told of it.
                event_filter=[FileCreatedEvent, FileClosedEvent, FileMovedEvent, DirCreatedEvent],
            )
            self._observer.start()
        except OSError as exc:
            raise StorageError(f"cannot watch storage folder {root}: {exc}") from None
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching; a push in flight finishes first (bounded by its timeouts)."""
        self._stopping.set()
        self._observer.stop()
        self._observer.join(timeout)
        if self._worker.is_alive():
            self._worker.join(timeout)

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._events.settled_creations(self.settle_s)
            group = self._gather()
            if group and not self._stopping.is_set():
                self._handle(group)

    def _gather(self) -> list[str]:
        """The next group: keys arriving within QUIET_SECONDS of each other, in order."""
        try:
            first = self._keys.get(timeout=0.5)
        except queue.Empty:
            return []
        group = {first: None}
        until = time.monotonic() + GATHER_MAX_SECONDS
        while (left := until - time.monotonic()) > 0:
            try:
                group[self._keys.get(timeout=min(QUIET_SECONDS, left))] = None
            except queue.Empty:
                break
        return list(group)

    def _handle(self, group: list[str]) -> None:
        now = time.monotonic()
        while self._arrivals and now - self._arrivals[0] > self.burst_window_s:
            self._arrivals.popleft()
        self._arrivals.extend([now] * len(group))
        if len(self._arrivals) > self.burst_files:
            if not self._in_burst:
                log.info(
                    "watch: %d files arrived within %g s: left to the intake sensor, which "
                    "batches them on its next tick",
                    len(self._arrivals),
                    self.burst_window_s,
                )
            self._in_burst = True
            return
        self._in_burst = False
        for key in group:
            self._push(key)

    def _push(self, key: str) -> None:
        try:
            stored = self.storage.stat(key)
            if stored is None:
                return  # gone again, or not an object list_objects would list
            data = self.storage.read(key)
            self.pusher.push(self.store, stored, data, reason=REASON)
        except InvalidKeyError:
            return  # a name no key can hold: the sensor's listing says so, once
        except StorageError as exc:
            log.warning(
                "watch: cannot read %s from storage (%s); the intake sensor registers it later",
                key,
                exc,
            )
        except Exception as exc:  # the database, most likely: never let the thread die
            log.warning(
                "watch: could not register %s (%s: %s); the intake sensor registers it later",
                key,
                type(exc).__name__,
                exc,
            )


def start_watcher(storage: object, store: Store, pusher: Pusher) -> StorageWatcher | None:
    """A started watcher over `storage` when it is a folder, else None (said in the log)."""
    from docpipe_dagster.clients.storage.folder import FolderStorage

    if not isinstance(storage, FolderStorage):
        return None  # Supabase Storage has no folder to watch: its files take the sensor
    watcher = StorageWatcher(storage, store, pusher, settle_s=settings().settle_seconds)
    try:
        watcher.start()
    except StorageError as exc:
        log.warning("watch: %s; dropped files take the intake sensor", exc)
        return None
    return watcher
