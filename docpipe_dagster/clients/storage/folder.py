"""Objects as files under a local folder (the default backend)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from docpipe_dagster.clients.storage.base import (
    _TMP_PREFIX,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    StoredObject,
    _validate_prefix,
    log,
    validate_key,
)


class FolderStorage:
    """Objects are the regular files under `root`; keys are paths relative to it.

    Symlinks are never followed as directories. A symlinked file is listed only when its target
    is a regular file inside root; everything skipped (escaping symlinks, names that are not
    valid keys, special files) is recorded in `skipped` as (relative path, reason) and logged.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.skipped: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"FolderStorage({str(self.root)!r})"

    def describe(self) -> str:
        return f"folder {self.root}"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # A symlinked folder inside root could still point outside: check the real location.
        if not _within(path.resolve(), self.root):
            raise InvalidKeyError(f"key {key!r} resolves outside the storage folder")
        return path

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"storage folder {self.root} does not exist or is not a folder")

    def _skip(self, rel: str, reason: str) -> None:
        self.skipped.append((rel, reason))
        # Intake lists storage every few seconds: say it once per process, not every tick.
        seen = (str(self.root), rel, reason)
        if seen not in _LOGGED_SKIPS:
            if len(_LOGGED_SKIPS) >= _MAX_LOGGED_SKIPS:
                _LOGGED_SKIPS.clear()
            _LOGGED_SKIPS.add(seen)
            log.warning("storage: skipped %r: %s (logged once)", rel, reason)

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`, in key order."""
        prefix = _validate_prefix(prefix)
        self._require_root()
        self.skipped = []
        # Start at the deepest folder the prefix names, then filter by the full prefix.
        folder_part = prefix.rpartition("/")[0]
        start = self.root.joinpath(*folder_part.split("/")) if folder_part else self.root
        if folder_part and (start.is_symlink() or not start.is_dir()):
            return
        yield from self._walk(start, folder_part, prefix)

    def _walk(self, folder: Path, rel_folder: str, prefix: str) -> Iterator[StoredObject]:
        try:
            entries = sorted(os.scandir(folder), key=_folder_sort_key)
        except OSError as exc:
            self._skip(rel_folder or ".", f"cannot read folder: {exc.strerror}")
            return
        for entry in entries:
            rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
            if entry.name.startswith(_TMP_PREFIX):
                continue  # a write in progress
            if not (rel.startswith(prefix) or prefix.startswith(rel + "/")):
                continue
            try:
                obj = self._entry(entry, rel, prefix)
            except OSError as exc:
                self._skip(rel, f"cannot stat: {exc.strerror}")
                continue
            if isinstance(obj, StoredObject):
                yield obj
            elif obj == "dir":
                yield from self._walk(Path(entry.path), rel, prefix)

    def _entry(self, entry: os.DirEntry, rel: str, prefix: str) -> StoredObject | str | None:
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not _within(target, self.root):
                self._skip(rel, "symlink points outside the storage folder")
                return None
            if target.is_dir():
                self._skip(rel, "symlinked folder not followed")
                return None
            if not target.is_file():
                self._skip(rel, "broken symlink")
                return None
        elif entry.is_dir(follow_symlinks=False):
            return "dir"
        elif not entry.is_file(follow_symlinks=False):
            self._skip(rel, "not a regular file")
            return None
        if not rel.startswith(prefix):
            return None
        try:
            key = validate_key(rel)
        except InvalidKeyError as exc:
            self._skip(rel, str(exc))
            return None
        st = entry.stat(follow_symlinks=True)
        if not stat.S_ISREG(st.st_mode):
            return None
        return StoredObject(key=key, size=st.st_size, modified_at=st.st_mtime, etag=None)

    def stat(self, key: str) -> StoredObject | None:
        """The object under `key` exactly as `list_objects` would list it (the same checks,
        the same size and mtime), or None when it would not list it: missing, a write in
        progress, a folder, a special file, a symlink it skips, under a symlinked folder."""
        *folders, name = validate_key(key).split("/")
        folder = self.root
        for part in folders:
            folder = folder / part
            if part.startswith(_TMP_PREFIX) or folder.is_symlink() or not folder.is_dir():
                return None
        if name.startswith(_TMP_PREFIX):
            return None
        try:
            with os.scandir(folder) as entries:
                entry = next((e for e in entries if e.name == name), None)
            obj = None if entry is None else self._entry(entry, "/".join([*folders, name]), "")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error("stat", key, exc) from None
        return obj if isinstance(obj, StoredObject) else None

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.describe()}") from None
        except OSError as exc:
            raise _os_error("read", key, exc) from None

    def write(self, key: str, data: bytes) -> StoredObject:
        """Write atomically: a temp file in the same folder, fsync, then rename over the key."""
        key = validate_key(key)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not _within(path.parent.resolve(), self.root):
                raise InvalidKeyError(f"key {key!r} resolves outside the storage folder")
            tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                with tmp.open("wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            st = path.stat()
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            # The key's own fault: a folder where it needs a file, or the reverse.
            raise InvalidKeyError(f"cannot write {key!r}: a file and a folder collide") from exc
        except OSError as exc:
            raise _os_error("write", key, exc) from exc
        return StoredObject(key=key, size=st.st_size, modified_at=st.st_mtime, etag=None)

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise ObjectNotFoundError(f"{key!r} is a folder, not an object") from None
        except OSError as exc:
            raise _os_error("delete", key, exc) from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return path.is_file()
        except OSError as exc:
            if exc.errno in _NAME_REFUSED:
                return False  # a name the file system cannot hold names no file
            raise _os_error("stat", key, exc) from None

    def health(self) -> float:
        start = time.perf_counter()
        self._require_root()
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorageError(f"storage folder {self.root} is not readable")
        with os.scandir(self.root) as it:
            next(it, None)
        return (time.perf_counter() - start) * 1000


# (root, path, reason) already logged by this process; bounded, so a folder of many odd
# entries cannot grow it without end (then they are logged once more).
_LOGGED_SKIPS: set[tuple[str, str, str]] = set()
_MAX_LOGGED_SKIPS = 10_000
# What the file system says about a name it cannot hold: the key's fault, not storage's.
_NAME_REFUSED = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})


def _os_error(verb: str, key: str, exc: OSError) -> StorageError:
    """A file-system error as the storage error it is: InvalidKeyError when the name is
    refused (too long, invalid for this file system), else a StorageError."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _NAME_REFUSED:
        return InvalidKeyError(
            f"cannot {verb} {key!r}: the file system refuses the name ({reason})"
        )
    return StorageError(f"cannot {verb} {key!r}: {reason}")


def _folder_sort_key(entry: os.DirEntry) -> str:
    # A real folder sorts as "name/" so the depth-first walk yields globally sorted keys.
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# --- Supabase Storage --------------------------------------------------------------------------
