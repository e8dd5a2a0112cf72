"""The mock's object store: objects as real files under <data_dir>/<bucket>/<key>, written
through <data_dir>/.tmp and renamed into place; the storage-api's key rules and error type."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import shutil
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from starlette.responses import JSONResponse

MAX_KEY_BYTES = 1024
_TMP_DIR = ".tmp"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "docpipe-mock/storage")
# storage-api's VALID_OBJECT_KEY reject set (src/storage/limits.ts).
_INVALID_KEY_CHARS = re.compile(
    '[\u0000-\u001f\u007f\u0080-\u009f#\\[\\]{}^`"<>\\\\|%~'
    "\u034f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
_VALID_BUCKET = re.compile(r"^[A-Za-z0-9_!.*'() &$=@;:+,?-]{1,100}$")
_SORT_COLUMNS = frozenset({"name", "updated_at", "created_at", "last_accessed_at"})


class StorageApiError(Exception):
    """An error rendered the way storage-api renders it."""

    def __init__(self, status: int, code: str, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.error = status, code, message, error or code

    def response(self) -> JSONResponse:
        body = {
            "statusCode": str(self.status),
            "code": self.code,
            "error": self.error,
            "message": self.message,
        }
        return JSONResponse(body, status_code=500 if self.status == 500 else 400)


def invalid_key(key: str) -> StorageApiError:
    return StorageApiError(400, "InvalidKey", f"Invalid key: {key}")


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key for the mock, else raise InvalidKey."""
    if not key or "\x00" in key or _INVALID_KEY_CHARS.search(key):
        raise invalid_key(key)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise invalid_key(key)
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise invalid_key(key)
    return key


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


class ObjectStore:
    """Buckets and objects on disk; thread-safe; all paths validated before use."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / _TMP_DIR
        self.tmp.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._public: dict[str, bool] = {}
        self._mimetypes: dict[tuple[str, str], str] = {}
        self._etags: dict[Path, tuple[tuple[int, int, int], str]] = {}  # (ino,size,mtime)

    # - buckets
    def bucket_dir(self, bucket: str) -> Path:
        if not _VALID_BUCKET.match(bucket) or bucket.startswith("."):
            raise StorageApiError(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        path = self.root / bucket
        if not path.is_dir():
            raise StorageApiError(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        return path

    def create_bucket(self, bucket: str, public: bool) -> None:
        if not _VALID_BUCKET.match(bucket) or bucket.startswith("."):
            raise StorageApiError(400, "InvalidBucketName", "Bucket name invalid", "Invalid Input")
        with self._lock:
            path = self.root / bucket
            if path.exists():
                raise StorageApiError(
                    409, "BucketAlreadyExists", "The resource already exists", "Duplicate"
                )
            path.mkdir()
            self._public[bucket] = public

    def bucket_info(self, bucket: str) -> dict[str, Any]:
        path = self.bucket_dir(bucket)
        st = path.stat()
        return {
            "id": bucket,
            "name": bucket,
            "owner": "",
            "public": self._public.get(bucket, False),
            "type": "STANDARD",
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": _iso(st.st_ctime),
            "updated_at": _iso(st.st_mtime),
        }

    def buckets(self) -> list[dict[str, Any]]:
        names = sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )
        return [self.bucket_info(n) for n in names]

    def delete_bucket(self, bucket: str) -> None:
        path = self.bucket_dir(bucket)
        with self._lock:
            if any(path.iterdir()):
                raise StorageApiError(
                    409, "ResourceNotEmpty", "The bucket you tried to delete is not empty"
                )
            path.rmdir()
            self._public.pop(bucket, None)

    def empty_bucket(self, bucket: str) -> None:
        path = self.bucket_dir(bucket)
        with self._lock:
            for child in list(path.iterdir()):
                # Moved aside first so readers never see a half-deleted tree.
                trash = self.tmp / f"trash-{uuid.uuid4().hex}"
                os.replace(child, trash)
                if trash.is_dir() and not trash.is_symlink():
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    trash.unlink(missing_ok=True)

    # - objects
    def object_path(self, bucket: str, key: str) -> Path:
        base = self.bucket_dir(bucket)
        check_key(key)
        path = base.joinpath(*key.split("/"))
        # Defence in depth: the validated key cannot escape, and a symlink must not either.
        try:
            path.resolve().relative_to(base.resolve())
        except ValueError as exc:
            raise invalid_key(key) from exc
        return path

    def _etag(self, path: Path, st: os.stat_result, fh: BinaryIO) -> str:
        # Keyed by inode too: a rename-over gives a new inode even within one mtime tick.
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._etags.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        digest = hashlib.md5(usedforsecurity=False)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        fh.seek(0)
        md5 = digest.hexdigest()
        self._etags[path] = (stamp, md5)
        return md5

    def mimetype(self, bucket: str, key: str) -> str:
        known = self._mimetypes.get((bucket, key))
        return known or mimetypes.guess_type(key)[0] or "application/octet-stream"

    def metadata(
        self, bucket: str, key: str, path: Path, fh: BinaryIO | None = None
    ) -> dict[str, Any]:
        """Metadata of the file as opened: size and eTag describe the same bytes even if the
        object is replaced meanwhile (pass the handle that will be served)."""
        if fh is None:
            try:
                own = path.open("rb")
            except (FileNotFoundError, IsADirectoryError):
                raise StorageApiError(404, "NoSuchKey", "Object not found", "not_found") from None
            with own:
                return self.metadata(bucket, key, path, own)
        st = os.fstat(fh.fileno())
        return {
            "eTag": f'"{self._etag(path, st, fh)}"',
            "size": st.st_size,
            "mimetype": self.mimetype(bucket, key),
            "cacheControl": "max-age=3600",
            "lastModified": _iso(st.st_mtime),
            "contentLength": st.st_size,
            "httpStatusCode": 200,
        }

    def object_id(self, bucket: str, key: str) -> str:
        return str(uuid.uuid5(_ID_NAMESPACE, f"{bucket}/{key}"))

    def object_row(self, bucket: str, key: str, path: Path) -> dict[str, Any]:
        meta = self.metadata(bucket, key, path)
        return {
            "name": key,
            "bucket_id": bucket,
            "owner": "",
            "id": self.object_id(bucket, key),
            "updated_at": meta["lastModified"],
            "created_at": meta["lastModified"],
            "last_accessed_at": meta["lastModified"],
            "metadata": meta,
        }

    def write(self, bucket: str, key: str, data: bytes, mimetype: str, upsert: bool) -> str:
        path = self.object_path(bucket, key)
        tmp = self.tmp / f"up-{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        try:
            with self._lock:
                if path.is_dir():
                    raise StorageApiError(
                        409, "KeyAlreadyExists", "A folder with this name exists", "Duplicate"
                    )
                if path.exists() and not upsert:
                    raise StorageApiError(
                        409, "KeyAlreadyExists", "The resource already exists", "Duplicate"
                    )
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise StorageApiError(
                        409, "KeyAlreadyExists", "An object exists where a folder is needed",
                        "Duplicate",
                    ) from exc  # fmt: skip
                os.replace(tmp, path)
                self._mimetypes[(bucket, key)] = mimetype
        finally:
            tmp.unlink(missing_ok=True)
        return self.object_id(bucket, key)

    def existing_file(self, bucket: str, key: str) -> Path:
        path = self.object_path(bucket, key)
        if not path.is_file() or path.is_symlink():
            raise StorageApiError(404, "NoSuchKey", "Object not found", "not_found")
        return path

    def delete(self, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
        base = self.bucket_dir(bucket)
        deleted: list[dict[str, Any]] = []
        with self._lock:
            for key in keys:
                try:
                    path = self.existing_file(bucket, key)
                except StorageApiError:
                    continue  # the real API skips names it cannot find
                row = self.object_row(bucket, key, path)
                path.unlink()
                self._mimetypes.pop((bucket, key), None)
                self._etags.pop(path, None)
                deleted.append(row)
                # Folders are virtual in Supabase: drop the ones this delete emptied.
                parent = path.parent
                while parent != base:
                    try:
                        parent.rmdir()
                    except OSError:
                        break
                    parent = parent.parent
        return deleted

    def list(self, bucket: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        base = self.bucket_dir(bucket)
        prefix = str(body.get("prefix") or "").strip("/")
        try:
            limit = int(body.get("limit", 100))
            offset = int(body.get("offset", 0))
        except (TypeError, ValueError) as exc:
            raise StorageApiError(400, "InvalidParameter", "limit/offset must be integers") from exc
        if limit < 0 or offset < 0:
            raise StorageApiError(400, "InvalidParameter", "limit/offset must be >= 0")
        sort = body.get("sortBy") or {}
        column = str(sort.get("column") or "name")
        order = str(sort.get("order") or "asc").lower()
        if column not in _SORT_COLUMNS or order not in ("asc", "desc"):
            raise StorageApiError(400, "InvalidParameter", "Invalid Parameter sortBy")
        search = str(body.get("search") or "").lower()
        if prefix:
            check_key(prefix)
        folder = base.joinpath(*prefix.split("/")) if prefix else base
        if not folder.is_dir() or folder.is_symlink():
            return []
        folders: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        for entry in os.scandir(folder):
            if entry.is_symlink() or (search and not entry.name.lower().startswith(search)):
                continue
            if entry.is_dir():
                folders.append(
                    {
                        "name": entry.name,
                        "id": None,
                        "updated_at": None,
                        "created_at": None,
                        "last_accessed_at": None,
                        "metadata": None,
                    }
                )
            elif entry.is_file():
                key = f"{prefix}/{entry.name}" if prefix else entry.name
                try:
                    row = self.object_row(bucket, key, Path(entry.path))
                except StorageApiError:
                    continue  # deleted while listing
                row = {k: row[k] for k in ("name", "id", "updated_at", "created_at",
                                           "last_accessed_at", "metadata")}  # fmt: skip
                row["name"] = entry.name
                files.append(row)
        entries = folders + files
        if column == "name":
            entries.sort(key=lambda e: e["name"], reverse=order == "desc")
        else:
            # Postgres puts NULLs (folders) last ascending and first descending.
            entries.sort(key=lambda e: e["name"])
            entries.sort(key=lambda e: (e[column] is None, e[column] or ""))
            if order == "desc":
                entries.reverse()
        return entries[offset : offset + limit] if limit else entries[offset:]
