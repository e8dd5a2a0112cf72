"""What a stage did to a batch, shaped for asset metadata and the CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageReport:
    stage: str
    documents: int = 0  # documents this stage worked on in this run
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # already past this stage (re-runs) or not in a state it handles
    external_calls: int = 0
    counters: dict[str, int | float] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def count(self, name: str, amount: int | float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def fail(self, storage_key: str, reason: str, **extra: Any) -> None:
        self.failed += 1
        self.failures.append(
            {"storage_key": storage_key, "stage": self.stage, "reason": reason, **extra}
        )

    def finish(self) -> StageReport:
        self.seconds = round(time.perf_counter() - self.started, 4)
        return self

    def metrics(self) -> dict[str, int | float]:
        """Flat numbers: the UI plots each of them over time."""
        return {
            "documents": self.documents,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "external_calls": self.external_calls,
            "seconds": self.seconds,
            **self.counters,
        }
