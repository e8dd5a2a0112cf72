"""EmbeddingsClient against the OpenAI mock: in-process (ASGI), a few over real HTTP (conftest)."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from array import array
from collections.abc import Coroutine
from typing import Any, TypeVar

import openai
import pytest

from docpipe_dagster.clients.embeddings import (
    EmbeddingBatch,
    EmbeddingError,
    EmbeddingInputError,
    EmbeddingsClient,
)
from docpipe_dagster.core.retry import RetryPolicy
from docpipe_dagster.core.text import estimate_tokens
from docpipe_dagster_mocks.openai.app import count_tokens, embed_text
from docpipe_dagster_tests.support import MockServer, free_port

T = TypeVar("T")
MODEL = "text-embedding-3-small"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
TEXTS = [
    "The cat sat on the warm mat by the door.",
    "A cat was sitting on the mat near the door.",
    "Quarterly revenue grew by eight percent in Europe.",
    "Embeddings map text to vectors.",
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_client(mock: MockServer, **kwargs: Any) -> EmbeddingsClient:
    kwargs.setdefault("retry_policy", FAST_RETRY)
    kwargs.setdefault("rng", random.Random(0))
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("transport", getattr(mock, "transport", None))  # unless over the wire
    api_key = kwargs.pop("api_key", mock.api_key)
    return EmbeddingsClient(f"{mock.base_url}/v1", api_key, **kwargs)


async def _embed(mock: MockServer, texts: list[str], **kwargs: Any) -> EmbeddingBatch:
    async with make_client(mock, **kwargs) as client:
        return await client.embed(texts)


def mock_vector(text: str, dims: int) -> array[float]:
    """What the client returns for `text`: the mock's embedding as a float32 array."""
    return array("f", embed_text(text, dims, MODEL))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


# --- happy path -----------------------------------------------------------------------------


@pytest.mark.over_the_wire
def test_embed_preserves_order_and_matches_the_mock(openai_wire: MockServer) -> None:
    batch = run(_embed(openai_wire, TEXTS))
    assert batch.errors == {}
    assert batch.requests == 1 and batch.retries == 0
    assert batch.prompt_tokens == sum(count_tokens(t) for t in TEXTS)
    for text, vec in zip(TEXTS, batch.vectors, strict=True):
        assert vec == mock_vector(text, 1536)


def test_base64_and_float_give_identical_vectors(openai_mock: MockServer) -> None:
    b64 = run(_embed(openai_mock, TEXTS, encoding_format="base64"))
    flt = run(_embed(openai_mock, TEXTS, encoding_format="float"))
    assert b64.vectors == flt.vectors
    assert len(b64.vectors[0]) == 1536


def test_deterministic_and_meaningful(openai_mock: MockServer) -> None:
    first = run(_embed(openai_mock, TEXTS)).vectors
    second = run(_embed(openai_mock, list(reversed(TEXTS)))).vectors
    assert first == list(reversed(second))
    assert _cos(first[0], first[1]) > _cos(first[0], first[2]) + 0.3


def test_dimensions_parameter(openai_mock: MockServer) -> None:
    batch = run(_embed(openai_mock, TEXTS, dimensions=64))
    assert {len(v) for v in batch.vectors} == {64}


@pytest.mark.over_the_wire
def test_official_sdk_gets_the_same_vectors_in_both_encodings(openai_wire: MockServer) -> None:
    sdk = openai.OpenAI(base_url=f"{openai_wire.base_url}/v1", api_key=openai_wire.api_key)
    ours = run(_embed(openai_wire, TEXTS)).vectors
    sdk_b64 = sdk.embeddings.create(input=TEXTS, model=MODEL)  # SDK default: base64
    sdk_float = sdk.embeddings.create(input=TEXTS, model=MODEL, encoding_format="float")
    assert [array("f", d.embedding) for d in sdk_b64.data] == ours
    assert [array("f", d.embedding) for d in sdk_float.data] == ours
    assert sdk_b64.usage.prompt_tokens == run(_embed(openai_wire, TEXTS)).prompt_tokens


def test_health_reports_latency(openai_mock: MockServer) -> None:
    async def go() -> float:
        async with make_client(openai_mock) as client:
            return await client.health()

    assert 0 < run(go()) < 1000
    assert openai_mock.stats()["by_route"] == {"GET /v1/models": 1}


def test_client_survives_a_new_event_loop(openai_mock: MockServer) -> None:
    client = make_client(openai_mock)
    a = asyncio.run(client.embed(["one"]))
    b = asyncio.run(client.embed(["one"]))  # pool from the first loop must not be reused
    assert a.vectors == b.vectors
    run(client.aclose())


def test_bounded_concurrency(openai_mock: MockServer) -> None:
    openai_mock.set_latency(150)
    start = time.perf_counter()
    batch = run(
        _embed(
            openai_mock,
            [f"text {i}" for i in range(8)],
            max_inputs_per_request=1,
            max_concurrency=2,
        )
    )
    elapsed = time.perf_counter() - start
    assert batch.requests == 8 and all(batch.vectors)
    # 8 requests of >= 150 ms, 2 at a time: at least 4 rounds (0.6 s); sequential is 1.2 s.
    assert 0.58 <= elapsed < 1.1


# --- transient faults are retried ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http_500", "http_503", "malformed_json", "wrong_count"])
def test_transient_faults_are_retried(openai_mock: MockServer, kind: str) -> None:
    openai_mock.set_faults({"kind": kind, "count": 2})
    batch = run(_embed(openai_mock, TEXTS))
    assert batch.errors == {}
    assert batch.vectors == [mock_vector(t, 1536) for t in TEXTS]
    assert (batch.requests, batch.retries) == (3, 2)
    assert openai_mock.stats()["total"] == 3


def test_wrong_dimensions_is_retried(openai_mock: MockServer) -> None:
    openai_mock.set_faults({"kind": "wrong_dimensions", "count": 1})
    batch = run(_embed(openai_mock, TEXTS))
    assert {len(v) for v in batch.vectors} == {1536}
    assert batch.retries == 1


def test_429_honours_retry_after(openai_mock: MockServer) -> None:
    openai_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.3})
    start = time.perf_counter()
    batch = run(_embed(openai_mock, TEXTS))
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.3  # the backoff alone would be <= 0.05 s
    assert batch.retries == 1 and all(batch.vectors)
    assert openai_mock.stats()["by_status"] == {"429": 1, "200": 1}


@pytest.mark.over_the_wire
def test_hang_times_out_and_is_retried(openai_wire: MockServer) -> None:
    openai_wire.set_faults({"kind": "hang", "count": 1, "hang_seconds": 10})
    start = time.perf_counter()
    batch = run(_embed(openai_wire, TEXTS, timeout_s=0.5))
    assert time.perf_counter() - start < 3
    assert batch.retries == 1 and all(batch.vectors)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("wrong_count", "embedder returned 3 vectors for 4 inputs"),
        ("wrong_dimensions", "embedder returned vectors of 768 dimensions, expected 1536"),
        ("malformed_json", "malformed response"),
        ("http_503", "503"),
    ],
)
def test_persistent_faults_give_up_retryable(
    openai_mock: MockServer, kind: str, message: str
) -> None:
    openai_mock.set_faults({"kind": kind})
    with pytest.raises(EmbeddingError) as exc:
        run(_embed(openai_mock, TEXTS))
    assert exc.value.retryable is True
    assert message in str(exc.value)
    assert openai_mock.stats()["total"] == FAST_RETRY.max_attempts


def test_connection_refused_is_retryable(openai_mock: MockServer) -> None:
    client = EmbeddingsClient(
        f"http://127.0.0.1:{free_port()}/v1", "secret-key-xyz", retry_policy=FAST_RETRY
    )
    with pytest.raises(EmbeddingError) as exc:
        run(client.embed(["a"]))
    assert exc.value.retryable is True
    assert "secret-key-xyz" not in str(exc.value)


# --- permanent errors are not retried --------------------------------------------------------


def test_insufficient_quota_is_not_retried(openai_mock: MockServer) -> None:
    openai_mock.set_faults({"kind": "insufficient_quota"})
    with pytest.raises(EmbeddingError) as exc:
        run(_embed(openai_mock, TEXTS))
    assert exc.value.retryable is False
    assert (exc.value.status, exc.value.code) == (429, "insufficient_quota")
    assert "exceeded your current quota" in exc.value.message
    assert openai_mock.stats()["total"] == 1


def test_wrong_key_is_401_not_retried_and_never_shown(
    openai_mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-proj-averysecretwrongkey0123456789"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EmbeddingError) as exc:
        run(_embed(openai_mock, TEXTS, api_key=key))
    assert (exc.value.status, exc.value.retryable) == (401, False)
    assert "Incorrect API key provided" in str(exc.value)
    for fragment in (key, key[:3] + "***" + key[-4:], key[-4:]):
        assert fragment not in str(exc.value)
        assert fragment not in caplog.text
    assert openai_mock.stats()["total"] == 1


def test_other_400_is_not_retried(openai_mock: MockServer) -> None:
    with pytest.raises(EmbeddingError) as exc:
        run(_embed(openai_mock, TEXTS, model="text-embedding-ada-002", dimensions=8))
    assert exc.value.status == 400 and exc.value.retryable is False
    assert "does not support specifying dimensions" in str(exc.value)
    assert openai_mock.stats()["total"] == 1


@pytest.mark.over_the_wire  # requests really in flight when one fails
def test_fatal_error_in_one_request_ends_the_call(openai_wire: MockServer) -> None:
    openai_wire.set_faults({"kind": "insufficient_quota"})
    with pytest.raises(EmbeddingError):
        run(_embed(openai_wire, [f"t{i}" for i in range(20)], max_inputs_per_request=2))
    assert openai_wire.stats()["total"] <= 4  # at most max_concurrency in flight, no retries


# --- limits: packing, splitting, isolating ---------------------------------------------------


def test_over_2048_inputs_are_split(openai_mock: MockServer) -> None:
    texts = [f"document number {i}" for i in range(2100)]
    batch = run(_embed(openai_mock, texts, dimensions=8))
    assert batch.requests >= 2 and batch.retries == 0
    assert openai_mock.stats()["by_status"] == {"200": batch.requests}
    assert batch.vectors[2099] == mock_vector(texts[2099], 8)
    assert batch.vectors[7] == mock_vector(texts[7], 8)


def test_token_budget_packing_avoids_400(openai_mock: MockServer) -> None:
    texts = [f"w{i} " + "w " * 7999 for i in range(38)]  # 8000 tokens each, 304k in all
    assert estimate_tokens(texts[0]) >= count_tokens(texts[0])
    batch = run(_embed(openai_mock, texts, dimensions=8))
    assert batch.errors == {} and all(batch.vectors)
    assert batch.requests == 2
    assert "400" not in openai_mock.stats()["by_status"]


def test_oversized_request_is_split_on_400(openai_mock: MockServer) -> None:
    texts = [f"w{i} " + "w " * 7999 for i in range(38)]
    # Defeat local packing so the server's "max 300000 tokens per request" 400 is exercised.
    batch = run(_embed(openai_mock, texts, dimensions=8, max_tokens_per_request=10**9))
    assert batch.errors == {}
    assert batch.vectors == [mock_vector(t, 8) for t in texts]
    assert openai_mock.stats()["by_status"] == {"400": 1, "200": 2}


def test_too_many_inputs_400_is_split(openai_mock: MockServer) -> None:
    texts = [f"t{i}" for i in range(2050)]
    batch = run(_embed(openai_mock, texts, dimensions=8, max_inputs_per_request=5000))
    assert batch.errors == {} and all(batch.vectors)
    assert openai_mock.stats()["by_status"] == {"400": 1, "200": 2}


def test_one_bad_input_is_isolated(openai_mock: MockServer) -> None:
    texts = [f"chunk {i} about cats" for i in range(8)]
    texts[5] = "w " * 9000  # over the 8192-token context
    texts[2] = ""
    batch = run(_embed(openai_mock, texts))
    assert set(batch.errors) == {2, 5}
    assert isinstance(batch.errors[5], EmbeddingInputError)
    assert "maximum context length" in batch.errors[5].message
    assert batch.errors[5].retryable is False
    assert batch.vectors[2] is None and batch.vectors[5] is None
    assert all(batch.vectors[i] == mock_vector(texts[i], 1536) for i in (0, 1, 3, 4, 6, 7))
    # Estimated too long -> sent alone: 1 request for the rest + 1 rejected; "" never sent.
    assert openai_mock.stats()["by_status"] == {"200": 1, "400": 1}


def test_bad_input_found_by_bisection(openai_mock: MockServer) -> None:
    texts = [f"chunk {i}" for i in range(8)]
    texts[5] = "w " * 9000
    # Let the client believe every input fits, so the server rejects the whole request.
    batch = run(_embed(openai_mock, texts, max_tokens_per_input=10**6))
    assert set(batch.errors) == {5}
    assert all(batch.vectors[i] for i in range(8) if i != 5)
    stats = openai_mock.stats()["by_status"]
    assert stats["400"] == 4  # [0..8) -> [4..8) -> [4..6) -> [5]
    assert stats["200"] == 3  # [0..4), [6..8), [4]


def test_empty_list_makes_no_request(openai_mock: MockServer) -> None:
    batch = run(_embed(openai_mock, []))
    assert batch.vectors == [] and batch.requests == 0
    assert openai_mock.stats()["total"] == 0


def test_texts_whose_bytes_fit_the_limits_go_in_one_request_unestimated(
    openai_mock: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token is at least a byte: 300 short texts fit one request by their byte count
    alone, so no per-text token estimate is made; over the byte budget, estimates pack."""
    import docpipe_dagster.clients.embeddings as embeddings

    estimated: list[str] = []
    real = embeddings.estimate_tokens
    monkeypatch.setattr(
        embeddings, "estimate_tokens", lambda text: estimated.append(text) or real(text)
    )
    texts = [f"short text number {i}" for i in range(300)]
    batch = run(_embed(openai_mock, texts, dimensions=8))
    assert batch.requests == 1 and estimated == []
    assert batch.vectors == [mock_vector(t, 8) for t in texts]

    # 300 texts of ~20 bytes (~7 tokens estimated) against a 1,000-token request budget
    batch = run(_embed(openai_mock, texts, dimensions=8, max_tokens_per_request=1000))
    assert len(estimated) == 300 and batch.requests >= 2
    assert batch.vectors == [mock_vector(t, 8) for t in texts]
