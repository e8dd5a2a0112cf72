"""The Supabase Storage mock over real HTTP: buckets, objects, listing, deletes, safety."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from docpipe_dagster_tests.support import MockServer


@pytest.fixture
def api(storage_mock: MockServer) -> Iterator[httpx.Client]:
    key = storage_mock.api_key
    headers = {"Authorization": f"Bearer {key}", "apikey": key}
    with httpx.Client(
        base_url=f"{storage_mock.base_url}/storage/v1", headers=headers, timeout=10
    ) as client:
        yield client


@pytest.fixture
def bucket(api: httpx.Client) -> str:
    name = f"b-{uuid.uuid4().hex[:10]}"
    assert api.post("/bucket", json={"name": name}).json() == {"name": name}
    return name


def _error(resp: httpx.Response, status: str, error: str) -> None:
    assert resp.status_code == 400, resp.text  # storage-api answers non-500 errors with 400
    body = resp.json()
    assert body["statusCode"] == status and body["error"] == error, body
    assert body["message"]


def test_buckets(api: httpx.Client, bucket: str) -> None:
    _error(api.post("/bucket", json={"name": bucket}), "409", "Duplicate")
    names = [b["name"] for b in api.get("/bucket").json()]
    assert bucket in names
    info = api.get(f"/bucket/{bucket}").json()
    assert info["id"] == bucket and info["public"] is False
    _error(api.get("/bucket/no-such-bucket"), "404", "Bucket not found")
    _error(api.post("/object/no-such-bucket/a.txt", content=b"x"), "404", "Bucket not found")
    # The id field is accepted too, and a public flag is kept.
    other = f"p-{uuid.uuid4().hex[:8]}"
    api.post("/bucket", json={"id": other, "name": other, "public": True})
    assert api.get(f"/bucket/{other}").json()["public"] is True
    assert api.delete(f"/bucket/{other}").status_code == 200


def test_upload_duplicate_upsert_update_download(api: httpx.Client, bucket: str) -> None:
    url = f"/object/{bucket}/docs/report one.txt"
    created = api.post(url, content=b"v1", headers={"content-type": "text/plain"})
    assert created.json()["Key"] == f"{bucket}/docs/report one.txt" and created.json()["Id"]
    _error(api.post(url, content=b"v2"), "409", "Duplicate")
    assert api.get(url).content == b"v1"
    assert api.post(url, content=b"v2", headers={"x-upsert": "true"}).status_code == 200
    assert api.get(url).content == b"v2"
    assert api.put(url, content=b"v3").status_code == 200
    got = api.get(url)
    assert got.content == b"v3" and got.headers["content-type"].startswith("text/plain")
    assert got.headers["etag"].startswith('"') and got.headers["last-modified"].endswith("GMT")
    assert api.get(f"/object/authenticated/{bucket}/docs/report one.txt").content == b"v3"
    assert api.head(url).status_code == 200
    multipart = api.post(
        f"/object/{bucket}/form.md", files={"file": ("form.md", b"# form", "text/markdown")}
    )
    assert multipart.status_code == 200
    assert api.get(f"/object/{bucket}/form.md").content == b"# form"
    _error(api.get(f"/object/{bucket}/missing.txt"), "404", "not_found")


def test_files_live_on_disk(api: httpx.Client, bucket: str, storage_mock: MockServer) -> None:
    api.post(f"/object/{bucket}/deep/er/file.txt", content=b"disk")
    info = api.get(f"/object/info/{bucket}/deep/er/file.txt").json()
    assert info["size"] == 4 and info["name"] == "deep/er/file.txt"
    on_disk = storage_mock.data_dir / bucket / "deep" / "er" / "file.txt"  # type: ignore[attr-defined]
    assert on_disk.read_bytes() == b"disk"
    # No temp files are left behind next to objects.
    assert not list((storage_mock.data_dir / ".tmp").iterdir())  # type: ignore[attr-defined]


def test_list_is_one_level_with_folders(api: httpx.Client, bucket: str) -> None:
    for key in ("a.txt", "b.md", "sub/c.txt", "sub/deeper/d.txt", "zeta/e.txt"):
        api.post(f"/object/{bucket}/{key}", content=key.encode())
    top = api.post(f"/object/list/{bucket}", json={"prefix": ""}).json()
    assert [e["name"] for e in top] == ["a.txt", "b.md", "sub", "zeta"]
    folder = next(e for e in top if e["name"] == "sub")
    assert folder["id"] is None and folder["metadata"] is None
    file = next(e for e in top if e["name"] == "a.txt")
    assert file["id"] and file["metadata"]["size"] == 5
    assert set(file["metadata"]) >= {"size", "mimetype", "eTag", "lastModified", "contentLength"}
    assert {"created_at", "updated_at", "last_accessed_at"} <= set(file)
    sub = api.post(f"/object/list/{bucket}", json={"prefix": "sub/"}).json()
    assert [e["name"] for e in sub] == ["c.txt", "deeper"]
    assert api.post(f"/object/list/{bucket}", json={"prefix": "nope"}).json() == []


def test_list_paging_sorting_search(api: httpx.Client, bucket: str) -> None:
    for i in range(5):
        api.post(f"/object/{bucket}/f{i}.txt", content=b"x" * i)
        time.sleep(0.01)  # distinct modification times

    def names(**body: object) -> list[str]:
        return [e["name"] for e in api.post(f"/object/list/{bucket}", json=body).json()]

    assert names(limit=2, offset=0) == ["f0.txt", "f1.txt"]
    assert names(limit=2, offset=2) == ["f2.txt", "f3.txt"]
    assert names(limit=2, offset=4) == ["f4.txt"]
    assert names(limit=2, offset=6) == []
    assert names(sortBy={"column": "name", "order": "desc"})[:2] == ["f4.txt", "f3.txt"]
    assert names(sortBy={"column": "updated_at", "order": "desc"})[0] == "f4.txt"
    assert names(search="F3") == ["f3.txt"]
    bad = api.post(f"/object/list/{bucket}", json={"sortBy": {"column": "size"}})
    assert bad.status_code == 400


def test_delete_by_prefixes(api: httpx.Client, bucket: str) -> None:
    for key in ("keep.txt", "gone/one.txt", "gone/two.txt"):
        api.post(f"/object/{bucket}/{key}", content=b"x")
    resp = api.request(
        "DELETE", f"/object/{bucket}", json={"prefixes": ["gone/one.txt", "gone/two.txt", "nx"]}
    )
    assert sorted(o["name"] for o in resp.json()) == ["gone/one.txt", "gone/two.txt"]
    # Folders are virtual: emptied ones disappear from the listing.
    top = api.post(f"/object/list/{bucket}", json={"prefix": ""}).json()
    assert [e["name"] for e in top] == ["keep.txt"]
    assert api.delete(f"/object/{bucket}/keep.txt").json() == {"message": "Successfully deleted"}
    _error(api.delete(f"/object/{bucket}/keep.txt"), "404", "not_found")
    missing = api.request("DELETE", f"/object/{bucket}", json={})
    assert missing.status_code == 400


@pytest.mark.parametrize(
    "raw_path",
    [
        "%2E%2E/escape.txt",  # ..
        "a/%2E%2E/%2E%2E/escape.txt",
        "/absolute.txt",  # leading slash (double slash in the URL)
        "nul%00byte.txt",
        "a//b.txt",
        "%2E/dot.txt",
        "quote%22.txt",  # characters storage-api refuses
        "hash%23.txt",
        "pct%25.txt",
        "back%5Cslash.txt",
    ],
)
def test_bad_keys_rejected(api: httpx.Client, bucket: str, raw_path: str) -> None:
    url = f"/object/{bucket}/{raw_path}"
    resp = api.post(url, content=b"evil")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] in ("InvalidKey", "not_found")
    assert api.get(url).status_code == 400


def test_list_prefix_traversal_rejected(api: httpx.Client, bucket: str) -> None:
    resp = api.post(f"/object/list/{bucket}", json={"prefix": "../"})
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidKey"


def test_hostile_but_valid_names(api: httpx.Client, bucket: str) -> None:
    keys = ["with space.txt", "ünïcødé/文件.md", "it's;semi;colon (1).txt", "emoji 😀.txt"]
    for key in keys:
        url = f"/object/{bucket}/{httpx.URL(key).raw_path.decode()}"
        assert api.post(url, content=key.encode()).status_code == 200, key
        assert api.get(url).content == key.encode()


def test_auth(storage_mock: MockServer) -> None:
    url = f"{storage_mock.base_url}/storage/v1/bucket"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(url, headers={"apikey": storage_mock.api_key}).status_code == 200


def test_download_never_sees_half_an_object(api: httpx.Client, bucket: str) -> None:
    small, big = b"a" * 200_000, b"b" * 1_500_000
    url = f"/object/{bucket}/hot.bin"
    api.post(url, content=small)
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=10) as w:
            i = 0
            while not stop.is_set() and i < 40:
                w.post(url, content=big if i % 2 else small, headers={"x-upsert": "true"})
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            body = api.get(url).content
            if body not in (small, big):
                errors.append(f"torn read of {len(body)} bytes")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors


def test_health_is_fast(storage_mock: MockServer) -> None:
    with httpx.Client() as client:
        client.get(f"{storage_mock.base_url}/health")
        start = time.perf_counter()
        assert client.get(f"{storage_mock.base_url}/health").status_code == 200
        assert (time.perf_counter() - start) * 1000 < 100
