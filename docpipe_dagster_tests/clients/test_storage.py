"""Storage backends: one contract for the folder and the Supabase backend, then each one's own
edges (symlinks and atomic writes; paging, faults and auth against the Supabase mock)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from docpipe_dagster.clients.storage import (
    FolderStorage,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageBackend,
    StorageError,
    StoredObject,
    SupabaseStorage,
    validate_key,
)
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster_tests.support import MockServer

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
# Hostile but legal everywhere (storage-api refuses " # % and a few others; tested below).
HOSTILE_KEYS = [
    "with space.txt",
    "ünïcødé/文件 名.md",
    "it's;semi;colon (1).txt",
    "emoji 😀/a=b&c+d@e$f!,g.txt",
    "deep/er/than/you/think.pdf",
]


def _supabase(mock: MockServer, bucket: str | None = None, **kw: object) -> SupabaseStorage:
    options: dict = {
        "page_size": 2,
        "retry_policy": FAST_RETRY,
        "timeout_s": 5.0,
        "transport": getattr(mock, "sync_transport", None),  # in-process unless over the wire
    }
    options.update(kw)
    return SupabaseStorage(
        mock.base_url, mock.api_key or "", bucket or f"t-{uuid.uuid4().hex[:10]}", **options
    )


@pytest.fixture(params=["folder", "supabase"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "folder":
        yield FolderStorage(tmp_path / "root")
        return
    mock: MockServer = request.getfixturevalue("storage_mock")
    with _supabase(mock) as store:
        yield store


def _write_all(store: StorageBackend, keys: list[str]) -> None:
    for key in keys:
        store.write(key, key.encode())


# --- validate_key ----------------------------------------------------------------------------


def test_validate_key_normalises() -> None:
    assert validate_key("a/b.txt") == "a/b.txt"
    assert validate_key("./a//b/./c.txt") == "a/b/c.txt"
    assert validate_key("ünï cødé;'.md") == "ünï cødé;'.md"


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../up.txt", "a/../../b", "..", "a\\..\\b", "C:\\x", "a\x00b", "a\nb",
     "dir/", ".", "./", "x" * 1025, "é" * 513],
)  # fmt: skip
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


# --- the shared contract ---------------------------------------------------------------------


def test_write_read_exists_delete(backend: StorageBackend) -> None:
    before = time.time()
    obj = backend.write("docs/a.txt", b"hello")
    assert isinstance(obj, StoredObject) and obj.key == "docs/a.txt" and obj.size == 5
    assert before - 5 < obj.modified_at < time.time() + 5
    assert backend.read("docs/a.txt") == b"hello"
    assert backend.exists("docs/a.txt") and not backend.exists("docs/b.txt")
    assert backend.write("docs/a.txt", b"overwritten").size == 11
    assert backend.read("docs/a.txt") == b"overwritten"
    backend.delete("docs/a.txt")
    assert not backend.exists("docs/a.txt")
    backend.delete("docs/a.txt")  # deleting a missing key is fine
    with pytest.raises(ObjectNotFoundError):
        backend.read("docs/a.txt")
    assert backend.write("empty.bin", b"").size == 0
    assert backend.read("empty.bin") == b""


def test_list_is_recursive_sorted_and_prefixed(backend: StorageBackend) -> None:
    keys = ["b.txt", "a/z.txt", "a/b/c.txt", "a/b/a.txt", "a-file.txt", "c/d/e/f.txt"]
    _write_all(backend, keys)
    listed = list(backend.list_objects())
    assert [o.key for o in listed] == [
        "a-file.txt",
        "a/b/a.txt",
        "a/b/c.txt",
        "a/z.txt",
        "b.txt",
        "c/d/e/f.txt",
    ]
    assert all(o.size == len(o.key) for o in listed)
    assert [o.key for o in backend.list_objects("a/")] == ["a/b/a.txt", "a/b/c.txt", "a/z.txt"]
    assert next(o.key for o in backend.list_objects("a")) == "a-file.txt"
    assert [o.key for o in backend.list_objects("a/b/c")] == ["a/b/c.txt"]
    assert list(backend.list_objects("nothing/here")) == []


def test_hostile_names_round_trip(backend: StorageBackend) -> None:
    _write_all(backend, HOSTILE_KEYS)
    assert sorted(o.key for o in backend.list_objects()) == sorted(HOSTILE_KEYS)
    for key in HOSTILE_KEYS:
        assert backend.read(key) == key.encode()
        assert backend.exists(key)


@pytest.mark.parametrize("key", ["../escape.txt", "/abs.txt", "a/../../x", "nul\x00.txt", "b\\c"])
def test_traversal_rejected(backend: StorageBackend, key: str) -> None:
    for op in (backend.read, backend.exists, backend.delete):
        with pytest.raises(InvalidKeyError):
            op(key)
    with pytest.raises(InvalidKeyError):
        backend.write(key, b"evil")
    with pytest.raises(InvalidKeyError):
        list(backend.list_objects("../"))


def test_health_and_describe(backend: StorageBackend) -> None:
    backend.write("h.txt", b"x")
    backend.health()
    assert backend.health() < 100
    text = backend.describe()
    assert text.startswith(("folder /", "supabase http"))
    assert "docpipe-local-key" not in text and "docpipe-local-key" not in repr(backend)


@pytest.mark.over_the_wire
def test_both_backends_list_the_same(tmp_path: Path, storage_wire: MockServer) -> None:
    keys = ["z.md", "m/n.md", "m/a b.md", "a/ü.md", "a.md"]
    folder = FolderStorage(tmp_path / "root")
    _write_all(folder, keys)
    with _supabase(storage_wire) as supa:
        _write_all(supa, keys)
        remote = [(o.key, o.size) for o in supa.list_objects()]
    assert remote == [(o.key, o.size) for o in folder.list_objects()]


# --- folder backend --------------------------------------------------------------------------


def _linked_tree(tmp_path: Path) -> tuple[Path, Path]:
    """root/docs/real.txt, root/alias.txt -> it, root/escape.txt -> outside/secret.txt."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "docs" / "real.txt").write_text("real")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "alias.txt").symlink_to(root / "docs" / "real.txt")
    return root, outside


def test_folder_symlinks(tmp_path: Path) -> None:
    root, outside = _linked_tree(tmp_path)
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken.txt").symlink_to(root / "missing.txt")
    store = FolderStorage(root)
    assert [o.key for o in store.list_objects()] == ["alias.txt", "docs/real.txt"]
    reasons = dict(store.skipped)
    assert "outside" in reasons["escape.txt"] and "outside" in reasons["escape-dir"]
    assert "not followed" in reasons["loop"] and "broken" in reasons["broken.txt"]
    with pytest.raises(InvalidKeyError):
        store.read("escape-dir/secret.txt")
    with pytest.raises(InvalidKeyError):
        store.write("escape-dir/planted.txt", b"x")
    assert not (outside / "planted.txt").exists()


def test_folder_stat_is_what_the_listing_says(tmp_path: Path) -> None:
    """stat(key): one object exactly as list_objects lists it, None where it lists none."""
    root, _ = _linked_tree(tmp_path)
    (root / "linked").symlink_to(root / "docs", target_is_directory=True)
    (root / ".docpipe-tmp-1").write_text("half")
    os.mkfifo(root / "pipe")
    store = FolderStorage(root)
    listed = {o.key: o for o in store.list_objects()}
    assert sorted(listed) == ["alias.txt", "docs/real.txt"]
    assert {key: store.stat(key) for key in listed} == listed
    for key in ("escape.txt", "linked/real.txt", ".docpipe-tmp-1", "pipe", "docs", "gone.txt"):
        assert store.stat(key) is None, key
    assert store.stat("nowhere/gone.txt") is None
    with pytest.raises(InvalidKeyError):
        store.stat("../escape.txt")


def test_folder_skips_invalid_names_and_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_text("ok")
    (root / "back\\slash.txt").write_text("x")
    (root / "new\nline.txt").write_text("x")
    (root / ".docpipe-tmp-123").write_text("half")
    store = FolderStorage(root)
    assert [o.key for o in store.list_objects()] == ["ok.txt"]
    assert {rel for rel, _ in store.skipped} == {"back\\slash.txt", "new\nline.txt"}


def test_folder_write_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    store = FolderStorage(tmp_path / "new-root")
    store.write("x/y/z.txt", b"1" * 10_000)
    assert (tmp_path / "new-root" / "x" / "y" / "z.txt").read_bytes() == b"1" * 10_000
    assert [p.name for p in (tmp_path / "new-root" / "x" / "y").iterdir()] == ["z.txt"]
    with pytest.raises(StorageError):
        store.write("x/y/z.txt/inner.txt", b"file where a folder is needed")


def test_folder_missing_root(tmp_path: Path) -> None:
    store = FolderStorage(tmp_path / "nope")
    with pytest.raises(StorageError, match="does not exist"):
        list(store.list_objects())
    with pytest.raises(StorageError):
        store.health()
    assert store.describe() == f"folder {tmp_path / 'nope'}"


def test_folder_reports_real_mtime(tmp_path: Path) -> None:
    store = FolderStorage(tmp_path)
    store.write("old.txt", b"x")
    os.utime(tmp_path / "old.txt", (1_000_000_000, 1_000_000_000))
    assert next(iter(store.list_objects())).modified_at == 1_000_000_000


# --- Supabase backend ------------------------------------------------------------------------


def test_supabase_creates_bucket_and_pages(storage_mock: MockServer) -> None:
    bucket = f"auto-{uuid.uuid4().hex[:8]}"
    with _supabase(storage_mock, bucket, page_size=2) as store:
        keys = [f"many/f{i:02d}.txt" for i in range(7)] + ["many/sub/x.txt"]
        _write_all(store, keys)
        assert [o.key for o in store.list_objects()] == sorted(keys)
        objs = list(store.list_objects("many/f0"))
        assert len(objs) == 7 and all(o.etag and len(o.etag) == 32 for o in objs)
    key = storage_mock.api_key
    headers = {"Authorization": f"Bearer {key}", "apikey": key}
    resp = storage_mock.http.get(f"/storage/v1/bucket/{bucket}", headers=headers)
    assert resp.status_code == 200
    # Listing paged through the folder: 4 pages of 2 for 8 entries (+1 empty) at least.
    assert storage_mock.stats()["by_route"]["POST /storage/v1/object/list/{bucket}"] >= 5


def test_supabase_refuses_keys_the_api_would(storage_mock: MockServer) -> None:
    with _supabase(storage_mock) as store:
        for key in ('say "hi".txt', "hash#tag.txt", "100%.txt", "a|b.txt"):
            with pytest.raises(InvalidKeyError, match="Supabase"):
                store.write(key, b"x")
    assert FolderStorage.__name__  # the folder backend takes them (covered by the OS)


def test_supabase_skips_folder_placeholders(storage_mock: MockServer) -> None:
    with _supabase(storage_mock) as store:
        store.write("folder/.emptyFolderPlaceholder", b"")
        store.write("folder/real.txt", b"x")
        assert [o.key for o in store.list_objects()] == ["folder/real.txt"]


@pytest.mark.parametrize("kind", ["http_500", "http_503", "malformed_json"])
def test_supabase_retries_transient_faults(storage_mock: MockServer, kind: str) -> None:
    with _supabase(storage_mock) as store:
        store.write("f.txt", b"before faults")
        storage_mock.set_faults({"kind": kind, "count": 2})
        assert [o.key for o in store.list_objects()] == ["f.txt"]
        storage_mock.set_faults({"kind": kind, "count": 2})
        store.write("g.txt", b"during faults")
        # The generic malformed_json fault answers 200 with truncated JSON, which for a raw
        # download is indistinguishable from content (it has no ETag to check): JSON routes only.
        path = "/storage/v1/object/list" if kind == "malformed_json" else None
        storage_mock.set_faults({"kind": kind, "count": 2, "path": path})
        assert store.read("f.txt") == b"before faults"
        assert store.exists("g.txt")
        assert [o.key for o in store.list_objects()] == ["f.txt", "g.txt"]
    assert storage_mock.stats()["faults"][kind] == 6


@pytest.mark.over_the_wire
def test_supabase_download_checked_against_etag(storage_wire: MockServer) -> None:
    mangled: list[str] = []

    class Mangling(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            resp = super().handle_request(request)
            if "/object/authenticated/" in request.url.path and not mangled:
                mangled.append(request.url.path)
                resp.read()
                return httpx.Response(200, headers=resp.headers, content=b"X" * len(resp.content))
            return resp

    with _supabase(storage_wire, transport=Mangling()) as store:
        store.write("check.txt", b"the real bytes")
        assert store.read("check.txt") == b"the real bytes"
    assert mangled


def test_supabase_honours_retry_after(storage_mock: MockServer) -> None:
    with _supabase(storage_mock) as store:
        store.write("r.txt", b"x")
        storage_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.4})
        start = time.monotonic()
        assert store.read("r.txt") == b"x"
        assert time.monotonic() - start >= 0.35


@pytest.mark.over_the_wire
def test_supabase_hang_is_cut_and_retried(storage_wire: MockServer) -> None:
    with _supabase(storage_wire, timeout_s=0.3) as store:
        store.write("h.txt", b"x")
        storage_wire.set_faults({"kind": "hang", "count": 1, "hang_seconds": 10})
        start = time.monotonic()
        assert store.exists("h.txt")
        assert time.monotonic() - start < 5


def test_supabase_persistent_failure_is_clear(storage_mock: MockServer) -> None:
    with _supabase(storage_mock) as store:
        store.write("p.txt", b"x")
        storage_mock.set_faults({"kind": "http_503"})
        with pytest.raises(StorageError) as info:
            store.read("p.txt")
    assert info.value.retryable and info.value.status == 503 and "503" in str(info.value)
    assert storage_mock.stats()["faults"]["http_503"] == FAST_RETRY.max_attempts


def test_supabase_bad_key_is_not_retried_or_leaked(storage_mock: MockServer) -> None:
    secret = "eyJ-service-role-key-must-not-leak"
    with SupabaseStorage(
        storage_mock.base_url,
        secret,
        "any",
        retry_policy=FAST_RETRY,
        transport=storage_mock.sync_transport,
    ) as store:
        with pytest.raises(StorageError) as info:
            list(store.list_objects())
        err = info.value
        assert err.status == 403 and not err.retryable
        assert storage_mock.stats()["total"] == 1
        for text in (str(err), repr(err), store.describe(), repr(store)):
            assert secret not in text
        with pytest.raises(StorageError):
            store.health()


def test_supabase_unreachable() -> None:
    with SupabaseStorage("http://127.0.0.1:9", "k", "b", retry_policy=FAST_RETRY) as store:
        with pytest.raises(StorageError, match="cannot reach"):
            store.health()
        with pytest.raises(StorageError) as info:
            store.read("x.txt")
    assert info.value.retryable


@pytest.mark.real_services
@pytest.mark.skipif(
    not (
        os.environ.get("SUPABASE_URL")
        and os.environ.get("SUPABASE_SERVICE_KEY")
        and os.environ.get("DOCPIPE_REAL_SUPABASE")
    ),
    reason="real Supabase: set SUPABASE_URL, SUPABASE_SERVICE_KEY and DOCPIPE_REAL_SUPABASE=1",
)
def test_real_supabase_round_trip() -> None:
    bucket = os.environ.get("DOCPIPE_SUPABASE_TEST_BUCKET", "docpipe-test")
    prefix = f"docpipe-test-{uuid.uuid4().hex[:8]}/"
    with SupabaseStorage(
        os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_KEY"], bucket
    ) as store:
        keys = [prefix + k for k in ("a.txt", "sub/it's here.md")]
        try:
            _write_all(store, keys)
            assert [o.key for o in store.list_objects(prefix)] == sorted(keys)
            assert store.read(keys[1]) == keys[1].encode()
        finally:
            for key in keys:
                store.delete(key)
        assert list(store.list_objects(prefix)) == []
