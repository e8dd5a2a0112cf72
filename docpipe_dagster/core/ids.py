"""Stable identifiers: the same input always yields the same id (docs/ARCHITECTURE.md, identity).

Nothing here is random or depends on where the corpus lives on disk, so re-running an
unchanged corpus, or moving its folder, produces exactly the same rows.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

__all__ = [
    "DOCPIPE_NAMESPACE",
    "batch_key",
    "chunk_id",
    "document_id",
    "job_id",
    "normalise_storage_key",
]

# Fixed forever: changing it would give every stored document and chunk a new id.
# (It is uuid5(NAMESPACE_DNS, "docpipe-dagster.local"), written out so it can never drift.)
DOCPIPE_NAMESPACE = uuid.UUID("17cc8dca-e5b1-5d7b-a152-f49e572adb56")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def normalise_storage_key(storage_key: str) -> str:
    """Canonical POSIX form of a key relative to the storage root.

    Backslashes become ``/``, empty and ``.`` segments go, a leading ``/`` is dropped (keys are
    relative to the root whatever the caller's habit), and the key is Unicode NFC so a file
    name written by macOS (NFD) and by Linux (NFC) is the same document. ``..`` is refused:
    a key must not climb out of the storage root. Case is kept (POSIX names are case-sensitive).
    """
    if not isinstance(storage_key, str):
        raise TypeError(f"storage_key must be str, got {type(storage_key).__name__}")
    key = unicodedata.normalize("NFC", storage_key).replace("\\", "/")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"storage key must not contain '..': {storage_key!r}")
    if not parts:
        raise ValueError(f"empty storage key: {storage_key!r}")
    return "/".join(parts)


def document_id(storage_key: str) -> uuid.UUID:
    """UUIDv5 of the normalised storage key (relative to the storage root, never absolute)."""
    return uuid.uuid5(DOCPIPE_NAMESPACE, "document:" + normalise_storage_key(storage_key))


def job_id(document_id: uuid.UUID, content_sha256: str) -> uuid.UUID:
    """One job per (document, content version): UUIDv5 with the document id as namespace."""
    return uuid.uuid5(document_id, content_sha256)


def chunk_id(document_id: uuid.UUID | str, content_sha256: str, chunk_index: int) -> uuid.UUID:
    """UUIDv5(document id, content sha256, chunk index), with the document id as namespace.

    ``content_sha256`` is the hex digest of the document version's bytes, so a new version
    gets new chunk ids while an unchanged one keeps them.
    """
    doc = document_id if isinstance(document_id, uuid.UUID) else uuid.UUID(str(document_id))
    sha = content_sha256.lower() if isinstance(content_sha256, str) else ""
    if not _SHA256_HEX.fullmatch(sha):
        raise ValueError(f"content_sha256 must be 64 hex digits, got {content_sha256!r}")
    # bool is an int subclass; True as an index is a bug, not chunk 1.
    if isinstance(chunk_index, bool) or not isinstance(chunk_index, int) or chunk_index < 0:
        raise ValueError(f"chunk_index must be a non-negative int, got {chunk_index!r}")
    return uuid.uuid5(doc, f"chunk:{sha}:{chunk_index}")


def batch_key(now: datetime, job_ids: Iterable[object]) -> str:
    """Dagster partition key for a batch: ``YYYYMMDD-HHMMSS-<8 hex>`` (UTC).

    Sortable by creation time, readable in the UI, only ``[0-9a-f-]`` characters. The suffix
    hashes the sorted, de-duplicated ids (``str()`` of each), so two batches opened in the same
    second get different keys while re-deriving the key for the same jobs gives the same one.
    A naive ``now`` is taken to be UTC already.
    """
    ids = sorted({str(i) for i in job_ids})
    if not ids:
        raise ValueError("a batch needs at least one job id")
    stamp = now if now.tzinfo is None else now.astimezone(timezone.utc)
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:8]
    return f"{stamp:%Y%m%d-%H%M%S}-{digest}"
