"""Retries for calls to external services: the policy, the error base, one helper (no dagster).

Every client makes ONE attempt in a function that raises a `ServiceError` (its own
subclass: the client classifies its errors, nothing else) and hands it to
a `Retrier`, which waits, logs and gives up the same way for every service.

Exponential backoff with *full jitter* (delay ~ uniform(0, min(cap, base * 2**(n-1)))), which
spreads concurrent retries out instead of synchronising them. A delay the server asks for
(`retry-after-ms`, `retry-after` seconds or HTTP date) wins over the computed backoff, because
retrying earlier than the server allows only earns another 429.

The exception tree (every error a client raises is a `ServiceError`; a `Retrier` retries
exactly the ones with `retryable=True`, and the circuit breaker counts those as "down"):

    ServiceError                 core/retry.py: message, retryable, status, code, headers, kind
    ├── ServiceUnavailable       core/breaker.py: the breaker is open, nothing more is sent
    ├── ParseError               clients/llamaparse.py: no document (kind: error, stuck, http,
    │                            unsupported, timeout; job_id)
    ├── EmbeddingError           clients/embeddings.py: a failed embeddings call
    │   └── EmbeddingInputError  one input unusable (never retryable)
    └── StorageError             clients/storage/base.py: a storage backend call
        ├── InvalidKeyError      an unusable storage key (also a ValueError)
        └── ObjectNotFoundError  no such object (also a KeyError)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

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


class ServiceError(Exception):
    """Base of every client's errors: what went wrong and whether trying again may help.

    `retryable`: a later attempt may succeed (timeouts, 429, 5xx, a mangled body);
    `status`: the HTTP status when there was a response; `code`: the API's error code;
    `headers`: the response headers, so a retry honours the server's Retry-After;
    `kind`: what went wrong when there was no status, as a person reads it ("timeout"),
    else None (the breaker's reason then names the class).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.code = code
        self.headers = dict(headers) if headers is not None else None
        self.kind = kind

    def gave_up(self, attempts: int) -> ServiceError:
        """The same error, saying how many attempts it outlasted (same class and fields)."""
        # Not copy.copy: that rebuilds from args, which a subclass's __init__ may not take.
        error = type(self).__new__(type(self), *self.args)
        error.__dict__.update(self.__dict__)
        error.message = f"{self.message} (gave up after {attempts} attempts)"
        error.args = (error.message,)
        return error


_T = TypeVar("_T")


class Retrier:
    """Retries for one service's calls: `Retrier(policy, service=..., logger=...)`, then
    `retrier.call(attempt)` (sync) or `await retrier.call_async(attempt)`.

    `attempt` is a zero-argument function (or coroutine function) that makes ONE try and
    raises a `ServiceError` (subclass) on failure; any other exception propagates at once,
    and so does a ServiceError with `retryable=False`. Waits follow `policy.delay`
    (jittered exponential backoff; a server's `retry-after-ms` / `Retry-After`, taken from
    `error.headers`, wins). Each retry is logged at WARNING on `logger` as
    "<service>: attempt N failed (<message>); retrying in D.DDDs" (the delay is the last
    argument), then `on_retry(error)` is called (e.g. to count it). When the policy's
    attempts run out, the last error is raised again, same class and fields, its message
    ending "(gave up after N attempts)". `rng` makes the jitter reproducible in tests.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        service: str,
        logger: logging.Logger,
        rng: random.Random | None = None,
        on_retry: Callable[[ServiceError], None] | None = None,
        breaker: Any | None = None,
    ) -> None:
        self.policy = policy
        # A core.breaker.CircuitBreaker shared by the client's calls: checked before each
        # try, told of each outcome; once open, calls raise ServiceUnavailable at once.
        self.breaker = breaker
        self.service = service
        self.logger = logger
        self.rng = rng
        self.on_retry = on_retry

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        headers = error.headers if isinstance(error, ServiceError) else None
        return self.policy.delay(state.attempt_number, headers, rng=self.rng)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        assert isinstance(error, ServiceError)
        delay = state.next_action.sleep if state.next_action else 0.0
        self.logger.warning(
            "%s: attempt %d failed (%s); retrying in %.3fs",
            self.service,
            state.attempt_number,
            error.message,
            delay,
        )
        if self.breaker is not None:
            self.breaker.retried()
        if self.on_retry is not None:
            self.on_retry(error)

    def _options(self) -> dict[str, Any]:
        return {
            "stop": tenacity.stop_after_attempt(self.policy.max_attempts),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(
                lambda exc: isinstance(exc, ServiceError) and exc.retryable
            ),
            "before_sleep": self._before_sleep,
            "reraise": True,
        }

    @staticmethod
    def _gave_up(error: ServiceError, attempts: int) -> ServiceError:
        # A non-retryable error is the answer, not a give-up.
        return error.gave_up(attempts) if error.retryable else error

    def call(self, attempt: Callable[[], _T]) -> _T:
        retrying = tenacity.Retrying(sleep=time.sleep, **self._options())
        try:
            return retrying(attempt)
        except ServiceError as error:
            raise self._gave_up(error, retrying.statistics.get("attempt_number", 1)) from None

    async def call_async(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        retrying = tenacity.AsyncRetrying(sleep=asyncio.sleep, **self._options())
        breaker = self.breaker

        async def guarded() -> _T:
            breaker.check()
            try:
                result = await attempt()
            except Exception as error:  # a cancellation is no outcome of the service
                breaker.record(error)
                breaker.check()  # the failure that opened it ends the retries too
                raise
            breaker.success()
            return result

        try:
            return await retrying(guarded if breaker is not None else attempt)
        except ServiceError as error:
            raise self._gave_up(error, retrying.statistics.get("attempt_number", 1)) from None
