from __future__ import annotations

import email.utils
import random

import pytest

from docpipe_dagster.core.retry import RetryPolicy, is_retryable_status, parse_retry_after


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
