"""The circuit breaker counts every request's outcome and retries (for the metrics), from a
small fixed set of outcomes the exporter declares."""

from __future__ import annotations

import httpx

from docpipe_dagster.core.breaker import CircuitBreaker, outcome_of
from docpipe_dagster.core.retry import ServiceError
from docpipe_dagster.metrics.names import OUTCOMES


def test_outcomes_are_the_declared_ones() -> None:
    errors = [
        ServiceError("429", retryable=True, status=429),
        ServiceError("503", retryable=True, status=503),
        ServiceError("400", retryable=False, status=400),
        ServiceError("bad json", retryable=True, status=200),
        ServiceError("no answer", retryable=True, kind="timeout"),
        httpx.ConnectError("refused"),
    ]
    seen = [outcome_of(e) for e in errors]
    assert seen == [
        "rate_limited",
        "server_error",
        "client_error",
        "malformed",
        "timeout",
        "unreachable",
    ]
    assert set(seen) | {"ok"} == set(OUTCOMES)


def test_the_breaker_counts_outcomes_and_retries_even_once_open() -> None:
    breaker = CircuitBreaker("parser", "http://x", threshold=2)
    breaker.success()
    breaker.record(ServiceError("429", retryable=True, status=429))
    breaker.retried()
    breaker.record(ServiceError("503", retryable=True, status=503))
    assert breaker.is_open
    breaker.record(ServiceError("503", retryable=True, status=503))
    assert dict(breaker.outcomes) == {"ok": 1, "rate_limited": 1, "server_error": 2}
    assert breaker.retries == 1
