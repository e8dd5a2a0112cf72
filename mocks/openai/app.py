"""OpenAI embeddings mock: `POST /v1/embeddings`, `GET /v1/models[/{id}]`.

Faithful to the real contract (limits, error bodies, base64 float32 encoding, rate-limit
headers) and deterministic, so search over mock vectors is meaningful:

- Token count rule: the number of regex matches of `\\w+|[^\\w\\s]` (a word or one punctuation
  mark); a token-array input counts one per element. Clients must estimate at least this.
- Embedding: feature hashing. Features are the lowercase tokens (weight 1) and adjacent word
  bigrams (weight 0.5); each feature is hashed with blake2b (stable across processes, unlike
  `hash()`) to an index in [0, D) and a sign; term frequency is damped as 1 + ln(tf); the
  vector is L2-normalised and rounded to float32 so the float and base64 encodings agree.
  Shared words -> shared coordinates -> higher cosine; identical text -> identical vector.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import struct
import threading
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from docpipe_dagster_mocks._common import MockSettings, create_mock_app
from docpipe_dagster_mocks._responses import rate_limit_headers

MAX_INPUTS = 2048
MAX_TOKENS_PER_INPUT = 8192
MAX_TOKENS_PER_REQUEST = 300_000
# model -> (default dims, whether `dimensions` may be set)
MODELS: dict[str, tuple[int, bool]] = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}
_CREATED = {"text-embedding-3-small": 1705948997, "text-embedding-3-large": 1705953180}
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_F32 = struct.Struct("<f")
_API_REF = "Please check the API reference: https://platform.openai.com/docs/api-reference."
LIMIT_REQUESTS = 10_000
LIMIT_TOKENS = 10_000_000


def count_tokens(text: str) -> int:
    """The mock's token rule (see module docstring)."""
    return len(_TOKEN_RE.findall(text))


def _features(text: str) -> Counter[str]:
    tokens = [t.lower() for t in _TOKEN_RE.findall(text)]
    feats: Counter[str] = Counter(tokens)
    words = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    # Bigrams as separate keys at half weight: word order matters a little.
    feats.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return feats


def _sparse_embedding(text: str, dims: int, model: str) -> dict[int, float]:
    """Non-zero coordinates of the embedding (vectors are sparse: a few dozen features)."""
    coords: dict[int, float] = {}
    feats = _features(text) or Counter({"<empty>": 1})
    for feat, tf in feats.items():
        weight = (0.5 if " " in feat else 1.0) * (1.0 + math.log(tf))
        digest = hashlib.blake2b(f"{model}\x00{feat}".encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        idx = h % dims
        coords[idx] = coords.get(idx, 0.0) + (weight if (h >> 63) & 1 else -weight)
    norm = math.sqrt(sum(v * v for v in coords.values()))
    if norm == 0.0:  # features cancelled out exactly; any fixed unit vector will do
        return {0: 1.0}
    # Round to float32 here so the float and base64 encodings carry identical values.
    return {i: _F32.unpack(_F32.pack(v / norm))[0] for i, v in coords.items() if v != 0.0}


def embed_text(text: str, dims: int, model: str) -> list[float]:
    """Deterministic hashed bag-of-words embedding, L2-normalised, float32-rounded."""
    vec = [0.0] * dims
    for i, v in _sparse_embedding(text, dims, model).items():
        vec[i] = v
    return vec


def embed_base64(text: str, dims: int, model: str) -> str:
    """The same embedding as little-endian float32, base64-encoded (OpenAI's base64 format)."""
    vec = embed_text(text, dims, model)
    return base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode("ascii")


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _normalise_inputs(raw: Any) -> list[str | list[int]] | None:
    """str | list[str] | list[int] | list[list[int]] -> list of inputs; None if invalid."""

    def is_tokens(x: Any) -> bool:
        return isinstance(x, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in x
        )

    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if is_tokens(raw):
        return [raw]
    if all(isinstance(x, str) for x in raw) or all(is_tokens(x) for x in raw):
        return list(raw)
    return None


class _RateWindow:
    """Per-minute request/token usage, reported in x-ratelimit-* headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.requests = 0
        self.tokens = 0

    def _roll(self) -> None:
        if time.monotonic() - self._start >= 60:
            self._start, self.requests, self.tokens = time.monotonic(), 0, 0

    def add(self, requests: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self._roll()
            self.requests += requests
            self.tokens += tokens

    def headers(self) -> dict[str, str]:
        with self._lock:
            self._roll()
            reset = max(0.001, 60 - (time.monotonic() - self._start))
            return rate_limit_headers(
                remaining_requests=LIMIT_REQUESTS - self.requests,
                remaining_tokens=LIMIT_TOKENS - self.tokens,
                reset_s=reset,
                limit_requests=LIMIT_REQUESTS,
                limit_tokens=LIMIT_TOKENS,
            )


def _model_obj(model_id: str) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": _CREATED.get(model_id, 1671217299),
        "owned_by": "system",
    }


def create_app(settings: MockSettings) -> FastAPI:
    app = create_mock_app("openai", settings, auth="openai")
    window = _RateWindow()
    app.state.rate_window = window
    app.state.extra_headers = window.headers

    @app.get("/v1/models")
    async def list_models() -> dict:
        window.add(requests=1)
        return {"object": "list", "data": [_model_obj(m) for m in MODELS]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> Any:
        window.add(requests=1)
        if model_id not in MODELS:
            return _not_found(model_id)
        return _model_obj(model_id)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        window.add(requests=1)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            )
        if not isinstance(body, dict):
            return _error(400, f"'$' is invalid. {_API_REF}")
        if settings.per_input_ms > 0:  # a real model's time grows with the inputs it embeds
            inputs = _normalise_inputs(body.get("input")) or []
            await asyncio.sleep(settings.per_input_ms * len(inputs) / 1000)
        return _embed(request, body, window)

    return app


def _not_found(model: str) -> JSONResponse:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def _embed(request: Request, body: dict, window: _RateWindow) -> Response:
    model = body.get("model")
    if not model or not isinstance(model, str):
        return _error(400, "you must provide a model parameter")
    if model not in MODELS:
        return _not_found(model)
    default_dims, shortenable = MODELS[model]
    dims = body.get("dimensions")
    if dims is not None:
        if not shortenable:
            return _error(400, "This model does not support specifying dimensions.")
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= default_dims:
            return _error(
                400,
                f"Invalid value for 'dimensions' = {dims}. Must be between 1 and {default_dims}.",
                param="dimensions",
            )
    else:
        dims = default_dims
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        return _error(
            400,
            f"Invalid value for 'encoding_format' = {encoding}. Supported values are: "
            "'float' and 'base64'.",
            param="encoding_format",
        )
    if "input" not in body:
        return _error(400, "'input' is a required property", param="input")
    inputs = _normalise_inputs(body["input"])
    if inputs is None:
        return _error(400, f"'$.input' is invalid. {_API_REF}", param="input")
    if len(inputs) > MAX_INPUTS:
        return _error(
            400,
            f"'$.input' is invalid: {len(inputs)} inputs, the maximum is {MAX_INPUTS} inputs "
            "per request.",
            param="input",
        )
    counts: list[int] = []
    for item in inputs:
        if len(item) == 0:
            return _error(400, f"'$.input' is invalid. {_API_REF}", param="input")
        n = len(item) if isinstance(item, list) else count_tokens(item)
        if n > MAX_TOKENS_PER_INPUT:
            return _error(
                400,
                f"This model's maximum context length is {MAX_TOKENS_PER_INPUT} tokens, however "
                f"you requested {n} tokens ({n} in your prompt; 0 for the completion). Please "
                "reduce your prompt; or completion length.",
            )
        counts.append(n)
    total = sum(counts)
    if total > MAX_TOKENS_PER_REQUEST:
        return _error(
            400,
            f"Requested {total} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request",
            code="max_tokens_per_request",
        )
    window.add(tokens=total)

    faults = request.app.state.faults
    path = request.url.path
    out_dims = dims
    if faults.take("wrong_dimensions", path):
        out_dims = max(1, dims // 2) if dims > 1 else 2
    if faults.take("wrong_count", path) and inputs:
        inputs = inputs[:-1]

    data = []
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(f"tok{t}" for t in item)
        emb: Any = (
            embed_base64(text, out_dims, model)
            if encoding == "base64"
            else embed_text(text, out_dims, model)
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")
