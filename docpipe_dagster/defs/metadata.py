"""Stage reports as Dagster metadata: flat numbers (plotted over time) and a failure table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg

from docpipe_dagster.core.breaker import ServiceUnavailable
from docpipe_dagster.pipeline.report import StageReport

if TYPE_CHECKING:
    from docpipe_dagster.store.queries import Store

_R = TypeVar("_R")
log = logging.getLogger(__name__)

MAX_FAILURE_ROWS = 50


def failures_markdown(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "No failures."
    lines = ["| document | stage | reason |", "|---|---|---|"]
    for failure in failures[:MAX_FAILURE_ROWS]:
        reason = str(failure.get("reason", "")).replace("|", "\\|").replace("\n", " ")
        key = str(failure.get("storage_key", "")).replace("|", "\\|")
        lines.append(f"| {key} | {failure.get('stage', '')} | {reason[:300]} |")
    if len(failures) > MAX_FAILURE_ROWS:
        lines.append(f"| … {len(failures) - MAX_FAILURE_ROWS} more | | |")
    return "\n".join(lines)


def report_metadata(report: StageReport, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        name: dg.MetadataValue.float(float(value))
        if isinstance(value, float)
        else dg.MetadataValue.int(int(value))
        for name, value in report.metrics().items()
    }
    metadata["failures"] = dg.MetadataValue.md(failures_markdown(report.failures))
    metadata.update(extra)
    return metadata


def run_or_fail_fast(stage: Callable[[], Coroutine[Any, Any, _R]]) -> _R:
    """Run an async stage; a service that is down fails the step with its one reason.

    The stage has already left the documents it could not try queued with no attempt used,
    so the run failing is the whole story: no traceback, the reason on the run page.
    """
    try:
        return asyncio.run(stage())
    except ServiceUnavailable as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"service": exc.service, "code": "SERVICE_UNAVAILABLE"},
            allow_retries=False,
        ) from None


def record_stage_run(store: Store, report: StageReport, batch_key: str) -> None:
    """The stage run for the Prometheus metrics (its seconds and counters); a failure to
    record it is logged, never the stage's failure."""
    try:
        from docpipe_dagster.metrics.names import STAGE_BOUNDS

        store.record_stage_run(
            report.stage,
            batch_key,
            report.seconds,
            report.documents,
            report.counters,
            STAGE_BOUNDS,
        )
    except Exception as exc:
        log.warning("metrics: could not record the %s stage run: %s", report.stage, exc)


def record_provider_run(store: Store, client: Any) -> None:
    """A provider client's requests by outcome, retries and breaker state, when it made any."""
    from docpipe_dagster.store.metrics import ProviderRun

    breaker = getattr(client, "breaker", None)
    if breaker is None or not (breaker.outcomes or breaker.is_open):
        return
    try:
        store.record_provider_run(
            ProviderRun(breaker.service, dict(breaker.outcomes), breaker.retries, breaker.is_open)
        )
    except Exception as exc:
        log.warning("metrics: could not record the %s requests: %s", breaker.service, exc)
