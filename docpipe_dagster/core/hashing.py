"""SHA-256 helpers: the content hash is the identity of a document version (docs/ARCHITECTURE.md, identity).

All digests are lower-case hex, so they compare equal across the database, the CLI and logs.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_bytes", "sha256_file", "sha256_text"]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (bytes, bytearray or memoryview)."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8.

    Lone surrogates are not valid UTF-8 and raise ``UnicodeEncodeError`` rather than being
    hashed in some lossy way; chunk text comes from ``normalise_text`` which removes them.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk_size`` pieces (memory stays bounded)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        # readinto a reused buffer: no per-block allocation for multi-GB files.
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()
