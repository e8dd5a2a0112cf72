from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from docpipe_dagster.core.hashing import sha256_bytes, sha256_file, sha256_text

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_known_vectors() -> None:
    assert sha256_bytes(b"") == EMPTY
    assert sha256_bytes(b"abc") == ABC
    assert sha256_text("") == EMPTY
    assert sha256_text("abc") == ABC


def test_bytes_like_inputs() -> None:
    assert sha256_bytes(bytearray(b"abc")) == ABC
    assert sha256_bytes(memoryview(b"xabcx")[1:4]) == ABC


def test_text_is_utf8() -> None:
    text = "héllo wörld 東京 🚀"
    assert sha256_text(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert sha256_text(text) != sha256_text(text.replace("é", "e\u0301"))  # no hidden normalising


def test_text_rejects_lone_surrogate() -> None:
    with pytest.raises(UnicodeEncodeError):
        sha256_text("bad \ud800")


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 3 * 1024 * 1024 + 17])
def test_file_matches_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = sha256_bytes(data)
    assert sha256_file(path) == expected
    assert sha256_file(str(path), chunk_size=1000) == expected
    if size < 5000:
        assert sha256_file(path, chunk_size=1) == expected


def test_file_reads_in_bounded_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * 100_000)
    sizes: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self.fh = fh

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.fh.close()

        def readinto(self, buf):  # type: ignore[no-untyped-def]
            sizes.append(len(buf))
            return self.fh.readinto(buf)

    monkeypatch.setattr("builtins.open", lambda *a, **k: Spy(real_open(*a, **k)))
    assert sha256_file(path, chunk_size=4096) == sha256_bytes(b"z" * 100_000)
    assert sizes and max(sizes) == 4096 and len(sizes) >= 100_000 // 4096


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sha256_file(tmp_path / "x", chunk_size=0)
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "missing")
