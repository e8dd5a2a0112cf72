"""LlamaParseV2Client against the LlamaParse mock's v2 routes (in-process, see conftest.py);
the parser choice (v1/v2, local extensions) and the in-process extraction."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from docpipe_dagster.clients.llamaparse import LlamaParseClient, ParsedDocument, ParseError
from docpipe_dagster.clients.llamaparse_v2 import LlamaParseV2Client
from docpipe_dagster.clients.parsing import make_parser_client, parser_api
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster.defs.resources import ParserResource, parser_env
from docpipe_dagster.pipeline.local_parse import local_profile, parse_locally
from docpipe_dagster_mocks.llamaparse.testdata import build_encrypted_pdf, build_text_pdf
from docpipe_dagster_tests.support import MockServer

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


def _client(mock: MockServer, **kw: object) -> LlamaParseV2Client:
    options: dict = {
        "poll_interval_s": 0.02,
        "max_poll_interval_s": 0.1,
        "deadline_s": 5.0,
        "timeout_s": 5.0,
        "retry_policy": FAST_RETRY,
        "transport": getattr(mock, "transport", None),  # in-process unless over the wire
    }
    options.update(kw)
    return LlamaParseV2Client(mock.base_url, mock.api_key or "", **options)


def parse(mock: MockServer, filename: str, content: bytes, **kw: object) -> ParsedDocument:
    async def run() -> ParsedDocument:
        async with _client(mock, **kw) as client:
            return await client.parse(filename, content)

    return asyncio.run(run())


def parse_error(mock: MockServer, filename: str, content: bytes, **kw: object) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(mock, filename, content, **kw)
    return info.value


def routes(mock: MockServer) -> dict[str, int]:
    return mock.stats()["by_route"]


def test_parses_pages_in_order_with_numbers(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.reset()
    llamaparse_mock.http.post("/_mock/pending", json={"pending_seconds": 0.2})
    pages = ["Revenue grew in spring.", "Costs fell in summer.", "Profit rose in autumn."]
    doc = parse(llamaparse_mock, "reports/q1.pdf", build_text_pdf(pages))
    assert doc.pages == pages and doc.page_numbers == [1, 2, 3] and doc.page_count == 3
    assert doc.markdown == "\n---\n".join(pages)
    assert doc.job_id and doc.polls >= 1 and not doc.cache_hit
    by_route = routes(llamaparse_mock)
    assert by_route["POST /api/v2/parse/upload"] == 1
    assert not any(r.startswith(("POST /api/parsing", "GET /api/parsing")) for r in by_route)
    # The same bytes again: the finished job answers COMPLETED at once, no poll.
    again = parse(llamaparse_mock, "reports/q1.pdf", build_text_pdf(pages))
    assert (again.job_id, again.polls, again.cache_hit) == (doc.job_id, 0, True)
    text = parse(llamaparse_mock, "p.html", b"<h2>Heading</h2><p>Body</p>", result_type="text")
    assert text.pages == ["Heading\n\nBody"]


def test_the_configuration_carries_tier_and_version(llamaparse_mock: MockServer) -> None:
    seen: list[dict] = []

    async def run() -> None:
        async def record(request: httpx.Request) -> None:
            if request.url.path == "/api/v2/parse/upload":
                body = (await request.aread()).decode("latin-1")
                start = body.index('name="configuration"')
                part = body[start:].split("\r\n\r\n", 1)[1].split("\r\n--", 1)[0]
                seen.append(json.loads(part))

        client = _client(llamaparse_mock, tier="agentic", version="2025-12-11")
        client._http().event_hooks["request"].append(record)
        async with client:
            await client.parse("a.md", b"# A")

    asyncio.run(run())
    assert seen == [{"tier": "agentic", "version": "2025-12-11"}]
    # A bad tier or version is refused when the settings load (test_api_choice_and_profiles).


def test_failed_jobs_carry_the_service_message(llamaparse_mock: MockServer) -> None:
    locked = parse_error(llamaparse_mock, "locked.pdf", build_encrypted_pdf("secret"))
    assert locked.code == "PDF_IS_PROTECTED" and not locked.retryable and locked.kind == "error"
    assert "ended FAILED" in locked.reason and "protected" in locked.reason
    llamaparse_mock.set_faults({"kind": "parse_error", "count": 1})
    internal = parse_error(llamaparse_mock, "x.md", b"# transient")
    assert internal.code == "INTERNAL_ERROR" and internal.retryable
    assert "An internal error occurred" in internal.reason


def test_a_failed_page_fails_the_document(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "page_error", "count": 1})
    err = parse_error(llamaparse_mock, "two.pdf", build_text_pdf(["One", "Two"]))
    assert err.code == "PAGES_FAILED" and err.retryable
    assert "1 of 2 pages failed: page 1: Page could not be parsed." in err.reason


def test_a_stuck_job_is_cancelled_on_the_service(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "parse_stuck", "count": 1})
    err = parse_error(llamaparse_mock, "stuck.md", b"# Stuck", deadline_s=0.3)
    assert err.kind == "stuck" and err.retryable
    assert "still PENDING after 0.3 s (cancelled on the service)" in err.reason
    assert routes(llamaparse_mock)["POST /api/v2/parse/{job_id}/cancel"] == 1
    job = llamaparse_mock.http.get(
        f"/api/v2/parse/{err.job_id}",
        headers={"Authorization": f"Bearer {llamaparse_mock.api_key}"},
    ).json()["job"]
    assert job["status"] == "CANCELLED"


def test_retries_and_x_should_retry(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "http_503", "count": 2, "path": "/api/v2/parse/upload"})
    assert parse(llamaparse_mock, "a.md", b"# Fine").pages == ["# Fine"]
    assert llamaparse_mock.stats()["faults"] == {"http_503": 2}


class _Refusing:
    """A server answering 503 with `x-should-retry: false`: the client must not retry."""

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.hits += 1
                body = b'{"detail": "Overloaded; do not retry"}'
                self.send_response(503)
                self.send_header("content-type", "application/json")
                self.send_header("x-should-retry", "false")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def refusing() -> Iterator[_Refusing]:
    server = _Refusing()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_x_should_retry_false_is_final(refusing: _Refusing) -> None:
    async def run() -> None:
        async with LlamaParseV2Client(refusing.url, "k", retry_policy=FAST_RETRY) as client:
            await client.parse("a.md", b"# A")

    with pytest.raises(ParseError) as info:
        asyncio.run(run())
    assert refusing.hits == 1 and not info.value.retryable
    assert "HTTP 503: Overloaded; do not retry" in info.value.reason


@pytest.mark.over_the_wire
def test_health_uses_v2(llamaparse_wire: MockServer) -> None:
    async def run() -> float:
        async with _client(llamaparse_wire) as client:
            return await client.health()

    assert asyncio.run(run()) >= 0
    assert routes(llamaparse_wire).get("GET /api/v2/parse") == 1


def test_api_choice_and_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCPIPE_PARSER_API", raising=False)
    assert parser_api() == "v2"
    monkeypatch.setenv("DOCPIPE_PARSER_API", "V1")
    assert parser_api() == "v1"
    monkeypatch.setenv("DOCPIPE_PARSER_API", "v3")
    with pytest.raises(ValueError, match="DOCPIPE_PARSER_API='v3': Input should be 'v1' or 'v2'"):
        parser_api()
    v1 = make_parser_client("v1", "http://127.0.0.1:1", "k", tier="fast", version="latest")
    v2 = make_parser_client("v2", "http://127.0.0.1:1", "k", tier="fast")
    assert type(v1) is LlamaParseClient and isinstance(v2, LlamaParseV2Client)
    # Tier and version are part of the parse-cache key; the local extractor has its own.
    base = {"base_url": "http://127.0.0.1:1", "api_key": "k"}
    profiles = {
        ParserResource(**base).profile,
        ParserResource(**base, tier="agentic").profile,
        ParserResource(**base, version="2025-12-11").profile,
        ParserResource(**base, api="v1").profile,
        ParserResource(**base, api="v1", tier="agentic").profile,  # v1 has no tier
        local_profile("markdown"),
    }
    assert len(profiles) == 5
    assert ParserResource(**base).profile == "llamaparse-v2:cost_effective:latest:markdown"
    # From the environment, a typo fails at load naming the variable.
    monkeypatch.delenv("DOCPIPE_PARSER_API")
    monkeypatch.setenv("DOCPIPE_PARSE_TIER", "premium")
    with pytest.raises(ValueError, match="DOCPIPE_PARSE_TIER='premium': Input should be 'fast'"):
        parser_env()
    monkeypatch.setenv("DOCPIPE_PARSE_TIER", "agentic")
    monkeypatch.setenv("DOCPIPE_PARSE_VERSION", "yesterday")
    with pytest.raises(ValueError, match=r"DOCPIPE_PARSE_VERSION='yesterday': .*YYYY-MM-DD"):
        parser_env()
    monkeypatch.setenv("DOCPIPE_PARSE_VERSION", "2025-12-11")
    monkeypatch.setenv("DOCPIPE_PARSE_LOCALLY", "txt,key")
    with pytest.raises(ValueError, match="DOCPIPE_PARSE_LOCALLY"):
        parser_env()
    monkeypatch.setenv("DOCPIPE_PARSE_LOCALLY", "txt,.MD")
    assert parser_env() == {
        "api": "v2",
        "tier": "agentic",
        "version": "2025-12-11",
        "parse_locally": "md,txt",
    }


def test_parse_locally_matches_the_mock(llamaparse_mock: MockServer) -> None:
    data = b"Line one.\fLine two on page two."
    local = parse_locally("notes.txt", data)
    assert local.pages == ["Line one.", "Line two on page two."] and local.page_numbers == [1, 2]
    assert local.job_id == "" and local.polls == 0
    pdf = build_text_pdf(["Alpha page", "Beta page"])
    assert parse_locally("a.pdf", pdf).markdown == parse(llamaparse_mock, "a.pdf", pdf).markdown
    with pytest.raises(ParseError) as info:
        parse_locally("empty.json", b"")
    assert info.value.code == "NO_DATA_FOUND_IN_FILE" and not info.value.retryable
