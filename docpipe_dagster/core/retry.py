"""Retry policy for calls to external services (pure logic, no dagster, no I/O).

Exponential backoff with *full jitter* (delay ~ uniform(0, min(cap, base * 2**(n-1)))), which
spreads concurrent retries out instead of synchronising them. A delay the server asks for
(`retry-after-ms`, `retry-after` seconds or HTTP date) wins over the computed backoff, because
retrying earlier than the server allows only earns another 429.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

# 408 timeout, 409 conflict (lock contention), 429 rate limit, 5xx server trouble.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# 429s that waiting cannot fix.
_NON_RETRYABLE_CODES = frozenset({"insufficient_quota"})


def is_retryable_status(status: int, error_code: str | None = None) -> bool:
    """Whether a request that got HTTP `status` (with API error `code`) is worth retrying."""
    if error_code in _NON_RETRYABLE_CODES:
        return False
    return status in _RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Server-requested delay in seconds from `retry-after-ms` or `retry-after`, else None.

    `retry-after` may be seconds (int or float) or an HTTP date; `now` (epoch seconds) is for
    tests. Negative or unparseable values are ignored.
    """
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ms = lower.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
            if ms >= 0:
                return ms / 1000.0
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. `attempt` below is the 1-based number of the attempt
    that just failed."""

    max_attempts: int = 6  # total attempts, including the first
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0  # cap on the computed backoff
    max_server_delay_s: float = 60.0  # cap on a server-requested delay
    jitter: bool = True  # full jitter; False gives the plain exponential (for tests/logs)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_server_delay_s < 0:
            raise ValueError("delays must be >= 0")

    def should_retry(self, attempt: int) -> bool:
        """True if another attempt is allowed after `attempt` failed."""
        return attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Computed delay after failed attempt `attempt` (no server hint)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** max(0, attempt - 1)))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)

    def delay(
        self,
        attempt: int,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        now: float | None = None,
    ) -> float:
        """Seconds to wait before the next attempt: the server's delay if it gave one (capped
        at max_server_delay_s), else the jittered backoff."""
        server = parse_retry_after(headers, now=now)
        if server is not None:
            return min(server, self.max_server_delay_s)
        return self.backoff(attempt, rng)
