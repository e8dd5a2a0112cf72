"""Stop calling a service that is down: after a run of consecutive failures, fail fast.

A batch of 300 documents against a parser that answers 503 to everything would otherwise
spend every document's retries (minutes) and mark each one failed. With a breaker shared by
one client's requests, the first few failures open it; every later call raises
ServiceUnavailable at once, the stage leaves the documents it had not finished queued with no
attempt used, and the run fails with one reason. No Dagster import.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from docpipe_dagster.core.retry import ServiceError

# A handful: as many consecutive failures as one request may spend on its own retries (the
# clients make 5-6 attempts), so even a batch that needs a single request stops on an outage.
DEFAULT_THRESHOLD = 5


class ServiceUnavailable(ServiceError):
    """The service failed `threshold` times in a row; nothing more is sent this run.

    Not retryable within the run; not the document's fault either: the stage leaves the
    documents it had not finished where they were, with no attempt counted.
    """

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(reason, retryable=False, code="SERVICE_UNAVAILABLE")
        self.service = service
        self.reason = reason


@dataclass
class CircuitBreaker:
    """Counts consecutive failures (connection errors, 5xx, 429s with no success between);
    any success closes it again. Once open it stays open for the client's lifetime (a run)."""

    service: str
    url: str
    threshold: int = DEFAULT_THRESHOLD
    clock: Callable[[], float] = time.monotonic
    consecutive: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    first_failure_at: float | None = None
    opened_at: float | None = None
    # Every request's outcome and the retries made, over the client's life (for the metrics).
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def reason(self) -> str:
        seen = ", ".join(f"{kind} ×{n}" for kind, n in self.kinds.most_common())
        span = (self.opened_at or self.clock()) - (self.first_failure_at or self.clock())
        return f"{self.service} at {self.url} unavailable: {seen} in {span:.1f} s"

    def check(self) -> None:
        """Call before each request: raises ServiceUnavailable when open."""
        if self.opened_at is not None:
            raise ServiceUnavailable(self.service, self.reason)

    def success(self) -> None:
        self.outcomes["ok"] += 1
        if self.opened_at is None:
            self.consecutive = 0
            self.kinds.clear()
            self.first_failure_at = None

    def record(self, error: BaseException) -> None:
        """Count a failed request: only what says the service is down (retryable errors:
        connection, timeout, 429, 5xx); a 400 or a bad input is the request's fault."""
        self.outcomes[outcome_of(error)] += 1
        if isinstance(error, ServiceError) and error.retryable:
            self.failure(str(error.status) if error.status else error.kind or type(error).__name__)

    def retried(self) -> None:
        """The client is about to try a failed request again."""
        self.retries += 1

    def failure(self, kind: str) -> None:
        """kind: what went wrong, as a person reads it ('503', '429', 'ConnectError')."""
        if self.opened_at is not None:
            return
        if self.consecutive == 0:
            self.first_failure_at = self.clock()
        self.consecutive += 1
        self.kinds[kind] += 1
        if self.consecutive >= self.threshold:
            self.opened_at = self.clock()


def outcome_of(error: BaseException) -> str:
    """A failed request's outcome, from a small fixed set (a metric label)."""
    status = error.status if isinstance(error, ServiceError) else None
    if isinstance(status, int):
        if status == 429:
            return "rate_limited"
        if status >= 500:
            return "server_error"
        if status >= 400:
            return "client_error"
        return "malformed"
    kind = error.kind if isinstance(error, ServiceError) else None
    text = f"{kind or ''} {type(error).__name__}".lower()
    return "timeout" if "timeout" in text else "unreachable"
