"""The OpenAI mock over real HTTP (subprocess on a free port), plus the shared mock framework."""

from __future__ import annotations

import base64
import math
import struct
import time

import httpx
import openai
import pytest

from docpipe_dagster_mocks._common import FaultInjector, MockSettings, settings_from_env
from docpipe_dagster_mocks.openai.app import count_tokens, embed_text
from docpipe_dagster_mocks.serve import main as serve_main
from docpipe_dagster_tests.support import MockServer

MODEL = "text-embedding-3-small"


@pytest.fixture
def http(openai_mock: MockServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {openai_mock.api_key}"}
    with httpx.Client(base_url=openai_mock.base_url, headers=headers, timeout=10) as client:
        yield client


def _embed(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": MODEL, **body})


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


# --- health, control endpoints, auth -------------------------------------------------------


def test_health_is_fast_unauthenticated_and_not_counted(openai_mock: MockServer) -> None:
    openai_mock.set_latency(500)  # latency applies to API routes only
    with httpx.Client() as c:
        c.get(f"{openai_mock.base_url}/health")  # warm the connection
        start = time.perf_counter()
        r = c.get(f"{openai_mock.base_url}/health")
        elapsed_ms = (time.perf_counter() - start) * 1000
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "service": "openai"}
    assert elapsed_ms < 100
    assert openai_mock.stats()["total"] == 0


def test_missing_key_is_401_in_openai_style(openai_mock: MockServer) -> None:
    r = httpx.post(f"{openai_mock.base_url}/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("You didn't provide an API key")
    assert set(err) == {"message", "type", "param", "code"}


def test_wrong_key_is_401_and_not_echoed(openai_mock: MockServer) -> None:
    wrong = "sk-this-is-a-wrong-key-123456"
    r = httpx.post(
        f"{openai_mock.base_url}/v1/embeddings",
        json={"model": MODEL, "input": "x"},
        headers={"Authorization": f"Bearer {wrong}"},
    )
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key"
    assert err["message"].startswith("Incorrect API key provided")
    assert wrong not in r.text
    assert openai_mock.stats()["by_status"] == {"401": 1}


def test_stats_count_by_route_and_status_and_reset(
    openai_mock: MockServer, http: httpx.Client
) -> None:
    _embed(http, input="hello")
    _embed(http, input="")
    http.get("/v1/models")
    http.get("/v1/models/text-embedding-3-large")
    stats = openai_mock.stats()
    assert stats["total"] == 4
    assert stats["by_route"] == {
        "POST /v1/embeddings": 2,
        "GET /v1/models": 1,
        "GET /v1/models/{model_id}": 1,
    }
    assert stats["by_status"] == {"200": 3, "400": 1}
    openai_mock.set_faults({"kind": "http_500"})
    openai_mock.reset()
    assert openai_mock.stats()["total"] == 0
    assert openai_mock.faults() == []


def test_latency_is_applied_to_api_requests(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_latency(150, 0)
    start = time.perf_counter()
    assert _embed(http, input="slow").status_code == 200
    assert time.perf_counter() - start >= 0.15


def test_per_input_latency_grows_with_the_inputs(
    openai_mock: MockServer, http: httpx.Client
) -> None:
    control = f"{openai_mock.base_url}/_mock/latency"
    body = {"latency_ms": 0, "jitter_ms": 0, "per_input_ms": 30}
    try:
        got = httpx.post(control, json=body).json()
        assert got == {"latency_ms": 0.0, "jitter_ms": 0.0, "per_input_ms": 30.0}
        start = time.perf_counter()
        r = _embed(http, input=[f"text {i}" for i in range(10)])
        assert r.status_code == 200 and len(r.json()["data"]) == 10
        assert time.perf_counter() - start >= 0.3  # 10 inputs x 30 ms
        # an update that leaves the key out keeps it
        httpx.post(control, json={"latency_ms": 0})
        assert httpx.get(control).json()["per_input_ms"] == 30.0
    finally:
        httpx.post(control, json={"per_input_ms": 0})
    assert httpx.get(control).json()["per_input_ms"] == 0.0


# --- the embeddings contract ---------------------------------------------------------------


def test_response_shape_usage_and_rate_limit_headers(http: httpx.Client) -> None:
    texts = ["Hello, world!", "the quick brown fox"]
    r = _embed(http, input=texts, encoding_format="float")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 1536 for d in body["data"])
    expected_tokens = count_tokens(texts[0]) + count_tokens(texts[1])
    assert expected_tokens == 4 + 4  # "Hello" "," "world" "!" / four words
    assert body["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}
    for kind in ("requests", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{part}-{kind}" in r.headers
    assert int(r.headers["x-ratelimit-remaining-requests"]) < int(
        r.headers["x-ratelimit-limit-requests"]
    )


def test_single_string_and_token_array_inputs(http: httpx.Client) -> None:
    one = _embed(http, input="just one", encoding_format="float").json()
    assert len(one["data"]) == 1
    tokens = _embed(http, input=[1, 2, 3], encoding_format="float").json()
    assert len(tokens["data"]) == 1 and tokens["usage"]["prompt_tokens"] == 3
    many = _embed(http, input=[[1, 2], [3]], encoding_format="float").json()
    assert len(many["data"]) == 2 and many["usage"]["prompt_tokens"] == 3


def test_vectors_are_unit_deterministic_and_stable_across_processes(http: httpx.Client) -> None:
    text = "Invoices are due within thirty days."
    a = _embed(http, input=[text, text], encoding_format="float").json()["data"]
    b = _embed(http, input=text, encoding_format="float").json()["data"]
    assert a[0]["embedding"] == a[1]["embedding"] == b[0]["embedding"]
    assert math.isclose(sum(x * x for x in a[0]["embedding"]), 1.0, rel_tol=1e-5)
    # The server is another process: blake2b hashing, not Python's salted hash().
    assert a[0]["embedding"] == embed_text(text, 1536, MODEL)


def test_base64_is_little_endian_float32_of_the_float_vector(http: httpx.Client) -> None:
    text = "pgvector stores embeddings"
    f = _embed(http, input=text, encoding_format="float").json()["data"][0]["embedding"]
    b64 = _embed(http, input=text, encoding_format="base64").json()["data"][0]["embedding"]
    raw = base64.b64decode(b64)
    assert len(raw) == 4 * 1536
    assert list(struct.unpack("<1536f", raw)) == f


def test_similar_texts_are_closer_than_unrelated(http: httpx.Client) -> None:
    texts = [
        "The cat sat on the warm mat by the door.",
        "A cat was sitting on the mat near the door.",
        "Quarterly revenue grew by eight percent in Europe.",
    ]
    v = [d["embedding"] for d in _embed(http, input=texts, encoding_format="float").json()["data"]]
    assert _cos(v[0], v[1]) > 0.4
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) + 0.3


def test_dimensions_and_models(http: httpx.Client) -> None:
    small = _embed(http, input="x y", dimensions=256, encoding_format="float").json()
    assert len(small["data"][0]["embedding"]) == 256
    large = http.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-large", "input": "x", "encoding_format": "float"},
    ).json()
    assert len(large["data"][0]["embedding"]) == 3072
    r = http.post(
        "/v1/embeddings", json={"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "This model does not support specifying dimensions."
    assert _embed(http, input="x", dimensions=1537).status_code == 400


def test_unknown_model_is_404_model_not_found(http: httpx.Client) -> None:
    r = http.post("/v1/embeddings", json={"model": "text-embedding-4-huge", "input": "x"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert http.get("/v1/models/text-embedding-4-huge").status_code == 404
    ids = {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"} <= ids


def test_limit_too_many_inputs(http: httpx.Client) -> None:
    r = _embed(http, input=["a"] * 2049)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input" and err["type"] == "invalid_request_error"
    assert _embed(http, input=["a"] * 2048, dimensions=8).status_code == 200


def test_limit_empty_string(http: httpx.Client) -> None:
    r = _embed(http, input=["fine", ""])
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("'$.input' is invalid")


def test_limit_context_length(http: httpx.Client) -> None:
    assert _embed(http, input="w " * 8192, dimensions=8).status_code == 200
    r = _embed(http, input=["ok", "w " * 8193])
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert msg.startswith(
        "This model's maximum context length is 8192 tokens, however you requested 8193 tokens"
    )


def test_limit_tokens_per_request(http: httpx.Client) -> None:
    r = _embed(http, input=["w " * 8000] * 38)  # 304,000 tokens
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Requested 304000 tokens, max 300000 tokens per request"


def test_invalid_json_body(http: httpx.Client) -> None:
    r = http.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "could not parse the JSON body" in r.json()["error"]["message"]


# --- fault injection -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_503", 503)])
def test_server_error_faults(
    openai_mock: MockServer, http: httpx.Client, kind: str, status: int
) -> None:
    openai_mock.set_faults({"kind": kind, "count": 2})
    assert [_embed(http, input="x").status_code for _ in range(3)] == [status, status, 200]
    r = (openai_mock.set_faults({"kind": kind, "count": 1}), _embed(http, input="x"))[1]
    assert r.json()["error"]["type"] == "server_error"
    assert openai_mock.stats()["faults"][kind] == 3


def test_429_fault_has_retry_headers(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.25})
    r = _embed(http, input="x")
    assert r.status_code == 429
    assert r.headers["retry-after-ms"] == "250"
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_insufficient_quota_fault(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_faults({"kind": "insufficient_quota", "count": 1})
    r = _embed(http, input="x")
    assert r.status_code == 429
    assert r.json() == {
        "error": {
            "message": r.json()["error"]["message"],
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    assert r.json()["error"]["message"].startswith("You exceeded your current quota")


def test_malformed_json_fault(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_faults({"kind": "malformed_json", "count": 1})
    r = _embed(http, input="x")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()


def test_hang_fault_delays_then_answers(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_faults({"kind": "hang", "count": 1, "hang_seconds": 0.4})
    start = time.perf_counter()
    r = _embed(http, input="x")
    assert r.status_code == 200
    assert time.perf_counter() - start >= 0.4


def test_hang_fault_client_disconnect_is_recorded(
    openai_mock: MockServer, http: httpx.Client
) -> None:
    openai_mock.set_faults({"kind": "hang", "count": 1, "hang_seconds": 30})
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, timeout=0.3)
    deadline = time.monotonic() + 5
    while openai_mock.stats()["by_status"].get("499") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert openai_mock.stats()["by_status"] == {"499": 1}


def test_wrong_count_and_wrong_dimensions_faults(
    openai_mock: MockServer, http: httpx.Client
) -> None:
    openai_mock.set_faults({"kind": "wrong_count", "count": 1})
    assert len(_embed(http, input=["a", "b", "c"]).json()["data"]) == 2
    assert len(_embed(http, input=["a", "b", "c"]).json()["data"]) == 3
    openai_mock.set_faults({"kind": "wrong_dimensions", "count": 1})
    first = _embed(http, input="a", encoding_format="float").json()["data"][0]["embedding"]
    second = _embed(http, input="a", encoding_format="float").json()["data"][0]["embedding"]
    assert len(first) != 1536 and len(second) == 1536


def test_fault_path_filter(openai_mock: MockServer, http: httpx.Client) -> None:
    openai_mock.set_faults({"kind": "http_500", "path": "/v1/models"})
    assert http.get("/v1/models").status_code == 500
    assert _embed(http, input="x").status_code == 200


def test_official_sdk_sees_real_error_types(openai_mock: MockServer) -> None:
    client = openai.OpenAI(
        base_url=f"{openai_mock.base_url}/v1", api_key=openai_mock.api_key, max_retries=2
    )
    openai_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.05})
    resp = client.embeddings.create(input=["a b", "c"], model=MODEL)  # SDK retries the 429
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 1536
    openai_mock.set_faults({"kind": "insufficient_quota", "count": 1})
    with pytest.raises(openai.RateLimitError) as exc:  # the SDK would retry any 429
        client.with_options(max_retries=0).embeddings.create(input="a", model=MODEL)
    assert exc.value.code == "insufficient_quota"
    bad = openai.OpenAI(base_url=f"{openai_mock.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(input="a", model=MODEL)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input=[""], model=MODEL)


# --- framework units (no server) -----------------------------------------------------------


def test_fault_injector_count_probability_and_kinds() -> None:
    f = FaultInjector(seed=7)
    f.add({"kind": "http_500", "count": 2})
    f.add({"kind": "wrong_count"})  # service-specific: never taken by kind=None
    assert f.take(None, "/v1/embeddings")["kind"] == "http_500"
    assert f.take(None, "/v1/embeddings")["kind"] == "http_500"
    assert f.take(None, "/v1/embeddings") is None
    assert f.take("wrong_count", "/v1/embeddings") is not None  # count None: unlimited
    assert f.take("wrong_count", "/v1/embeddings") is not None
    f.clear()
    assert f.list() == []


def test_fault_injector_probability_is_seeded() -> None:
    def rolls(seed: int) -> list[bool]:
        f = FaultInjector(seed=seed, specs=[{"kind": "http_503", "probability": 0.5}])
        return [f.take(None, "/x") is not None for _ in range(200)]

    assert rolls(1) == rolls(1)
    assert 60 < sum(rolls(1)) < 140


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_MOCK_API_KEY", "env-key")
    monkeypatch.setenv("DOCPIPE_MOCK_LATENCY_MS", "12.5")
    monkeypatch.setenv("DOCPIPE_MOCK_FAULTS", '{"kind": "http_500", "count": 1}')
    s = settings_from_env(jitter_ms=3)
    assert (s.api_key, s.latency_ms, s.jitter_ms) == ("env-key", 12.5, 3)
    assert s.faults == [{"kind": "http_500", "count": 1}]
    assert settings_from_env(api_key=None).api_key is None
    assert MockSettings().api_key == "env-key"
    monkeypatch.delenv("DOCPIPE_MOCK_API_KEY")
    assert MockSettings().api_key == "docpipe-local-key"


def test_cli_rejects_port_with_all() -> None:
    assert serve_main(["all", "--port", "9999"]) == 2


def test_cli_all_can_skip_a_mock() -> None:
    """`python -m docpipe_dagster_mocks all --skip llamaparse`: what `docpipe dev` runs when nothing is sent
    to a parser (DOCPIPE_PARSE_LOCALLY=all)."""
    import subprocess
    import sys

    from docpipe_dagster.local.dev_stack import wait_for_http
    from docpipe_dagster.local.ports import named_free_ports, port_in_use

    ports = named_free_ports(["storage", "llamaparse", "openai"])
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster_mocks", "all", "--skip", "llamaparse", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for name in ("storage", "openai"):
            url = f"http://127.0.0.1:{ports[name]}/health"
            assert wait_for_http(url, 30, lambda: process.poll() is None), name
        assert not port_in_use(ports["llamaparse"])
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=15)
    assert "mock llamaparse" not in out and "mock storage" in out
