"""EmbeddingsClient against the REAL OpenAI API (costs a fraction of a cent).

Runs only with OPENAI_API_KEY set and DOCPIPE_REAL_OPENAI=1; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import math
import os

import pytest

from docpipe_dagster.clients.embeddings import EmbeddingError, EmbeddingsClient

pytestmark = [
    pytest.mark.real_services,
    pytest.mark.skipif(
        not (os.environ.get("OPENAI_API_KEY") and os.environ.get("DOCPIPE_REAL_OPENAI") == "1"),
        reason="real OpenAI test: set OPENAI_API_KEY and DOCPIPE_REAL_OPENAI=1 to run",
    ),
]
BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")


def _client(**kwargs: object) -> EmbeddingsClient:
    return EmbeddingsClient(BASE_URL, os.environ["OPENAI_API_KEY"], **kwargs)  # type: ignore[arg-type]


def test_real_embeddings_both_encodings_and_bad_input_isolated() -> None:
    texts = ["The cat sat on the mat.", "", "A kitten rests on a rug.", "word " * 9000]

    async def go() -> tuple:
        async with (
            _client(dimensions=256) as b64,
            _client(dimensions=256, encoding_format="float") as flt,
        ):
            return await b64.embed(texts), await flt.embed(texts[:1]), await b64.health()

    batch, floats, latency_ms = asyncio.run(go())
    assert set(batch.errors) == {1, 3}
    assert "maximum context length" in batch.errors[3].message or batch.errors[3].status == 400
    assert len(batch.vectors[0]) == 256 and len(batch.vectors[2]) == 256
    assert math.isclose(sum(x * x for x in batch.vectors[0]), 1.0, rel_tol=1e-3)
    # The two encodings carry the same float32 values (the model itself may jitter slightly).
    assert sum(a * b for a, b in zip(batch.vectors[0], floats.vectors[0], strict=True)) > 0.99
    assert batch.prompt_tokens > 0 and latency_ms > 0


def test_real_wrong_key_is_401_and_not_shown() -> None:
    key = "sk-docpipe-deliberately-wrong-key-000000000000"
    client = EmbeddingsClient(BASE_URL, key)
    with pytest.raises(EmbeddingError) as exc:
        asyncio.run(client.embed(["hello"]))
    assert exc.value.status == 401 and exc.value.retryable is False
    assert key not in str(exc.value) and key[-4:] not in str(exc.value)
