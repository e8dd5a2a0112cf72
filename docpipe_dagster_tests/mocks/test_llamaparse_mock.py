"""The LlamaParse mock: real content extraction, the v1 job contract, faults and webhooks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from docpipe_dagster_mocks.llamaparse.app import SIGNATURE_HEADER, job_id_for, verify_signature
from docpipe_dagster_mocks.llamaparse.extract import ExtractionError, extract
from docpipe_dagster_mocks.llamaparse.testdata import (
    build_blank_pdf,
    build_encrypted_pdf,
    build_text_pdf,
)
from docpipe_dagster_tests.support import MockServer

WEBHOOK_SECRET = "test-webhook-secret"  # what the llamaparse_mock fixture was started with


def _code(filename: str, data: bytes) -> str:
    with pytest.raises(ExtractionError) as info:
        extract(filename, data)
    return info.value.code


# --- extraction ------------------------------------------------------------------------------


def test_text_decodings() -> None:
    assert extract("a.txt", "héllo wörld".encode())[0].text == "héllo wörld"
    assert extract("a.txt", "\ufeffBOM first".encode())[0].text == "BOM first"
    assert extract("a.txt", "utf-16 ✓".encode("utf-16"))[0].text == "utf-16 ✓"
    assert extract("a.txt", "caf\xe9 latin".encode("latin-1"))[0].text == "café latin"
    assert extract("a.txt", b"one\r\ntwo\rthree")[0].text == "one\ntwo\nthree"
    # A form feed is a page break in plain text.
    assert [p.text for p in extract("a.txt", b"page 1\fpage 2")] == ["page 1", "page 2"]


def test_binary_noise_is_unreadable_not_latin1() -> None:
    noise = bytes(range(256)) * 20
    assert _code("a.txt", noise) == "UNREADABLE_FILE"
    assert _code("notes.md", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" * 50) == "UNREADABLE_FILE"


def test_markdown_csv_json() -> None:
    md = "# Title\n\n- a\n- b\n"
    page = extract("doc.md", md.encode())[0]
    assert page.md == md and page.text == md
    csv_page = extract("t.csv", b'name,qty\nwidget,"3,5"\n')[0]
    assert csv_page.text == 'name,qty\nwidget,"3,5"\n'
    assert csv_page.md.splitlines() == ["| name | qty |", "|---|---|", "| widget | 3,5 |"]
    data = json.dumps({"k": [1, 2]}).encode()
    assert extract("d.json", data)[0].text == data.decode()


def test_html_to_markdown() -> None:
    html = b"""<!doctype html><html><head><title>ignored</title>
    <style>body{color:red}</style><script>var secret = 1;</script></head><body>
    <h1>Main &amp; Title</h1><p>First <a href="https://x.example/">linked text</a> here.</p>
    <h2>Section</h2><ul><li>one</li><li>two</li></ul><ol><li>first</li></ol>
    <h6>Tiny</h6><p>caf&eacute;</p><noscript>no</noscript></body></html>"""
    page = extract("page.html", html)[0]
    assert page.md.startswith("# Main & Title\n\nFirst linked text here.\n\n## Section")
    assert "- one\n- two" in page.md and "1. first" in page.md
    assert "###### Tiny" in page.md and "café" in page.md
    for dropped in ("ignored", "secret", "color", "https://x.example", "noscript", "no\n"):
        assert dropped not in page.md
    assert "Main & Title" in page.text and "#" not in page.text
    assert extract("page.htm", b"<p>x</p>")[0].md == "x"


def test_pdf_text_per_page() -> None:
    pages = extract("r.pdf", build_text_pdf(["Hello (world)\nline two", "Second page"]))
    assert [p.text for p in pages] == ["Hello (world)\nline two", "Second page"]


def test_pdf_blank_encrypted_corrupt() -> None:
    assert [p.text for p in extract("b.pdf", build_blank_pdf(3))] == ["", "", ""]
    assert _code("e.pdf", build_encrypted_pdf(["secret"])) == "PDF_IS_PROTECTED"
    # Only an owner password: opens with the empty user password, as real viewers do.
    owner_only = build_encrypted_pdf(["readable"], user_password="")
    assert extract("o.pdf", owner_only)[0].text == "readable"
    good = build_text_pdf(["whole"])
    assert _code("t.pdf", good[: len(good) // 2]) == "PDF_CORRUPTED"
    assert _code("n.pdf", b"this is not a pdf at all") == "PDF_CORRUPTED"


def test_unsupported_and_empty() -> None:
    for name in ("tool.exe", "archive.zip", "noextension"):
        assert _code(name, b"data") == "UNSUPPORTED_FILE_TYPE"
    with pytest.raises(ExtractionError, match="not supported"):
        extract("x.exe", b"MZ")
    assert _code("empty.txt", b"") == "NO_DATA_FOUND_IN_FILE"
    assert _code("empty.pdf", b"") == "NO_DATA_FOUND_IN_FILE"


def test_job_id_is_deterministic() -> None:
    a = job_id_for(b"same", "a.txt", {"language": "en"})
    assert a == job_id_for(b"same", "other-name.txt", {"language": "en"})
    assert a == job_id_for(b"same", "a.txt", {"language": "en", "webhook_url": "http://x"})
    assert a != job_id_for(b"same", "a.md", {"language": "en"})
    assert a != job_id_for(b"same", "a.txt", {"language": "fr"})
    assert a != job_id_for(b"different", "a.txt", {"language": "en"})


def test_signature_helper() -> None:
    from docpipe_dagster_mocks.llamaparse.webhook import sign

    header = sign("s3cret", b'{"a": 1}')
    assert header.startswith("sha256=") and verify_signature("s3cret", b'{"a": 1}', header)
    assert not verify_signature("s3cret", b'{"a": 2}', header)
    assert not verify_signature("other", b'{"a": 1}', header)
    assert not verify_signature("s3cret", b'{"a": 1}', None)
    assert not verify_signature("s3cret", b'{"a": 1}', header.replace("sha256=", "md5="))


# --- HTTP contract ---------------------------------------------------------------------------


@pytest.fixture
def api(llamaparse_mock: MockServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {llamaparse_mock.api_key}"}
    with httpx.Client(base_url=llamaparse_mock.base_url, headers=headers, timeout=10) as client:
        yield client


def _upload(api: httpx.Client, name: str, data: bytes, **form: str) -> dict:
    resp = api.post("/api/parsing/upload", files={"file": (name, data)}, data=form)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait(api: httpx.Client, job_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/api/parsing/job/{job_id}").json()
        if body["status"] != "PENDING" or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_job_lifecycle_and_results(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    api.post("/_mock/pending", json={"pending_seconds": 0.3})
    pdf = build_text_pdf(["Alpha page", "Beta page"])
    created = _upload(api, "report.pdf", pdf, language="en", from_python_package="True")
    assert created["status"] == "PENDING" and created["id"]
    job_id = created["id"]
    assert api.get(f"/api/parsing/job/{job_id}").json() == {"id": job_id, "status": "PENDING"}
    early = api.get(f"/api/parsing/job/{job_id}/result/markdown")
    assert early.status_code == 404 and "not found" in early.json()["detail"]
    assert _wait(api, job_id) == {"id": job_id, "status": "SUCCESS"}

    text = api.get(f"/api/parsing/job/{job_id}/result/text").json()
    assert text["text"] == "Alpha page\n---\nBeta page"
    md = api.get(f"/api/parsing/job/{job_id}/result/markdown").json()
    assert md["markdown"] == "Alpha page\n---\nBeta page"
    js = api.get(f"/api/parsing/job/{job_id}/result/json").json()
    assert [(p["page"], p["text"], p["md"], p["status"]) for p in js["pages"]] == [
        (1, "Alpha page", "Alpha page", "OK"),
        (2, "Beta page", "Beta page", "OK"),
    ]
    meta = js["job_metadata"]
    assert meta["job_pages"] == 2 and meta["job_is_cache_hit"] is False
    assert {"credits_used", "job_auto_mode_triggered_pages"} <= set(meta)


def test_same_upload_same_job_and_cache_hit(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    first = _upload(api, "a.txt", b"cache me")["id"]
    assert _wait(api, first)["status"] == "SUCCESS"
    again = _upload(api, "renamed.txt", b"cache me")
    assert again == {"id": first, "status": "SUCCESS"}
    meta = api.get(f"/api/parsing/job/{first}/result/json").json()["job_metadata"]
    assert meta["job_is_cache_hit"] is True
    assert httpx.get(f"{llamaparse_mock.base_url}/_mock/jobs").json()["parses"] == 1
    other = _upload(api, "a.txt", b"cache me", language="de")["id"]
    assert other != first


def test_error_jobs_carry_code_and_message(api: httpx.Client) -> None:
    cases = {
        ("setup.exe", b"MZ..."): "UNSUPPORTED_FILE_TYPE",
        ("locked.pdf", build_encrypted_pdf(["x"])): "PDF_IS_PROTECTED",
        ("empty.txt", b""): "NO_DATA_FOUND_IN_FILE",
    }
    for (name, data), code in cases.items():
        body = _wait(api, _upload(api, name, data)["id"])
        assert body["status"] == "ERROR" and body["error_code"] == code
        assert body["error_message"]


def test_unknown_job_and_auth(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    assert api.get("/api/parsing/job/no-such-job").status_code == 404
    assert api.get("/api/parsing/job/no-such-job/result/json").status_code == 404
    anonymous = httpx.get(f"{llamaparse_mock.base_url}/api/parsing/job/x")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Invalid authentication token"}
    missing_file = api.post("/api/parsing/upload", data={"language": "en"})
    assert missing_file.status_code == 400


def test_v1_prefix_and_extensions(api: httpx.Client) -> None:
    resp = api.post("/api/v1/parsing/upload", files={"file": ("n.md", b"# v1")})
    job_id = resp.json()["id"]
    assert _wait(api, job_id)["status"] == "SUCCESS"
    assert api.get(f"/api/v1/parsing/job/{job_id}/result/markdown").json()["markdown"] == "# v1"
    exts = api.get("/api/parsing/supported_file_extensions").json()
    # The real service's list (the SDK's): .pdf, .html, .csv, .md, office..., not .txt/.json.
    assert {".pdf", ".html", ".csv", ".md", ".docx"} <= set(exts)
    assert not {".txt", ".json"} & set(exts)


def test_parse_stuck_then_resubmit(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_stuck", "count": 1})
    job_id = _upload(api, "s.txt", b"stuck job")["id"]
    time.sleep(0.2)
    assert api.get(f"/api/parsing/job/{job_id}").json()["status"] == "PENDING"
    # Resubmitting a stuck job runs it again (the fault was used up).
    assert _upload(api, "s.txt", b"stuck job")["id"] == job_id
    assert _wait(api, job_id)["status"] == "SUCCESS"


def test_parse_error_then_resubmit(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_error", "count": 1})
    job_id = _upload(api, "e.txt", b"flaky parse")["id"]
    body = _wait(api, job_id)
    assert body["status"] == "ERROR" and body["error_code"] == "INTERNAL_ERROR"
    assert _upload(api, "e.txt", b"flaky parse")["id"] == job_id
    assert _wait(api, job_id)["status"] == "SUCCESS"
    text = api.get(f"/api/parsing/job/{job_id}/result/text").json()
    assert text["text"] == "flaky parse"
    assert text["job_metadata"]["job_is_cache_hit"] is False


def test_generic_fault_reaches_routes(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 2})
    limited = api.post("/api/parsing/upload", files={"file": ("a.txt", b"x")})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert api.post("/api/parsing/upload", files={"file": ("a.txt", b"x")}).status_code == 200


def test_health_is_fast(llamaparse_mock: MockServer) -> None:
    with httpx.Client() as client:
        client.get(f"{llamaparse_mock.base_url}/health")  # warm the connection
        start = time.perf_counter()
        assert client.get(f"{llamaparse_mock.base_url}/health").status_code == 200
        assert (time.perf_counter() - start) * 1000 < 100


# --- webhooks --------------------------------------------------------------------------------


class _Receiver:
    """A tiny HTTP server on a free loopback port that records POSTs."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()
                outer.event.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_webhook_delivered_and_signed(
    api: httpx.Client, llamaparse_mock: MockServer, receiver: _Receiver
) -> None:
    api.post("/_mock/pending", json={"pending_seconds": 0.2})
    job_id = _upload(api, "hook.md", b"# Hooked", webhook_url=receiver.url)["id"]
    assert receiver.event.wait(5), "webhook not delivered"
    headers, body = receiver.requests[0]
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["status"] == "SUCCESS"
    assert payload["markdown"] == "# Hooked" and payload["job_metadata"]["job_pages"] == 1
    signature = headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(WEBHOOK_SECRET, body, signature)
    tampered = body.replace(b"Hooked", b"Hacked")
    assert not verify_signature(WEBHOOK_SECRET, tampered, signature)
    log = httpx.get(f"{llamaparse_mock.base_url}/_mock/webhooks").json()
    assert log[0]["job_id"] == job_id and log[0]["status_code"] == 204


def test_webhook_reports_failures(api: httpx.Client, receiver: _Receiver) -> None:
    _upload(api, "bad.exe", b"MZ", webhook_url=receiver.url)
    assert receiver.event.wait(5)
    payload = json.loads(receiver.requests[0][1])
    assert payload["status"] == "ERROR" and payload["error_code"] == "UNSUPPORTED_FILE_TYPE"


def test_webhook_must_stay_on_this_machine(api: httpx.Client) -> None:
    resp = api.post(
        "/api/parsing/upload",
        files={"file": ("a.txt", b"x")},
        data={"webhook_url": "http://203.0.113.5/hook"},
    )
    assert resp.status_code == 400 and "localhost" in resp.json()["detail"]


def test_old_jobs_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process (TestClient): only the in-memory cap is under test here.
    from fastapi.testclient import TestClient

    import docpipe_dagster_mocks.llamaparse.app as app_module
    from docpipe_dagster_mocks._common import MockSettings

    monkeypatch.setattr(app_module, "MAX_JOBS", 3)
    with TestClient(app_module.create_app(MockSettings(api_key=None))) as client:
        ids = []
        for i in range(5):
            files = {"file": (f"{i}.txt", f"doc {i}".encode())}
            ids.append(client.post("/api/parsing/upload", files=files).json()["id"])
            assert _wait(client, ids[-1])["status"] == "SUCCESS"  # only finished jobs go
        assert [client.get(f"/api/parsing/job/{i}").status_code for i in ids] == [
            404, 404, 200, 200, 200
        ]  # fmt: skip
