"""Objects in a bucket of the Supabase Storage REST API (or its local mock)."""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from docpipe_dagster.clients.storage.base import (
    _MD5_HEX,
    _PLACEHOLDER,
    _SUPABASE_REJECTED,
    _T,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    StoredObject,
    _validate_prefix,
    log,
    validate_key,
)
from docpipe_dagster.core.retry import (
    Retrier,
    RetryPolicy,
    is_retryable_status,
)


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
