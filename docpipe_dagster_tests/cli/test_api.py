"""The HTTP API as a real server process (`docpipe api`) over real HTTP, against the mocks
and this test's database: auth, limits, traversal, upload -> ingest -> state -> search."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.mock_servers import free_port

KEY = "test-api-key-not-a-secret"
DOC = (
    "# Lighthouses\n\n## Lamps\n\nThe keeper trims the wick of the paraffin lamp every evening; "
    "the Fresnel lens throws the beam twenty nautical miles across the strait.\n"
)


@contextlib.contextmanager
def running_api(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`docpipe api` on a free port with this environment; its base URL until the block ends."""
    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "api", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the API did not come up")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def api(cli_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**cli_env, "DOCPIPE_API_KEY": KEY, "DOCPIPE_API_MAX_UPLOAD_BYTES": "100000"}
    with running_api(env, tmp_path / "api.log") as base:
        yield base, env


def test_api_refuses_to_start_without_a_key(cli_env: dict[str, str]) -> None:
    out = docpipe(cli_env, "api", "--port", str(free_port()), timeout=60)
    assert out.returncode == 2
    assert "set DOCPIPE_API_KEY" in out.stdout + out.stderr


def test_auth_limits_and_traversal(api: tuple[str, dict[str, str]]) -> None:
    base, _ = api
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{base}/v1/search", params={"q": "x"}).status_code == 401
    wrong = httpx.get(
        f"{base}/v1/search", params={"q": "x"}, headers={"Authorization": "Bearer no"}
    )
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.delete(f"{base}/v1/documents/a.md").status_code == 401
    # docs and health need no key
    assert "/v1/search" in httpx.get(f"{base}/openapi.json").json()["paths"]
    assert httpx.get(f"{base}/docs").status_code == 200
    health = httpx.get(f"{base}/health", timeout=30)
    assert health.status_code == 200, health.text
    names = {s["name"]: s for s in health.json()["services"]}
    assert set(names) == {"database", "parser", "embedder", "storage"}
    assert all(s["latency_ms"] >= 0 for s in names.values())

    def upload(key: str, data: bytes) -> httpx.Response:
        return httpx.post(
            f"{base}/v1/documents", headers=auth, files={"file": ("f.md", data)}, data={"key": key}
        )

    for bad in ("../outside.md", "/etc/passwd", "a/../../b.md", "dir\\x.md", ".hidden.md"):
        response = upload(bad, b"# x\n")
        assert response.status_code == 400, (bad, response.text)
    # percent-encoded traversal in the path
    assert httpx.get(f"{base}/v1/documents/%2e%2e/x.md", headers=auth).status_code in (400, 404)
    assert httpx.get(f"{base}/v1/documents/a/%2e%2e/%2e%2e/x.md", headers=auth).status_code == 400
    big = upload("big.md", b"x" * 200_000)
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    # a chunked body (no Content-Length) is cut off at the limit too
    head = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="s.md"\r\n'
        b"Content-Type: text/markdown\r\n\r\n"
    )
    chunks = iter([head] + [b"y" * 50_000] * 10 + [b"\r\n--xyz--\r\n"])
    streamed = httpx.post(
        f"{base}/v1/documents",
        headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=chunks,
    )
    assert streamed.status_code == 413, streamed.text
    assert upload("empty.md", b"").status_code == 400
    assert (
        httpx.get(f"{base}/v1/search", params={"q": "x", "mode": "fuzzy"}, headers=auth).status_code
        == 422
    )
    assert httpx.get(f"{base}/v1/documents/nothing.md", headers=auth).status_code == 404


def test_upload_ingest_state_search_delete(api: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = api
    auth = {"Authorization": f"Bearer {KEY}"}
    up = httpx.post(
        f"{base}/v1/documents",
        headers=auth,
        files={"file": ("lighthouse.md", DOC.encode())},
        data={"prefix": "docs"},
    )
    assert up.status_code == 202, up.text
    body = up.json()
    assert body["storage_key"] == "docs/lighthouse.md" and body["registered"] is False
    pending = httpx.get(f"{base}/v1/documents/docs/lighthouse.md", headers=auth).json()
    assert pending["in_storage"] is True and pending["versions"] == []

    other = tmp_path / "other.md"
    other.write_text("# Tea\n\nGreen tea is steeped at a lower temperature than black tea.\n")
    ingested = docpipe(env, "ingest", str(other), "--wait")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr

    import json

    spaces = json.loads(docpipe(env, "spaces", "--json").stdout)
    assert [(s["dims"], s["active"], s["coverage"], s["documents"]) for s in spaces] == [
        (1536, True, 1.0, 2)
    ]
    refused = docpipe(env, "spaces", "drop", "text-embedding-3-small:1536")
    assert refused.returncode == 1 and "the space search reads" in refused.stderr

    doc = httpx.get(f"{base}/v1/documents/docs/lighthouse.md", headers=auth).json()
    assert doc["state"] == "completed"
    (version,) = doc["versions"]
    assert version["job_id"] == body["job_id"]
    assert [e["event_type"] for e in version["events"]][-1] == "completed"

    params = {"q": "paraffin lamp wick Fresnel lens", "k": 3, "prefix": "docs/"}
    found = httpx.get(f"{base}/v1/search", params=params, headers=auth)
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert results and all(r["storage_key"] == "docs/lighthouse.md" for r in results)
    top = results[0]
    assert top["job_id"] == body["job_id"] and top["content_sha256"] == body["content_sha256"]
    assert top["heading_path"] == ["Lighthouses", "Lamps"]
    assert top["char_start"] is not None and top["char_end"] > top["char_start"]
    # a markdown file has no pages: the keys are there, NULL
    assert top["page_start"] is None and top["page_end"] is None
    # the CLI answers from the same SQL function: identical results
    cli = docpipe(env, "search", params["q"], "-k", "3", "--prefix", "docs/", "--json")
    assert cli.returncode == 0, cli.stderr

    cli_results = json.loads(cli.stdout)["results"]
    assert [(r["chunk_id"], r["score"]) for r in cli_results] == [
        (r["chunk_id"], r["score"]) for r in results
    ]
    text_only = httpx.get(
        f"{base}/v1/search", params={**params, "mode": "text", "prefix": "other"}, headers=auth
    ).json()
    assert {r["storage_key"] for r in text_only["results"]} <= {"other.md"}

    gone = httpx.delete(f"{base}/v1/documents/docs/lighthouse.md", headers=auth)
    assert gone.status_code == 202
    after = httpx.get(f"{base}/v1/documents/docs/lighthouse.md", headers=auth).json()
    assert after["in_storage"] is False
    assert httpx.delete(f"{base}/v1/documents/docs/lighthouse.md", headers=auth).status_code == 404


def test_client_mistakes_get_4xx_never_5xx(api: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """NUL and other control characters in query parameters, keys that resolve outside
    storage through a symlink, names the file system refuses: each a 4xx with the reason,
    no traceback in the answer; the server stays up and answers the next request."""
    base, env = api
    auth = {"Authorization": f"Bearer {KEY}"}
    # control characters in query parameters: 422 naming the parameter, on every route
    for params in (
        {"q": "light\x00house"},
        {"q": "lamp", "prefix": "docs\x00"},
        {"q": "bell\x07"},
        {"q": "x", "mode": "text\x1b"},
        {"q": "x", "media_type": "text/markdown\x7f"},
    ):
        got = httpx.get(f"{base}/v1/search", params=params, headers=auth, timeout=30)
        assert got.status_code == 422, (params, got.status_code, got.text)
        assert "control character" in got.json()["detail"]
    got = httpx.get(f"{base}/v1/documents/a.md", params={"x": "\x00"}, headers=auth)
    assert got.status_code == 422, got.text
    # a tab or a line break in a pasted query is not a mistake
    fine = httpx.get(f"{base}/v1/search", params={"q": "lamp\tlens\n"}, headers=auth, timeout=30)
    assert fine.status_code == 200, fine.text
    # unauthenticated requests still learn nothing but 401
    assert httpx.get(f"{base}/v1/search", params={"q": "\x00"}).status_code == 401

    # a symlink inside storage pointing outside it: refused on every route, nothing touched
    storage = Path(env["DOCPIPE_HOME"]) / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# not for the API\n")
    (storage / "linked").symlink_to(outside)
    (storage / "file-link.md").symlink_to(outside / "secret.md")
    for key in ("linked/secret.md", "file-link.md", "linked/new.md"):
        for method in ("GET", "DELETE"):
            got = httpx.request(method, f"{base}/v1/documents/{key}", headers=auth)
            assert got.status_code in (400, 404), (method, key, got.status_code, got.text)
            assert "Traceback" not in got.text
        up = httpx.post(
            f"{base}/v1/documents",
            headers=auth,
            files={"file": ("f.md", b"# x\n")},
            data={"key": key},
        )
        assert up.status_code == 400, (key, up.status_code, up.text)
        assert "outside the storage folder" in up.json()["detail"]
    assert [p.name for p in outside.iterdir()] == ["secret.md"]
    assert (outside / "secret.md").read_text() == "# not for the API\n"

    # a name the file system refuses: 400 with the reason, on upload, GET and DELETE
    long_name = "n" * 300 + ".md"
    up = httpx.post(
        f"{base}/v1/documents",
        headers=auth,
        files={"file": ("f.md", b"# x\n")},
        data={"key": long_name},
    )
    assert up.status_code == 400, up.text
    assert "refuses the name" in up.json()["detail"], up.text
    assert httpx.get(f"{base}/v1/documents/{long_name}", headers=auth).status_code == 404
    assert httpx.delete(f"{base}/v1/documents/{long_name}", headers=auth).status_code == 404
    # a file where the key needs a folder
    (storage / "plain.md").write_text("# plain\n")
    clash = httpx.post(
        f"{base}/v1/documents",
        headers=auth,
        files={"file": ("f.md", b"# x\n")},
        data={"key": "plain.md/inner.md"},
    )
    assert clash.status_code == 400 and "collide" in clash.json()["detail"], clash.text

    # and the server is still there
    assert httpx.get(f"{base}/v1/documents/plain.md", headers=auth).status_code == 200


def test_an_upload_whose_launch_fails_is_registered_and_said_so(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The push path with the webserver down (DOCPIPE_DAGSTER_URL at a closed port): the
    upload is still 202 and registered in a batch of its own, the API's log says in words
    why no run was launched, and the same bytes again register and launch nothing."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**cli_env, "DOCPIPE_API_KEY": KEY, "DOCPIPE_DAGSTER_URL": dead}
    log = tmp_path / "api.log"
    auth = {"Authorization": f"Bearer {KEY}"}
    with running_api(env, log) as base:

        def upload(name: str, data: bytes) -> dict:
            up = httpx.post(
                f"{base}/v1/documents", headers=auth, files={"file": (name, data)}, timeout=60
            )
            assert up.status_code == 202, up.text
            return up.json()

        first = upload("lighthouse.md", DOC.encode())
        assert (first["registered"], first["state"]) == (True, "uploaded")
        assert (first["launch"], first["run_id"]) == ("deferred", None)
        doc = httpx.get(f"{base}/v1/documents/lighthouse.md", headers=auth).json()
        (version,) = doc["versions"]
        assert version["batch_key"].startswith("upload-")
        assert [e["event_type"] for e in version["events"]] == ["registered"]

        again = upload("lighthouse.md", DOC.encode())
        assert (again["launch"], again["run_id"], again["job_id"]) == (
            "not needed",
            None,
            first["job_id"],
        )
        refused = upload("report.pdf", b"plain text wearing a .pdf name\n")
        assert (refused["state"], refused["launch"]) == ("failed", "not needed")
    said = log.read_text()
    assert "upload lighthouse.md is registered" in said
    assert f"cannot reach the Dagster webserver at {dead}" in said
    assert "retry_sensor launches the batch" in said
    assert said.count("could not be launched") == 1
