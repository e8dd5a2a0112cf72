"""What both backends share: keys, objects, errors and the interface."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from docpipe_dagster.core.retry import (
    ServiceError,
)

log = logging.getLogger("docpipe_dagster.clients.storage")  # one logger for both backends

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
