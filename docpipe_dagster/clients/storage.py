"""Where documents come from: a local folder or Supabase Storage, behind one sync interface.

Keys are relative POSIX paths ("reports/2024/q1.pdf") checked by `validate_key`, so no key can
reach outside the folder or bucket. Both backends list recursively in the same order: keys
sorted by code point ("a-file.txt" < "a/b.txt" < "b.txt"), which a sensor can use as a
high-water mark. They walk folder by folder and sort each folder's entries with folders as
"name/", which yields exactly that global order without holding the whole listing.
Sync (httpx.Client) because the caller is a Dagster sensor. No dagster import here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import random
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx

from docpipe_dagster.core.retry import (
    Retrier,
    RetryPolicy,
    ServiceError,
    is_retryable_status,
)

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")
# Characters the current Supabase storage-api refuses in object keys (its VALID_OBJECT_KEY):
# checked before sending so the caller gets InvalidKeyError instead of an opaque 400.
_SUPABASE_REJECTED = re.compile(
    '[\u0080-\u009f#\\[\\]{}^`"<>|%~'
    "\u034f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
_TMP_PREFIX = ".docpipe-tmp-"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
# Files the Supabase dashboard creates to keep an empty folder visible; never documents.
_PLACEHOLDER = ".emptyFolderPlaceholder"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified_at: float  # epoch seconds
    etag: str | None


_T = TypeVar("_T")


class StorageError(ServiceError):
    """A storage operation failed. `retryable` says whether trying again later may help."""


class InvalidKeyError(StorageError, ValueError):
    """The key is not a safe relative POSIX path (or the backend cannot store it)."""


class ObjectNotFoundError(StorageError, KeyError):
    """No object under that key."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


def validate_key(key: str) -> str:
    """Return the normalised key or raise InvalidKeyError.

    A key is a relative POSIX path: no leading "/", no ".." segment, no NUL or other control
    character, no backslash (a Windows separator in disguise), at most 1024 UTF-8 bytes.
    "." segments and repeated slashes are dropped ("./a//b" -> "a/b"). Unicode is kept as is
    (no NFC/NFD rewriting: the key must name the same file it was listed from).
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("key is empty")
    if _CONTROL_CHARS.search(key):
        raise InvalidKeyError(f"key {key!r} contains a NUL or control character")
    if "\\" in key:
        raise InvalidKeyError(f"key {key!r} contains a backslash")
    if key.startswith("/"):
        raise InvalidKeyError(f"key {key!r} is absolute; keys are relative to the storage root")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidKeyError(f"key {key!r} contains a '..' segment")
    if not parts or key.endswith("/"):
        raise InvalidKeyError(f"key {key!r} names a folder, not an object")
    normalised = "/".join(parts)
    if len(normalised.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is longer than {MAX_KEY_BYTES} bytes")
    return normalised


def _validate_prefix(prefix: str) -> str:
    """A listing prefix: "" or a key-like string, matched as a plain string prefix ("a/b"
    matches "a/b.txt" and "a/bc/d"); a trailing "/" is kept."""
    if not prefix:
        return ""
    core = validate_key(prefix.rstrip("/"))
    return core + "/" if prefix.endswith("/") else core


@runtime_checkable
class StorageBackend(Protocol):
    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> StoredObject: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def health(self) -> float: ...
    def describe(self) -> str: ...


# --- local folder ------------------------------------------------------------------------------


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
        log.warning("storage: skipped %r: %s", rel, reason)

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

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.describe()}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc.strerror}") from None

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
            raise StorageError(f"cannot write {key!r}: a file and a folder collide") from exc
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror}") from exc
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
            raise StorageError(f"cannot delete {key!r}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def health(self) -> float:
        start = time.perf_counter()
        self._require_root()
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorageError(f"storage folder {self.root} is not readable")
        with os.scandir(self.root) as it:
            next(it, None)
        return (time.perf_counter() - start) * 1000


def _folder_sort_key(entry: os.DirEntry) -> str:
    # A real folder sorts as "name/" so the depth-first walk yields globally sorted keys.
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# --- Supabase Storage --------------------------------------------------------------------------


def _is_folder(item: dict[str, Any]) -> bool:
    # storage-api lists a folder as an entry without id and metadata.
    return item.get("id") is None and item.get("metadata") is None


def _item_sort_key(item: dict[str, Any]) -> str:
    return item["name"] + "/" if _is_folder(item) else item["name"]


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class SupabaseStorage:
    """Objects in one bucket of the Supabase Storage REST API (or the local mock).

    `base_url` is the project URL ("https://xyz.supabase.co" or "http://127.0.0.1:8000"); the
    client calls f"{base_url}/storage/v1/...". Transient failures (408/429/5xx, also when
    storage-api reports them as HTTP 400 with the real code in the body, timeouts, connection
    errors, malformed JSON) are retried with backoff honouring Retry-After. The bucket is created
    on first use if missing.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        bucket: str,
        *,
        page_size: int = 1000,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 5,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if not bucket:
            raise ValueError("bucket is required")
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        self.page_size = page_size
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self._bucket_ready = False
        self._rng = random.Random()
        self._http = httpx.Client(
            base_url=f"{self.base_url}/storage/v1",
            headers={
                "Authorization": f"Bearer {api_key}",
                "apikey": api_key,
                "User-Agent": "docpipe-dagster/0.1",
            },
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    def __repr__(self) -> str:  # no key, ever
        return f"SupabaseStorage({self.base_url!r}, bucket={self.bucket!r})"

    def describe(self) -> str:
        return f"supabase {self.base_url}/storage/v1 bucket {self.bucket}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupabaseStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # - plumbing
    def _object_url(self, key: str, kind: str = "") -> str:
        middle = f"{kind}/" if kind else ""
        return f"/object/{middle}{quote(self.bucket, safe='')}/{quote(key, safe='/')}"

    def _key(self, key: str) -> str:
        key = validate_key(key)
        if m := _SUPABASE_REJECTED.search(key):
            raise InvalidKeyError(f"Supabase Storage does not accept {m.group()!r} in keys")
        return key

    @staticmethod
    def _body_status(resp: httpx.Response) -> tuple[int, str]:
        """storage-api answers most errors with HTTP 400 and the real status in the body."""
        status, message = resp.status_code, resp.reason_phrase
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            body = resp.json()
            message = str(body.get("message") or body.get("error") or message)
            inner = int(body.get("statusCode"))
            if resp.status_code == 400 and 100 <= inner <= 599:
                status = inner
        return status, message

    def _send(self, method: str, url: str, *, expect_json: bool = True, **kw: Any) -> Any:
        """One attempt: parsed JSON (or the response when expect_json=False), else a
        StorageError that says whether another attempt may help."""
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TimeoutException:
            raise StorageError(f"{method} {url} timed out", retryable=True) from None
        except httpx.TransportError as exc:
            raise StorageError(
                f"{method} {url} failed: cannot reach {self.base_url} ({type(exc).__name__})",
                retryable=True,
            ) from None
        if resp.status_code < 300:
            if not expect_json:
                return resp
            try:
                return resp.json()
            except ValueError:
                raise StorageError(
                    f"{method} {url}: malformed JSON in the response", retryable=True
                ) from None
        status, message = self._body_status(resp)
        cls = ObjectNotFoundError if status == 404 else StorageError
        raise cls(
            f"{method} {url} -> {status}: {message}",
            retryable=status != 409 and is_retryable_status(status),
            status=status,
            headers=resp.headers,
        )

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        return Retrier(self.retry_policy, service="storage", logger=log, rng=self._rng).call(
            attempt
        )

    def _request(self, method: str, url: str, *, expect_json: bool = True, **kw: Any) -> Any:
        """_send with retries."""
        return self._retrying(lambda: self._send(method, url, expect_json=expect_json, **kw))

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (a concurrent creator is fine)."""
        if self._bucket_ready:
            return
        try:
            self._request("GET", f"/bucket/{quote(self.bucket, safe='')}")
        except ObjectNotFoundError:
            try:
                self._request("POST", "/bucket", json={"name": self.bucket, "public": False})
            except StorageError as exc:
                if exc.status != 409:
                    raise
        self._bucket_ready = True

    # - interface
    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`, in key order."""
        prefix = _validate_prefix(prefix)
        self.ensure_bucket()
        yield from self._walk(prefix.rpartition("/")[0], prefix)

    def _list_folder(self, folder: str) -> list[dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            body = {
                "prefix": folder,
                "limit": self.page_size,
                "offset": offset,
                "sortBy": {"column": "name", "order": "asc"},
            }
            page = self._request("POST", f"/object/list/{quote(self.bucket, safe='')}", json=body)
            if not isinstance(page, list):
                raise StorageError(f"listing {folder!r}: expected a list, got {type(page)}")
            for item in page:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    entries.setdefault(item["name"], item)  # a shifted page may repeat names
            if len(page) < self.page_size:
                return sorted(entries.values(), key=_item_sort_key)
            offset += len(page)

    def _walk(self, folder: str, prefix: str) -> Iterator[StoredObject]:
        for item in self._list_folder(folder):
            name = item["name"]
            rel = f"{folder}/{name}" if folder else name
            if not (rel.startswith(prefix) or prefix.startswith(rel + "/")):
                continue
            if _is_folder(item):
                yield from self._walk(rel, prefix)
                continue
            if name == _PLACEHOLDER or not rel.startswith(prefix):
                continue
            meta = item.get("metadata") or {}
            etag = meta.get("eTag")
            modified = _parse_ts(item.get("updated_at")) or _parse_ts(meta.get("lastModified"))
            yield StoredObject(
                key=rel,
                size=int(meta.get("size") or meta.get("contentLength") or 0),
                modified_at=modified or 0.0,
                etag=etag.strip('"') if isinstance(etag, str) else None,
            )

    def read(self, key: str) -> bytes:
        key = self._key(key)
        self.ensure_bucket()

        def download() -> bytes:
            # One GET per attempt, ETag check included (not retries nested in retries).
            try:
                resp = self._send("GET", self._object_url(key, "authenticated"), expect_json=False)
            except ObjectNotFoundError:
                raise ObjectNotFoundError(f"no object {key!r} in {self.describe()}") from None
            # A single-part upload's ETag is the MD5 of the bytes: check it, so a body cut or
            # mangled on the way is retried instead of parsed.
            etag = resp.headers.get("etag", "").strip('"').lower()
            if not _MD5_HEX.fullmatch(etag) or hashlib.md5(resp.content).hexdigest() == etag:
                return resp.content
            raise StorageError(f"download of {key!r} does not match its ETag", retryable=True)

        return self._retrying(download)

    def write(self, key: str, data: bytes) -> StoredObject:
        key = self._key(key)
        self.ensure_bucket()
        mimetype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self._request(
            "POST",
            self._object_url(key),
            content=data,
            headers={"content-type": mimetype, "x-upsert": "true"},
        )
        md5 = hashlib.md5(data).hexdigest()
        head = self._head(key)
        if head is not None and head.size == len(data) and head.etag:
            return head
        # No usable HEAD (deleted or replaced meanwhile): report what was written.
        return StoredObject(key=key, size=len(data), modified_at=time.time(), etag=md5)

    def _head(self, key: str) -> StoredObject | None:
        """HEAD /object/authenticated/...: the metadata route every storage-api version has.
        A HEAD error has no body, so storage-api's 400 can only mean "not there" here (the key
        and the bucket were checked before)."""
        try:
            resp = self._request("HEAD", self._object_url(key, "authenticated"), expect_json=False)
        except StorageError as exc:
            if exc.status in (400, 404):
                return None
            raise
        etag = resp.headers.get("etag", "").strip('"') or None
        modified = None
        with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
            modified = parsedate_to_datetime(resp.headers["last-modified"]).timestamp()
        size = resp.headers.get("content-length", "")
        return StoredObject(
            key=key,
            size=int(size) if size.isdigit() else 0,
            modified_at=modified or time.time(),
            etag=etag,
        )

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        key = self._key(key)
        self.ensure_bucket()
        self._request("DELETE", f"/object/{quote(self.bucket, safe='')}", json={"prefixes": [key]})

    def exists(self, key: str) -> bool:
        key = self._key(key)
        self.ensure_bucket()
        return self._head(key) is not None

    def health(self) -> float:
        """Latency in ms of one bucket lookup (no retries); raises StorageError on failure."""
        start = time.perf_counter()
        try:
            resp = self._http.get(f"/bucket/{quote(self.bucket, safe='')}")
        except httpx.HTTPError as exc:
            raise StorageError(
                f"cannot reach {self.base_url} ({type(exc).__name__})", retryable=True
            ) from None
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status_code != 200:
            status, message = self._body_status(resp)
            raise StorageError(f"storage health: {status} {message}", status=status)
        return elapsed
