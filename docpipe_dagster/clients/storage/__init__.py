"""Where documents come from: a local folder or Supabase Storage, behind one sync interface.

Keys are relative POSIX paths ("reports/2024/q1.pdf") checked by `validate_key`, so no key can
reach outside the folder or bucket. Both backends list recursively in the same order: keys
sorted by code point ("a-file.txt" < "a/b.txt" < "b.txt"), which a sensor can use as a
high-water mark. They walk folder by folder and sort each folder's entries with folders as
"name/", which yields exactly that global order without holding the whole listing.
Sync (httpx.Client) because the caller is a Dagster sensor. No dagster import here.
"""

from __future__ import annotations

from docpipe_dagster.clients.storage.base import (
    MAX_KEY_BYTES,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageBackend,
    StorageError,
    StoredObject,
    validate_key,
)
from docpipe_dagster.clients.storage.folder import FolderStorage

__all__ = [
    "MAX_KEY_BYTES",
    "FolderStorage",
    "InvalidKeyError",
    "ObjectNotFoundError",
    "StorageBackend",
    "StorageError",
    "StoredObject",
    "SupabaseStorage",
    "validate_key",
]


def __getattr__(name: str) -> object:
    # SupabaseStorage pulls in httpx: imported when asked for, so a command on the folder
    # backend (`docpipe ingest`'s no-op path) starts without it.
    if name == "SupabaseStorage":
        from docpipe_dagster.clients.storage.supabase import SupabaseStorage

        return SupabaseStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
