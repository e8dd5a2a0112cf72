"""The LlamaParse mock's v2 routes over real HTTP: job shapes, expand, list, cancel, delete,
files, FastAPI-style errors, faults and signed webhooks. (The official SDK against the same
routes: docpipe_dagster_tests/clients/test_llama_cloud_sdk.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from docpipe_dagster.clients.llamaparse import verify_webhook_signature
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_mocks.llamaparse.v2 import LC_SIGNATURE_HEADER, PROJECT_ID, v2_job_id
from docpipe_dagster_mocks.llamaparse.webhook import sign
from docpipe_dagster_tests.mocks.test_llamaparse_mock import WEBHOOK_SECRET, _Receiver
from docpipe_dagster_tests.support import MockServer

JOB_KEYS = {
    "id",
    "project_id",
    "status",
    "created_at",
    "updated_at",
    "error_message",
    "name",
    "tier",
}
CONFIG = {"tier": "fast", "version": "latest"}


@pytest.fixture
def api(llamaparse_mock: MockServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {llamaparse_mock.api_key}"}
    with httpx.Client(base_url=llamaparse_mock.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def upload(api: httpx.Client, name: str, data: bytes, **config: object) -> httpx.Response:
    configuration = json.dumps({**CONFIG, **config})
    return api.post(
        "/api/v2/parse/upload", files={"file": (name, data)}, data={"configuration": configuration}
    )


def wait(api: httpx.Client, job_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/v2/parse/{job_id}").json()["job"]
        if job["status"] not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_upload_poll_and_expand(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    api.post("/_mock/pending", json={"pending_seconds": 0.3})
    pdf = build_text_pdf(["Owls hunt at night.", "Larks sing at dawn."])
    created = upload(api, "birds.pdf", pdf)
    assert created.status_code == 200, created.text
    job = created.json()
    assert set(job) >= JOB_KEYS and job["status"] == "RUNNING" and job["tier"] == "fast"
    assert job["project_id"] == PROJECT_ID and job["id"] == v2_job_id(pdf, "birds.pdf", CONFIG)
    # Before completion, expand adds nothing; the job is wrapped with its project.
    early = api.get(f"/api/v2/parse/{job['id']}", params=[("expand", "markdown")]).json()
    assert set(early) == {"job"} and early["job"]["project_id"] == PROJECT_ID
    assert wait(api, job["id"])["status"] == "COMPLETED"
    expand = [("expand", k) for k in ("text", "markdown", "text_full", "markdown_full", "items")]
    body = api.get(f"/api/v2/parse/{job['id']}", params=expand).json()
    assert body["markdown"]["pages"] == [
        {"page_number": 1, "markdown": "Owls hunt at night.", "success": True},
        {"page_number": 2, "markdown": "Larks sing at dawn.", "success": True},
    ]
    assert [p["text"] for p in body["text"]["pages"]] == [
        "Owls hunt at night.",
        "Larks sing at dawn.",
    ]
    assert body["markdown_full"] == "Owls hunt at night.\n\nLarks sing at dawn."
    assert body["text_full"] == body["markdown_full"]
    assert len(body["items"]["pages"]) == 2
    only_text = api.get(f"/api/v2/parse/{job['id']}", params={"expand": "text"}).json()
    assert set(only_text) == {"job", "text"}
    other = api.get(f"/api/v2/parse/{job['id']}", params=[("expand", "usage")])
    assert other.status_code == 200 and set(other.json()) == {"job"}  # valid, not mocked
    unknown = api.get(f"/api/v2/parse/{job['id']}", params=[("expand", "everything")])
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "expand"]
    # Same bytes and configuration again: the finished job, COMPLETED at once.
    again = upload(api, "birds.pdf", pdf).json()
    assert (again["id"], again["status"]) == (job["id"], "COMPLETED")
    # Another tier is another job.
    assert upload(api, "birds.pdf", pdf, tier="agentic").json()["id"] != job["id"]
    counters = httpx.get(f"{llamaparse_mock.base_url}/_mock/jobs").json()
    assert (counters["v2_uploads"], counters["v1_uploads"], counters["cache_hits"]) == (3, 0, 1)


def test_failed_job_and_failed_pages(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    failed = wait(api, upload(api, "broken.pdf", b"%PDF-1.4 truncated").json()["id"])
    assert failed["status"] == "FAILED" and failed["error_code"] == "PDF_CORRUPTED"
    assert "corrupted" in failed["error_message"]
    llamaparse_mock.set_faults({"kind": "page_error", "count": 1})
    job = upload(api, "two.pdf", build_text_pdf(["One", "Two"])).json()
    assert wait(api, job["id"])["status"] == "COMPLETED"
    pages = api.get(f"/api/v2/parse/{job['id']}", params={"expand": "markdown"}).json()
    assert pages["markdown"]["pages"][0] == {
        "page_number": 1,
        "error": "Page could not be parsed.",
        "success": False,
    }
    assert pages["markdown"]["pages"][1]["success"] is True


def test_list_paginates(api: httpx.Client) -> None:
    ids = {upload(api, f"n{i}.md", f"# Note {i}".encode()).json()["id"] for i in range(5)}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, object] = {"page_size": 2}
        if token:
            params["page_token"] = token
        body = api.get("/api/v2/parse", params=params).json()
        assert set(body) == {"items", "next_page_token"} and len(body["items"]) <= 2
        seen += [j["id"] for j in body["items"]]
        pages += 1
        token = body["next_page_token"]
        if not token:
            break
    assert set(seen) == ids and len(seen) == 5 and pages == 3
    assert api.get("/api/v2/parse", params={"page_token": "%%%"}).status_code == 422


def test_cancel_and_delete(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_stuck", "count": 1})
    job = upload(api, "stuck.md", b"# Stuck").json()
    assert wait(api, job["id"], timeout=0.2)["status"] == "PENDING"
    conflict = api.delete(f"/api/v2/parse/{job['id']}")
    assert conflict.status_code == 409 and "cancel it first" in conflict.json()["detail"]
    cancelled = api.post(f"/api/v2/parse/{job['id']}/cancel").json()
    assert set(cancelled) >= JOB_KEYS and cancelled["status"] == "CANCELLED"
    assert api.get(f"/api/v2/parse/{job['id']}").json()["job"]["status"] == "CANCELLED"
    deleted = api.delete(f"/api/v2/parse/{job['id']}")
    assert deleted.json() == {"id": job["id"], "project_id": PROJECT_ID}
    gone = api.get(f"/api/v2/parse/{job['id']}")
    assert gone.status_code == 404 and gone.json() == {"detail": f"Job {job['id']} not found"}


def test_files_then_parse_by_file_id(api: httpx.Client) -> None:
    created = api.post(
        "/api/v1/beta/files",
        files={"file": ("memo.md", b"# Memo\n\nBring boots.")},
        data={"purpose": "parse"},
    )
    assert created.status_code == 200, created.text
    file = created.json()
    assert {"id", "name", "project_id"} <= set(file) and file["name"] == "memo.md"
    job = api.post("/api/v2/parse", json={**CONFIG, "file_id": file["id"]}).json()
    assert wait(api, job["id"])["status"] == "COMPLETED"
    body = api.get(f"/api/v2/parse/{job['id']}", params={"expand": "markdown"}).json()
    assert body["markdown"]["pages"][0]["markdown"] == "# Memo\n\nBring boots."
    missing = api.post("/api/v2/parse", json={**CONFIG, "file_id": "nope"})
    assert missing.status_code == 404


def test_fastapi_style_errors(api: httpx.Client, llamaparse_mock: MockServer) -> None:
    bad_tier = upload(api, "a.md", b"# A", tier="premium")
    assert bad_tier.status_code == 422
    (detail,) = bad_tier.json()["detail"]
    assert {"type", "loc", "msg", "input"} <= set(detail)
    assert detail["loc"] == ["configuration", "tier"] and detail["input"] == "premium"
    no_file = api.post("/api/v2/parse/upload", data={"configuration": json.dumps(CONFIG)})
    assert no_file.status_code == 422 and no_file.json()["detail"][0]["loc"] == ["body", "file"]
    not_json = api.post(
        "/api/v2/parse/upload", files={"file": ("a.md", b"x")}, data={"configuration": "{"}
    )
    assert not_json.status_code == 422
    assert upload(api, "a.md", b"# A", version="newest").status_code == 422
    wrong_key = httpx.get(
        f"{llamaparse_mock.base_url}/api/v2/parse", headers={"Authorization": "Bearer wrong"}
    )
    assert wrong_key.status_code == 401 and wrong_key.json() == {
        "detail": "Invalid authentication token"
    }
    llamaparse_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 2})
    limited = upload(api, "a.md", b"# A")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert "Rate limit" in limited.json()["detail"]
    llamaparse_mock.set_faults({"kind": "parse_error", "count": 1})
    failed = wait(api, upload(api, "b.md", b"# B").json()["id"])
    assert (failed["status"], failed["error_code"]) == ("FAILED", "INTERNAL_ERROR")


def test_webhooks_signed_with_lc_signature(api: httpx.Client, receiver: _Receiver) -> None:
    hooks = [
        {
            "webhook_url": receiver.url,
            "webhook_events": ["parse.success"],
            "webhook_headers": {"X-Tenant": "t1"},
            "webhook_signing_secret": "hook-secret",
        }
    ]
    job = upload(api, "hook.md", b"# Hooked", webhook_configurations=hooks).json()
    assert receiver.event.wait(5), "webhook not delivered"
    headers, body = receiver.requests[0]
    payload = json.loads(body)
    assert payload["event_type"] == "parse.success"
    assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "COMPLETED"
    assert headers["x-tenant"] == "t1"
    assert headers[LC_SIGNATURE_HEADER.lower()] == sign("hook-secret", body)
    # The product's verifier accepts it, and nothing tampered or signed otherwise.
    signature = headers[LC_SIGNATURE_HEADER.lower()]
    assert verify_webhook_signature("hook-secret", body, signature)
    assert not verify_webhook_signature("hook-secret", body + b" ", signature)
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, signature)
    # Without a signing secret of its own the mock's secret signs; an event not asked for
    # is not sent.
    receiver.event.clear()
    only_errors = [{"webhook_url": receiver.url, "webhook_events": ["parse.error"]}]
    upload(api, "quiet.md", b"# Quiet", webhook_configurations=only_errors)
    failing = [{"webhook_url": receiver.url}]
    upload(api, "bad.pdf", b"%PDF-1.4 truncated", webhook_configurations=failing)
    assert receiver.event.wait(5)
    time.sleep(0.3)
    events = [json.loads(b)["event_type"] for _h, b in receiver.requests[1:]]
    assert events == ["parse.error"]
    headers, body = receiver.requests[1]
    assert headers[LC_SIGNATURE_HEADER.lower()] == sign(WEBHOOK_SECRET, body)
    outside = upload(
        api, "x.md", b"# X", webhook_configurations=[{"webhook_url": "http://example.com/h"}]
    )
    assert outside.status_code == 422 and "this machine" in outside.json()["detail"][0]["msg"]
