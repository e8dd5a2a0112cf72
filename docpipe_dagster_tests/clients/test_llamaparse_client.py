"""LlamaParseClient (v1, legacy) against the LlamaParse mock (in-process; a few over real
HTTP, see conftest.py): parses, every fault, errors; and the real-service test (v2)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from docpipe_dagster.clients.llamaparse import (
    LlamaParseClient,
    ParsedDocument,
    ParseError,
    verify_webhook_signature,
)
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster_mocks.llamaparse.testdata import build_encrypted_pdf, build_text_pdf
from docpipe_dagster_tests.support import MockServer

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


def _client(mock: MockServer, **kw: object) -> LlamaParseClient:
    options: dict = {
        "poll_interval_s": 0.02,
        "max_poll_interval_s": 0.1,
        "deadline_s": 5.0,
        "timeout_s": 5.0,
        "retry_policy": FAST_RETRY,
        "transport": getattr(mock, "transport", None),  # in-process unless over the wire
    }
    options.update(kw)
    return LlamaParseClient(mock.base_url, mock.api_key or "", **options)


def parse(mock: MockServer, filename: str, content: bytes, **kw: object) -> ParsedDocument:
    async def run() -> ParsedDocument:
        async with _client(mock, **kw) as client:
            return await client.parse(filename, content)

    return asyncio.run(run())


def parse_error(mock: MockServer, filename: str, content: bytes, **kw: object) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(mock, filename, content, **kw)
    return info.value


@pytest.mark.over_the_wire
def test_parses_real_content(llamaparse_wire: MockServer) -> None:
    doc = parse(llamaparse_wire, "reports/q1.pdf", build_text_pdf(["Revenue grew", "Costs fell"]))
    assert doc.pages == ["Revenue grew", "Costs fell"] and doc.page_count == 2
    assert doc.markdown == "Revenue grew\n---\nCosts fell"
    assert doc.job_id and not doc.cache_hit and doc.polls >= 1 and doc.seconds > 0
    html = parse(llamaparse_wire, "p.html", b"<h2>Heading</h2><p>Body <b>text</b></p>")
    assert html.markdown == "## Heading\n\nBody text"
    text = parse(llamaparse_wire, "p.html", b"<h2>Heading</h2><p>Body</p>", result_type="text")
    assert text.pages == ["Heading\n\nBody"]


def test_second_parse_is_a_cache_hit(llamaparse_mock: MockServer) -> None:
    first = parse(llamaparse_mock, "a.txt", b"cached words")
    second = parse(llamaparse_mock, "a.txt", b"cached words")
    assert second.job_id == first.job_id and second.cache_hit and not first.cache_hit
    assert second.markdown == "cached words"


def test_waits_while_pending(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.http.post("/_mock/pending", json={"pending_seconds": 0.3})
    doc = parse(llamaparse_mock, "slow.md", b"# slow")
    assert doc.markdown == "# slow" and doc.polls >= 3 and doc.seconds >= 0.3


@pytest.mark.parametrize("kind", ["http_500", "http_503", "malformed_json"])
def test_transient_faults_are_retried(llamaparse_mock: MockServer, kind: str) -> None:
    llamaparse_mock.set_faults({"kind": kind, "count": 2})
    doc = parse(llamaparse_mock, "t.txt", f"survives {kind}".encode())
    assert doc.markdown == f"survives {kind}"
    assert llamaparse_mock.stats()["faults"] == {kind: 2}


@pytest.mark.parametrize("path", ["/api/parsing/upload", "/api/parsing/job"])
def test_faults_at_each_step(llamaparse_mock: MockServer, path: str) -> None:
    llamaparse_mock.set_faults(
        [{"kind": "http_503", "count": 1, "path": path}, {"kind": "malformed_json", "count": 1}]
    )
    assert parse(llamaparse_mock, "s.txt", b"step faults").markdown == "step faults"


def test_retry_after_is_honoured(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.4})
    start = time.monotonic()
    doc = parse(llamaparse_mock, "r.txt", b"rate limited once")
    assert doc.markdown == "rate limited once"
    assert time.monotonic() - start >= 0.35  # the server's delay, not the 0.01 s backoff


@pytest.mark.over_the_wire  # a socket timeout needs a socket
def test_hang_is_cut_by_the_timeout_and_retried(llamaparse_wire: MockServer) -> None:
    llamaparse_wire.set_faults({"kind": "hang", "count": 1, "hang_seconds": 10})
    start = time.monotonic()
    doc = parse(llamaparse_wire, "h.txt", b"after a hang", timeout_s=0.3)
    assert doc.markdown == "after a hang" and time.monotonic() - start < 5


def test_persistent_failure_is_a_clear_error(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "http_503"})  # unlimited
    err = parse_error(llamaparse_mock, "p.txt", b"never")
    assert err.kind == "http" and err.retryable and err.status == 503
    assert "upload" in err.reason and "503" in err.reason
    # core.retry.Retrier's words: the one retry path every client shares.
    assert err.reason.endswith(f"(gave up after {FAST_RETRY.max_attempts} attempts)")
    assert llamaparse_mock.stats()["faults"]["http_503"] == FAST_RETRY.max_attempts


@pytest.mark.over_the_wire
def test_persistent_hang_is_a_timeout(llamaparse_wire: MockServer) -> None:
    llamaparse_wire.set_faults({"kind": "hang", "hang_seconds": 10})
    err = parse_error(llamaparse_wire, "h.txt", b"hangs", timeout_s=0.2)
    assert err.kind == "timeout" and err.retryable


def test_stuck_job_hits_the_deadline(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_stuck", "count": 1})
    start = time.monotonic()
    err = parse_error(llamaparse_mock, "s.txt", b"stuck forever", deadline_s=0.4)
    assert err.kind == "stuck" and err.retryable and err.job_id
    assert err.reason == f"parse job {err.job_id} still PENDING after 0.4 s"
    assert time.monotonic() - start < 2


def test_internal_error_is_retryable(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_error", "count": 1})
    err = parse_error(llamaparse_mock, "e.txt", b"server trouble")
    assert (err.kind, err.code, err.retryable) == ("error", "INTERNAL_ERROR", True)
    # Retrying later succeeds (the mock re-runs a failed job on resubmission).
    assert parse(llamaparse_mock, "e.txt", b"server trouble").markdown == "server trouble"


@pytest.mark.parametrize(
    ("name", "content", "kind", "code"),
    [
        ("virus.exe", b"MZ\x90\x00", "unsupported", "UNSUPPORTED_FILE_TYPE"),
        ("locked.pdf", build_encrypted_pdf(["secret"]), "error", "PDF_IS_PROTECTED"),
        ("broken.pdf", build_text_pdf(["cut"])[:120], "error", "PDF_CORRUPTED"),
        ("empty.txt", b"", "error", "NO_DATA_FOUND_IN_FILE"),
        ("noise.txt", bytes(range(256)) * 8, "error", "UNREADABLE_FILE"),
    ],
)
def test_permanent_failures_are_not_retryable(
    llamaparse_mock: MockServer, name: str, content: bytes, kind: str, code: str
) -> None:
    err = parse_error(llamaparse_mock, name, content)
    assert (err.kind, err.code, err.retryable) == (kind, code, False)
    assert code in err.reason and err.job_id in err.reason


def test_bad_key_fails_fast_and_never_leaks(llamaparse_mock: MockServer) -> None:
    secret = "sk-this-must-never-appear-anywhere"
    client = LlamaParseClient(
        llamaparse_mock.base_url,
        secret,
        retry_policy=FAST_RETRY,
        transport=llamaparse_mock.transport,
    )

    async def run() -> None:
        async with client:
            await client.parse("a.txt", b"x")

    with pytest.raises(ParseError) as info:
        asyncio.run(run())
    err = info.value
    assert err.kind == "http" and err.status == 401 and not err.retryable
    assert llamaparse_mock.stats()["by_status"] == {"401": 1}  # not retried
    for text in (str(err), repr(err), err.reason, repr(client)):
        assert secret not in text


@pytest.mark.over_the_wire
def test_bounded_concurrency_one_client(llamaparse_wire: MockServer) -> None:
    in_flight = 0
    peak = 0
    connections: set[int] = set()

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, peak
            connections.add(id(self))
            if request.url.path.endswith("/upload"):
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    await asyncio.sleep(0.05)  # widen the window so overlap would show
                    return await super().handle_async_request(request)
                finally:
                    in_flight -= 1
            return await super().handle_async_request(request)

    async def run() -> list[ParsedDocument]:
        async with _client(llamaparse_wire, max_concurrency=2, transport=Counting()) as client:
            docs = [client.parse(f"d{i}.txt", f"document {i}".encode()) for i in range(8)]
            return await asyncio.gather(*docs)

    docs = asyncio.run(run())
    assert [d.markdown for d in docs] == [f"document {i}" for i in range(8)]
    assert peak == 2 and len(connections) == 1


def test_health(llamaparse_mock: MockServer) -> None:
    async def run() -> float:
        async with _client(llamaparse_mock) as client:
            await client.health()
            return await client.health()

    assert asyncio.run(run()) < 100


def test_health_reports_a_dead_service() -> None:
    async def run() -> None:
        async with LlamaParseClient("http://127.0.0.1:9", "k", timeout_s=1) as client:
            await client.health()

    with pytest.raises(ParseError) as info:
        asyncio.run(run())
    assert info.value.kind == "http" and "cannot reach" in info.value.reason


class _Receiver:
    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, str | None]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.bodies.append((body, self.headers.get("X-Docpipe-Signature")))
                self.send_response(200)
                self.end_headers()
                outer.event.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/parsed"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.mark.over_the_wire
def test_webhook_via_upload_options(llamaparse_wire: MockServer, receiver: _Receiver) -> None:
    doc = parse(
        llamaparse_wire, "w.txt", b"webhook body", upload_options={"webhook_url": receiver.url}
    )
    assert receiver.event.wait(5)
    body, signature = receiver.bodies[0]
    assert json.loads(body)["id"] == doc.job_id
    assert verify_webhook_signature("test-webhook-secret", body, signature)
    assert not verify_webhook_signature("test-webhook-secret", body + b" ", signature)
    assert not verify_webhook_signature("wrong-secret", body, signature)


@pytest.mark.real_services
@pytest.mark.skipif(
    not (os.environ.get("LLAMA_CLOUD_API_KEY") and os.environ.get("DOCPIPE_REAL_LLAMAPARSE")),
    reason="real LlamaParse (v2 API): set LLAMA_CLOUD_API_KEY and DOCPIPE_REAL_LLAMAPARSE=1",
)
def test_real_llamaparse() -> None:
    """The default client (v2) against the real service: a two-page PDF, pages in order."""
    from docpipe_dagster.clients.llamaparse_v2 import LlamaParseV2Client

    base = os.environ.get("LLAMA_CLOUD_BASE_URL", "https://api.cloud.llamaindex.ai")

    async def run() -> ParsedDocument:
        async with LlamaParseV2Client(
            base,
            os.environ["LLAMA_CLOUD_API_KEY"],
            tier=os.environ.get("DOCPIPE_PARSE_TIER", "fast"),
            poll_interval_s=1.0,
            deadline_s=300,
        ) as client:
            return await client.parse(
                "hello.pdf", build_text_pdf(["Hello from docpipe", "Second page here"])
            )

    doc = asyncio.run(run())
    assert "Hello from docpipe" in doc.pages[0] and "Second page" in doc.pages[1]
    assert doc.page_numbers == [1, 2]
