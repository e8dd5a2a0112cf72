from __future__ import annotations

import pytest

from docpipe_dagster.core.breaker import CircuitBreaker, ServiceUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures_with_a_readable_reason() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("parser", "http://p:1", threshold=3, clock=clock)
    for _ in range(2):
        breaker.failure("503")
        clock.now += 1.5
        breaker.check()  # still closed
    breaker.failure("503")
    assert breaker.is_open
    with pytest.raises(ServiceUnavailable) as caught:
        breaker.check()
    assert caught.value.service == "parser"
    assert str(caught.value) == "parser at http://p:1 unavailable: 503 ×3 in 3.0 s"


def test_a_success_between_failures_keeps_it_closed() -> None:
    breaker = CircuitBreaker("embedder", "http://e", threshold=2)
    for _ in range(5):
        breaker.failure("429")
        breaker.success()
    breaker.check()
    assert not breaker.is_open and breaker.consecutive == 0


def test_mixed_kinds_are_all_reported_and_it_stays_open() -> None:
    breaker = CircuitBreaker("parser", "http://p", threshold=3)
    breaker.failure("ConnectError")
    breaker.failure("503")
    breaker.failure("503")
    breaker.success()  # too late: a run that saw the service die does not flap back
    assert breaker.is_open
    assert "503 ×2" in breaker.reason and "ConnectError ×1" in breaker.reason
