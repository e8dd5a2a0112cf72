"""A Prometheus collector that reads the pipeline's state from the database on each scrape.

The work happens in short-lived run processes, so no process holds the numbers: each scrape
runs one statement (store/metrics.py) and turns its snapshot into metric families.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from docpipe_dagster.metrics import names
from docpipe_dagster.store.metrics import FOLD_ABOVE, fold_tallies, snapshot

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


def _le(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    bounds: Iterable[float],
    counts: dict[float, float],
    total_sum: float,
) -> None:
    """Add one histogram series from counts per bucket (not cumulative) keyed by `le`."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound in bounds:
        running += counts.get(float(bound), 0)
        buckets.append((_le(bound), running))
    running += counts.get(float("inf"), 0)
    buckets.append(("+Inf", running))
    family.add_metric(labels, buckets, total_sum)


class PipelineCollector(Collector):
    """Every pipeline metric from one database read; `connection()` lends a connection."""

    def __init__(self, connection: ConnectionFactory) -> None:
        self._connection = connection

    def describe(self) -> list[Metric]:
        return []  # registration must not query the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        snap: dict[str, Any] | None = None
        try:
            with self._connection() as conn:
                snap = snapshot(conn, names.COUNTER_NAMES, names.OUTCOMES)
                conn.commit()  # the read ends here; a fold below is its own transaction
                self._fold(conn, snap)
        except Exception as exc:  # a scrape reports the database down, it never fails
            log.warning("metrics: cannot read the database: %s", exc)
        yield GaugeMetricFamily(
            "docpipe_database_up",
            "1 when the exporter read the database on this scrape, else 0.",
            value=1 if snap is not None else 0,
        )
        if snap is not None:
            yield from families(snap)
        yield GaugeMetricFamily(
            "docpipe_metrics_read_seconds",
            "Seconds this scrape spent reading the database.",
            value=time.perf_counter() - started,
        )

    @staticmethod
    def _fold(conn: psycopg.Connection, snap: dict[str, Any]) -> None:
        """Fold the tally tables that grew past FOLD_ABOVE rows (every few hundred batches),
        so later scrapes read less; a failure leaves them as they are."""
        grown = [t for t, n in (snap.get("rows") or {}).items() if (n or 0) > FOLD_ABOVE]
        if not grown:
            return
        try:
            fold_tallies(conn, grown, names.COUNTER_NAMES, names.OUTCOMES)
        except Exception as exc:
            log.warning("metrics: could not fold %s: %s", ", ".join(grown), exc)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def families(snap: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one snapshot (docs/OPERATIONS.md describes each)."""
    now = float(snap["now"])
    by_state: dict[str, float] = {}
    failed_now: dict[tuple[str, str, str], float] = {}
    for row in snap["states"]:
        by_state[row["state"]] = by_state.get(row["state"], 0) + row["n"]
        if row["state"] == "failed":
            key = (
                names.bounded(row["stage"]),
                names.bounded(row["code"]),
                "true" if row["retrying"] else "false",
            )
            failed_now[key] = failed_now.get(key, 0) + row["n"]
    documents = GaugeMetricFamily(
        "docpipe_documents",
        "Document versions by state (`docpipe status` counts each document's newest version).",
        labels=["state"],
    )
    for state in names.STATES:
        documents.add_metric([state], by_state.get(state, 0))
    yield documents

    yield _gauge(
        "docpipe_backlog_documents", "Registered, not yet started.", by_state.get("uploaded", 0)
    )
    oldest = snap["backlog_oldest"]
    yield _gauge(
        "docpipe_backlog_oldest_age_seconds",
        "Age of the oldest registered, not yet started document (0 when none waits).",
        max(now - float(oldest), 0.0) if oldest is not None else 0.0,
    )
    yield _gauge(
        "docpipe_in_flight_documents",
        "Documents a stage has started and not finished (parsing to embedded).",
        sum(by_state.get(s, 0) for s in names.IN_FLIGHT),
    )
    failed = GaugeMetricFamily(
        "docpipe_failed_documents",
        "Documents failed now, by stage and failure code; retrying: a retry is scheduled.",
        labels=["stage", "code", "retrying"],
    )
    for key, value in sorted(failed_now.items()):
        failed.add_metric(list(key), value)
    yield failed
    yield _gauge(
        "docpipe_dead_letter_documents",
        "Failed documents with no retry scheduled: they wait for a person (`docpipe retry`).",
        sum(v for k, v in failed_now.items() if k[2] == "false"),
    )

    yield from _tally_families(snap, now)
    yield from _stage_families(snap)
    yield from _provider_families(snap)
    yield from _space_families(snap)
    buffers = snap["buffers"]
    yield _gauge("docpipe_buffered_chunks", "Chunks staged, not yet committed.", buffers["chunks"])
    yield _gauge(
        "docpipe_buffered_vectors", "Vectors staged, not yet committed.", buffers["vectors"]
    )


def _tally_families(snap: dict[str, Any], now: float) -> Iterator[Metric]:
    completed = 0.0
    chunks = 0.0
    last: float | None = None
    searchable: dict[float, float] = {}
    searchable_sum = 0.0
    failures: dict[tuple[str, str], float] = {}
    for row in snap["tallies"]:
        if row["stage"] == "commit" and row["event_type"] == "completed":
            completed += row["n"]
            chunks += row["chunks"]
            last = max(last or 0.0, float(row["last"]))
            le = row["bucket_le"]
            if le is not None:
                searchable[float(le)] = searchable.get(float(le), 0) + row["n"]
                searchable_sum += row["seconds"]
        elif row["event_type"] == "failed":
            key = (names.bounded(row["stage"]), names.bounded(row["code"]))
            failures[key] = failures.get(key, 0) + row["n"]
    yield CounterMetricFamily(
        "docpipe_documents_completed",
        "Document versions committed to search.",
        value=completed,
    )
    yield CounterMetricFamily(
        "docpipe_chunks_committed",
        "Chunks (each with its vector) committed to search.",
        value=chunks,
    )
    failed = CounterMetricFamily(
        "docpipe_document_failures",
        "Document failures by stage and failure code (a retried document can fail again).",
        labels=["stage", "code"],
    )
    for key, value in sorted(failures.items()):
        failed.add_metric(list(key), value)
    yield failed
    family = HistogramMetricFamily(
        "docpipe_upload_to_searchable_seconds",
        "Per document version: from its registration to its commit to search.",
        labels=[],
    )
    histogram(family, [], names.SEARCHABLE_BOUNDS, searchable, searchable_sum)
    yield family
    yield _gauge(
        "docpipe_last_commit_timestamp_seconds",
        "Unix time of the last commit to search (0 when none yet).",
        float(last) if last is not None else 0.0,
    )


def _stage_families(snap: dict[str, Any]) -> Iterator[Metric]:
    family = HistogramMetricFamily(
        "docpipe_stage_batch_seconds", "Seconds a stage spent on one batch.", labels=["stage"]
    )
    per_stage: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for row in snap["stage_runs"]:
        counts = per_stage.setdefault(row["stage"], {})
        counts[float(row["le"])] = counts.get(float(row["le"]), 0) + row["n"]
        sums[row["stage"]] = sums.get(row["stage"], 0.0) + row["seconds"]
    for stage in sorted(set(per_stage) | set(names.STAGES)):
        histogram(
            family, [stage], names.STAGE_BOUNDS, per_stage.get(stage, {}), sums.get(stage, 0.0)
        )
    yield family

    totals = {
        (r["stage"], name): value
        for r in snap["stage_counters"]
        for name, value in (r["totals"] or {}).items()
    }
    made: dict[str, CounterMetricFamily] = {}
    for (stage, counter), (metric, text, extra) in names.STAGE_COUNTERS.items():
        name = f"docpipe_{metric}"
        if name not in made:
            made[name] = CounterMetricFamily(name, text, labels=list(extra))
        made[name].add_metric(list(extra.values()), totals.get((stage, counter), 0))
    yield from made.values()


def _provider_families(snap: dict[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "docpipe_provider_requests",
        "HTTP requests to the parser and embeddings services, by outcome (rate_limited: 429).",
        labels=["service", "outcome"],
    )
    providers = {r["service"]: r for r in snap["providers"]}
    breakers = {r["service"]: r["breaker_open"] for r in snap["breakers"]}
    services = sorted(set(names.SERVICES) | set(providers))
    retries = CounterMetricFamily(
        "docpipe_provider_retries", "Requests tried again after a failure.", labels=["service"]
    )
    breaker = GaugeMetricFamily(
        "docpipe_provider_breaker_open",
        "1 when the last client of the service opened its circuit breaker (the service was "
        "down for a run), else 0.",
        labels=["service"],
    )
    for service in services:
        row = providers.get(service, {})
        outcomes = row.get("outcomes") or {}
        for outcome in names.OUTCOMES:
            requests.add_metric([names.bounded(service), outcome], outcomes.get(outcome, 0))
        retries.add_metric([names.bounded(service)], row.get("retries") or 0)
        breaker.add_metric([names.bounded(service)], 1 if breakers.get(service) else 0)
    yield requests
    yield retries
    yield breaker

    up = GaugeMetricFamily(
        "docpipe_service_up", "The health sensor's last probe: 1 ok, 0 failed.", labels=["service"]
    )
    latency = GaugeMetricFamily(
        "docpipe_service_probe_seconds",
        "The health sensor's last probe latency.",
        labels=["service"],
    )
    checked = GaugeMetricFamily(
        "docpipe_service_probe_timestamp_seconds",
        "Unix time of the health sensor's last probe.",
        labels=["service"],
    )
    for row in sorted(snap["health"], key=lambda r: r["service"]):
        service = names.bounded(row["service"])
        up.add_metric([service], 1 if row["ok"] else 0)
        latency.add_metric([service], row["latency_seconds"])
        checked.add_metric([service], row["checked_at"])
    yield up
    yield latency
    yield checked


def _space_families(snap: dict[str, Any]) -> Iterator[Metric]:
    rows = GaugeMetricFamily(
        "docpipe_vector_space_rows", "Searchable rows per vector space.", labels=["model", "dims"]
    )
    active = GaugeMetricFamily(
        "docpipe_vector_space_active", "1 for the space search reads.", labels=["model", "dims"]
    )
    index = GaugeMetricFamily(
        "docpipe_vector_space_index_state",
        "1 for the space's HNSW index state (ready, rebuilding, off).",
        labels=["model", "dims", "state"],
    )
    for space in snap["spaces"]:
        labels = [names.bounded(space["model"]), str(space["dims"])]
        rows.add_metric(labels, space["rows"])
        active.add_metric(labels, 1 if space["active"] else 0)
        for state in names.INDEX_STATES:
            index.add_metric([*labels, state], 1 if space["index_state"] == state else 0)
    yield rows
    yield active
    yield index
