from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from docpipe_dagster.core.ids import (
    DOCPIPE_NAMESPACE,
    batch_key,
    chunk_id,
    document_id,
    normalise_storage_key,
)

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_namespace_and_ids_are_pinned() -> None:
    # Changing any of these would re-key every stored document and chunk: never "fix" them.
    assert uuid.UUID("17cc8dca-e5b1-5d7b-a152-f49e572adb56") == DOCPIPE_NAMESPACE
    doc = document_id("docs/readme.md")
    assert doc == uuid.UUID("a5d99028-0427-5e5e-9c88-7c1b84e03766")
    assert chunk_id(doc, EMPTY_SHA, 0) == uuid.UUID("b9509312-c060-5437-bf61-15e41e378f8d")


def test_document_id_is_uuid5_and_stable() -> None:
    a = document_id("notes/a.md")
    assert a.version == 5
    assert document_id("notes/a.md") == a
    assert document_id("notes/b.md") != a


@pytest.mark.parametrize(
    "variant",
    ["notes/a.md", "./notes/a.md", "/notes/a.md", "notes//a.md", "notes\\a.md", "notes/./a.md"],
)
def test_document_id_normalises_key_spelling(variant: str) -> None:
    assert normalise_storage_key(variant) == "notes/a.md"
    assert document_id(variant) == document_id("notes/a.md")


def test_document_id_unicode_nfc_and_case() -> None:
    nfc = unicodedata.normalize("NFC", "café/menü.md")
    nfd = unicodedata.normalize("NFD", "café/menü.md")
    assert nfc != nfd
    assert document_id(nfc) == document_id(nfd)  # macOS (NFD) and Linux (NFC) file names
    assert document_id("Notes/A.md") != document_id("notes/a.md")  # POSIX keys are case-sensitive


def test_moving_the_corpus_changes_nothing(tmp_path: Path) -> None:
    # The same tree under two roots: the folder backend lists keys relative to its root, so
    # every document keeps its id when the corpus moves (an absolute key would change them).
    from docpipe_dagster.clients.storage.folder import FolderStorage

    tree = {"reports/q3.pdf": b"%PDF-1.4 q3", "notes/caf\u00e9.md": b"menu", "a.txt": b"a"}
    ids = []
    for root in (tmp_path / "home" / "ann" / "corpus", tmp_path / "mnt" / "old" / "corpus"):
        for key, data in tree.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
        keys = sorted(obj.key for obj in FolderStorage(root).list_objects())
        assert keys == sorted(tree)
        ids.append([document_id(key) for key in keys])
    assert ids[0] == ids[1]
    assert document_id(str(tmp_path / "home/ann/corpus/a.txt")) != document_id("a.txt")


@pytest.mark.parametrize("bad", ["", "/", "./", "../secret.md", "a/../../b.md"])
def test_document_id_rejects_bad_keys(bad: str) -> None:
    with pytest.raises(ValueError):
        document_id(bad)


def test_document_id_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        document_id(b"a.md")  # type: ignore[arg-type]


def test_chunk_id_depends_on_each_part() -> None:
    doc = document_id("a.md")
    other_sha = "a" * 64
    base = chunk_id(doc, EMPTY_SHA, 0)
    assert base.version == 5
    assert chunk_id(doc, EMPTY_SHA, 0) == base
    assert chunk_id(str(doc), EMPTY_SHA.upper(), 0) == base  # str id, upper-case hex accepted
    assert len({base, chunk_id(doc, EMPTY_SHA, 1), chunk_id(doc, other_sha, 0)}) == 3
    assert chunk_id(document_id("b.md"), EMPTY_SHA, 0) != base
    ids = {chunk_id(doc, EMPTY_SHA, i) for i in range(10_000)}
    assert len(ids) == 10_000


@pytest.mark.parametrize(
    ("sha", "index"),
    [("abc", 0), ("g" * 64, 0), (EMPTY_SHA, -1), (EMPTY_SHA, True), (EMPTY_SHA, 1.0), (None, 0)],
)
def test_chunk_id_rejects_bad_input(sha: object, index: object) -> None:
    with pytest.raises(ValueError):
        chunk_id(document_id("a.md"), sha, index)  # type: ignore[arg-type]


def test_chunk_id_rejects_bad_document_id() -> None:
    with pytest.raises(ValueError):
        chunk_id("not-a-uuid", EMPTY_SHA, 0)


DAGSTER_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def test_batch_key_format() -> None:
    now = datetime(2026, 11, 28, 17, 27, 0, tzinfo=timezone.utc)
    key = batch_key(now, ["j2", "j1"])
    assert re.fullmatch(r"20261128-172700-[0-9a-f]{8}", key), key
    assert DAGSTER_KEY.match(key)


def test_batch_key_ids_order_and_duplicates_do_not_matter() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ids = [uuid.UUID(int=i) for i in range(5)]
    assert batch_key(now, ids) == batch_key(now, list(reversed(ids))) == batch_key(now, ids + ids)
    assert batch_key(now, ids) != batch_key(now, ids[:4])
    assert batch_key(now, (str(i) for i in ids)) == batch_key(now, ids)  # any iterable


def test_batch_key_uses_utc() -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 28, 18, 27, 0, tzinfo=cet)
    naive_utc = datetime(2026, 11, 28, 17, 27, 0)
    assert batch_key(local, ["x"]) == batch_key(naive_utc, ["x"])
    assert batch_key(local, ["x"]).startswith("20261128-172700-")


def test_batch_key_sorts_by_time() -> None:
    t0 = datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    keys = [batch_key(t0 + timedelta(seconds=s), [f"job{s}"]) for s in (0, 1, 3600, 86400 * 40)]
    assert keys == sorted(keys)


def test_batch_key_needs_jobs() -> None:
    with pytest.raises(ValueError):
        batch_key(datetime.now(timezone.utc), [])
