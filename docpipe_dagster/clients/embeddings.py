"""Async client for the OpenAI embeddings API (works against api.openai.com and the mock).

What it does beyond a plain POST:
- packs texts into requests within the count and (estimated) token limits;
- runs requests with bounded concurrency over one reused httpx.AsyncClient;
- retries 408/409/429/5xx, timeouts, connection errors, malformed or inconsistent responses
  with exponential backoff + full jitter, honouring `retry-after-ms` / `retry-after`;
- on a 400 about the input (request too large, context length, invalid input) bisects the
  request, so one bad input becomes `errors[i]` and every other input still gets a vector;
- never retries 400/401/403/404 or `insufficient_quota`; never puts the API key in a message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from docpipe_dagster.clients._http import AsyncApiClient
from docpipe_dagster.core.batching import pack
from docpipe_dagster.core.breaker import CircuitBreaker
from docpipe_dagster.core.models import MODEL_DIMENSIONS
from docpipe_dagster.core.retry import (
    Retrier,
    RetryPolicy,
    ServiceError,
    is_retryable_status,
)
from docpipe_dagster.core.text import estimate_tokens

log = logging.getLogger(__name__)

# 400 messages that mean "something about the inputs", so bisecting can isolate the cause.
_INPUT_PROBLEM_RE = re.compile(
    r"maximum context length|tokens per request|'\$\.input' is invalid|too many inputs"
    r"|maximum .*inputs|must be non-empty|empty string",
    re.IGNORECASE,
)
_ECHOED_KEY_RE = re.compile(r"(API key provided: )\S+?(?=\.?(\s|$))")
_INPUT_PROBLEM_CODES = frozenset({"context_length_exceeded", "max_tokens_per_request"})


class EmbeddingError(ServiceError):
    """A failed embeddings call. `retryable` says whether trying again later may help."""


class EmbeddingInputError(EmbeddingError):
    """One input is unusable (empty, too long even alone); retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message, retryable=False, status=status, code=code)


@dataclass
class EmbeddingBatch:
    # Same order as the input texts; None where errors[i]. Each a float32 array("f"), as the
    # API sends them: 4 bytes a dimension where a list of Python floats takes 32, and
    # decoded from base64 without a Python float per value.
    vectors: list[array[float] | None]
    errors: dict[int, EmbeddingInputError] = field(default_factory=dict)
    prompt_tokens: int = 0
    requests: int = 0  # HTTP attempts, including retries
    retries: int = 0


class _InputProblem(Exception):
    """400 about the inputs of one request: bisect, or record if the request had one input."""

    def __init__(self, error: EmbeddingError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0


class EmbeddingsClient(AsyncApiClient):
    """OpenAI-style embeddings client. `base_url` ends in /v1 (e.g. http://127.0.0.1:8002/v1).

    `retry_policy`, if given, is used as-is; otherwise RetryPolicy(max_attempts=max_attempts).
    Use one instance per event loop (the connection pool is bound to a loop).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        *,
        max_inputs_per_request: int = 2048,
        max_tokens_per_request: int = 300_000,
        max_tokens_per_input: int = 8192,
        max_concurrency: int = 4,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        encoding_format: str = "base64",
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if encoding_format not in ("float", "base64"):
            raise ValueError("encoding_format must be 'float' or 'base64'")
        if max_inputs_per_request < 1 or max_concurrency < 1:
            raise ValueError("max_inputs_per_request and max_concurrency must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dimensions = dimensions
        self.max_inputs_per_request = max_inputs_per_request
        self.max_tokens_per_request = max_tokens_per_request
        self.max_tokens_per_input = max_tokens_per_input
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.encoding_format = encoding_format
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self.breaker = CircuitBreaker("embedder", self.base_url)
        self._rng = rng or random.Random()
        self._api_key = api_key
        self._transport = transport
        self._init_pool()

    def __repr__(self) -> str:  # no key, ever
        return f"EmbeddingsClient({self.base_url!r}, model={self.model!r})"

    @property
    def expected_dimensions(self) -> int | None:
        return self.dimensions or MODEL_DIMENSIONS.get(self.model)

    async def health(self) -> float:
        """Latency in ms of GET {base_url}/models; raises EmbeddingError if not 200."""
        client = self._http()
        start = time.perf_counter()
        try:
            resp = await client.get("/models")
        except httpx.HTTPError as exc:
            raise EmbeddingError(self._transport_message(exc), retryable=True) from None
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status_code != 200:
            raise self._error_from(resp)
        return elapsed

    # --- embedding -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """Vectors for `texts` in order; bad inputs land in `errors` instead of raising."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        batch = EmbeddingBatch(vectors=[None] * len(texts))
        counters = _Counters()
        todo: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, expected str")
            if text == "":
                batch.errors[i] = EmbeddingInputError(f"input {i} is empty", code="empty_input")
            else:
                todo.append(i)
        if todo:
            self._http()  # bind the pool and semaphore to this loop before fanning out
            groups = self._plan(texts, todo)
            tasks = [
                asyncio.ensure_future(self._embed_group(texts, g, batch, counters)) for g in groups
            ]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                # One fatal error (bad key, no quota) ends the call; don't leave requests behind.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        batch.prompt_tokens = counters.prompt_tokens
        batch.requests = counters.requests
        batch.retries = counters.retries
        return batch

    def _plan(self, texts: Sequence[str], indices: list[int]) -> list[list[int]]:
        """Greedy packing in input order within the count and estimated-token limits.
        An input estimated over the per-input limit goes alone, so if the server rejects it,
        it costs one request and spoils no other input."""
        # A token is at least one UTF-8 byte (BPE; the mock's tokens are at least a
        # character): when the bytes fit every limit, so do the tokens, and one request
        # takes them all without a token estimate per text.
        sizes = [len(texts[i].encode("utf-8", "surrogatepass")) for i in indices]
        if (
            len(indices) <= self.max_inputs_per_request
            and sum(sizes) <= self.max_tokens_per_request
            and max(sizes, default=0) <= self.max_tokens_per_input
        ):
            return [indices]
        estimates = {i: estimate_tokens(texts[i]) for i in indices}
        alone = [[i] for i in indices if estimates[i] > self.max_tokens_per_input]
        packed = pack(
            (i for i in indices if estimates[i] <= self.max_tokens_per_input),
            weight=estimates.__getitem__,
            max_weight=self.max_tokens_per_request,
            max_items=self.max_inputs_per_request,
        )
        return alone + packed

    async def _embed_group(
        self, texts: Sequence[str], group: list[int], batch: EmbeddingBatch, counters: _Counters
    ) -> None:
        try:
            vectors = await self._request([texts[i] for i in group], counters)
        except _InputProblem as problem:
            if len(group) == 1:
                err = problem.error
                batch.errors[group[0]] = EmbeddingInputError(
                    f"input {group[0]} rejected: {err.message}", status=err.status, code=err.code
                )
                return
            mid = len(group) // 2
            log.info("embeddings: input problem in a %d-input request, bisecting", len(group))
            await asyncio.gather(
                self._embed_group(texts, group[:mid], batch, counters),
                self._embed_group(texts, group[mid:], batch, counters),
            )
            return
        for i, vec in zip(group, vectors):  # noqa: B905 - lengths validated in _parse
            batch.vectors[i] = vec

    async def _request(self, inputs: list[str], counters: _Counters) -> list[array[float]]:
        """One logical request with retries. Raises _InputProblem or EmbeddingError."""
        payload: dict[str, Any] = {
            "input": inputs,
            "model": self.model,
            "encoding_format": self.encoding_format,
        }
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        client = self._http()
        assert self._sem is not None
        sem = self._sem

        async def attempt() -> list[array[float]]:
            counters.requests += 1
            try:
                async with sem:  # only the HTTP exchange holds a slot, not the backoff
                    resp = await client.post("/embeddings", json=payload)
            except httpx.HTTPError as exc:  # timeouts, connection errors, protocol errors
                raise EmbeddingError(self._transport_message(exc), retryable=True) from None
            if resp.status_code == 200:
                try:
                    vectors, tokens = self._parse(resp, len(inputs))
                except EmbeddingError as exc:
                    exc.headers = dict(resp.headers)
                    raise
                counters.prompt_tokens += tokens
                return vectors
            error = self._error_from(resp)
            if error.status == 413 or (error.status == 400 and self._is_input_problem(resp, error)):
                raise _InputProblem(error)
            raise error

        def count_retry(_: ServiceError) -> None:
            counters.retries += 1

        retrier = Retrier(
            self.retry_policy,
            service="embeddings",
            logger=log,
            rng=self._rng,
            on_retry=count_retry,
            breaker=self.breaker,
        )
        return await retrier.call_async(attempt)

    # --- response handling -----------------------------------------------------------------
    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        # OpenAI echoes a masked key on 401; keep no fragment of it either.
        return _ECHOED_KEY_RE.sub(r"\1***", text)

    def _transport_message(self, exc: httpx.HTTPError) -> str:
        detail = str(exc) or type(exc).__name__
        return self._redact(f"embeddings request failed: {type(exc).__name__}: {detail}")

    def _error_from(self, resp: httpx.Response) -> EmbeddingError:
        status = resp.status_code
        code: str | None = None
        try:
            err = resp.json().get("error") or {}
            message = str(err.get("message") or f"HTTP {status}")
            code = err.get("code") or (
                err.get("type") if err.get("type") == "insufficient_quota" else None
            )
        except (ValueError, AttributeError):
            message = f"HTTP {status}: {resp.text[:200]}"
        retryable = is_retryable_status(status, code)
        return EmbeddingError(
            self._redact(f"embeddings API error {status}: {message}"),
            retryable=retryable,
            status=status,
            code=code,
            headers=resp.headers,
        )

    @staticmethod
    def _is_input_problem(resp: httpx.Response, error: EmbeddingError) -> bool:
        if error.code in _INPUT_PROBLEM_CODES or _INPUT_PROBLEM_RE.search(error.message):
            return True
        try:
            return (resp.json().get("error") or {}).get("param") == "input"
        except (ValueError, AttributeError):
            return False

    def _parse(self, resp: httpx.Response, n: int) -> tuple[list[array[float]], int]:
        """Decode and validate a 200 response; raises retryable EmbeddingError if unusable."""
        try:
            body = resp.json()
            data = body["data"]
            if not isinstance(data, list):
                raise TypeError("data is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embedder returned a malformed response ({type(exc).__name__})",
                retryable=True,
                status=resp.status_code,
                code="malformed_response",
            ) from None
        if len(data) != n:
            raise EmbeddingError(
                f"embedder returned {len(data)} vectors for {n} inputs",
                retryable=True,
                status=resp.status_code,
                code="wrong_count",
            )
        try:
            ordered = sorted(data, key=lambda d: d["index"])
            if [d["index"] for d in ordered] != list(range(n)):
                raise ValueError("indices are not 0..n-1")
            vectors = [self._decode(d["embedding"]) for d in ordered]
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(
                f"embedder returned undecodable embeddings ({exc})",
                retryable=True,
                status=resp.status_code,
                code="malformed_response",
            ) from None
        expected = self.expected_dimensions or len(vectors[0])
        bad = next((len(v) for v in vectors if len(v) != expected), None)
        if bad is not None:
            raise EmbeddingError(
                f"embedder returned vectors of {bad} dimensions, expected {expected}",
                retryable=True,
                status=resp.status_code,
                code="wrong_dimensions",
            )
        usage = body.get("usage") or {}
        return vectors, int(usage.get("prompt_tokens") or 0)

    @staticmethod
    def _decode(embedding: Any) -> array[float]:
        if isinstance(embedding, str):  # base64 of little-endian float32
            raw = base64.b64decode(embedding, validate=True)
            if len(raw) % 4:
                raise ValueError("base64 embedding is not a whole number of float32")
            vector = array("f")
            vector.frombytes(raw)
            if sys.byteorder == "big":
                vector.byteswap()
            return vector
        if isinstance(embedding, list):
            return array("f", embedding)  # TypeError for anything but numbers
        raise TypeError(f"embedding is {type(embedding).__name__}")
