from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time

import pytest

from docpipe_dagster.core.retry import (
    Retrier,
    RetryPolicy,
    ServiceError,
    is_retryable_status,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (408, None, True),
        (409, None, True),
        (429, None, True),
        (429, "rate_limit_exceeded", True),
        (429, "insufficient_quota", False),
        (500, None, True),
        (502, None, True),
        (503, None, True),
        (599, None, True),
        (400, None, False),
        (401, "invalid_api_key", False),
        (403, None, False),
        (404, "model_not_found", False),
        (200, None, False),
    ],
)
def test_is_retryable_status(status: int, code: str | None, expected: bool) -> None:
    assert is_retryable_status(status, code) is expected


def test_retry_after_ms_wins_over_seconds() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == pytest.approx(0.25)


def test_retry_after_seconds_and_case_insensitive() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"retry-after": "soon"}, {"retry-after": "-1"}, {"retry-after-ms": "-5"}],
)
def test_retry_after_absent_or_invalid(headers: dict | None) -> None:
    assert parse_retry_after(headers) is None


def test_bad_ms_falls_back_to_seconds() -> None:
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "4"}) == 4.0


def test_backoff_without_jitter_is_capped_exponential() -> None:
    p = RetryPolicy(base_delay_s=0.5, max_delay_s=3.0, jitter=False)
    assert [p.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_stays_within_bounds_and_varies() -> None:
    p = RetryPolicy(base_delay_s=1.0, max_delay_s=4.0)
    rng = random.Random(1)
    for attempt in range(1, 8):
        ceiling = min(4.0, 2 ** (attempt - 1))
        samples = [p.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) - min(samples) > ceiling / 2  # full jitter spreads the whole range


def test_backoff_is_deterministic_with_seeded_rng() -> None:
    p = RetryPolicy()
    a = [p.backoff(n, random.Random(42)) for n in range(1, 6)]
    b = [p.backoff(n, random.Random(42)) for n in range(1, 6)]
    c = [p.backoff(n, random.Random(43)) for n in range(1, 6)]
    assert a == b
    assert a != c


def test_delay_honours_server_hint_and_caps_it() -> None:
    p = RetryPolicy(base_delay_s=10.0, max_server_delay_s=5.0)
    assert p.delay(1, {"retry-after-ms": "20"}) == pytest.approx(0.02)
    assert p.delay(1, {"retry-after": "120"}) == 5.0
    # No hint: jittered backoff within the exponential ceiling.
    assert 0.0 <= p.delay(1, None, rng=random.Random(0)) <= 10.0


def test_should_retry_counts_total_attempts() -> None:
    p = RetryPolicy(max_attempts=3)
    assert [p.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert RetryPolicy(max_attempts=1).should_retry(1) is False


def test_invalid_policy_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=-1)


# --- the shared helper ---------------------------------------------------------------------

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002, jitter=False)


class _Flaky(ServiceError):
    pass


def test_helper_retries_transient_errors_and_honours_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []

    def attempt() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise _Flaky("busy", retryable=True, status=429, headers={"retry-after-ms": "150"})
        return "ok"

    caplog.set_level(logging.WARNING, logger="test.retry")
    assert (
        Retrier(FAST, service="svc", logger=logging.getLogger("test.retry")).call(attempt) == "ok"
    )
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.14
    (record,) = [r for r in caplog.records if r.name == "test.retry"]
    assert record.getMessage().startswith("svc: attempt 1 failed (busy); retrying in 0.150s")


def test_helper_gives_up_with_the_last_error_and_its_class() -> None:
    seen: list[ServiceError] = []

    def attempt() -> None:
        raise _Flaky("down", retryable=True, status=503)

    with pytest.raises(_Flaky, match=r"^down \(gave up after 3 attempts\)$") as info:
        Retrier(FAST, service="svc", logger=logging.getLogger("t"), on_retry=seen.append).call(
            attempt
        )
    assert info.value.status == 503 and info.value.retryable
    assert len(seen) == 2  # two retries between three attempts


def test_helper_does_not_retry_what_cannot_succeed() -> None:
    calls = 0

    def attempt() -> None:
        nonlocal calls
        calls += 1
        raise _Flaky("bad key", retryable=False, status=401)

    with pytest.raises(_Flaky, match=r"^bad key$"):
        Retrier(FAST, service="svc", logger=logging.getLogger("t")).call(attempt)
    assert calls == 1


def test_helper_lets_other_exceptions_through_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("not a service error")

    with pytest.raises(KeyError):
        asyncio.run(Retrier(FAST, service="svc", logger=logging.getLogger("t")).call_async(attempt))
    assert calls == 1


def test_async_helper_retries() -> None:
    calls = 0

    async def attempt() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _Flaky("flaky", retryable=True)
        return calls

    assert (
        asyncio.run(Retrier(FAST, service="svc", logger=logging.getLogger("t")).call_async(attempt))
        == 3
    )
