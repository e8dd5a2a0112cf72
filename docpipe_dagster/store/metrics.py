"""What the Prometheus exporter reads (one statement per scrape) and what the pipeline writes
for it: stage runs, provider clients' request outcomes, the health sensor's probes.

Counters come from small insert-only tables (event_tallies, stage_runs, provider_runs) written
as the pipeline goes, so a scrape never counts the events or the chunks (sql/0007_metrics.sql).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from docpipe_dagster.store.schema import S

# One round trip: every part of the snapshot is a subquery of one SELECT, returned as JSON.
SNAPSHOT_SQL = f"""
SELECT json_build_object(
  'now', extract(epoch FROM statement_timestamp()),
  'by_state', (SELECT coalesce(json_object_agg(state, n), '{{}}') FROM (
      SELECT state, count(*) AS n FROM (
          SELECT DISTINCT ON (document_id) state FROM {S}.upload_jobs
          ORDER BY document_id, registered_at DESC) latest
      GROUP BY state) s),
  'backlog', (SELECT json_build_object('n', count(*),
                  'oldest', extract(epoch FROM min(registered_at)))
              FROM {S}.upload_jobs WHERE state = 'uploaded'),
  'failed', (SELECT coalesce(json_agg(f), '[]') FROM (
      SELECT failed_stage AS stage, coalesce(failure_code, '') AS code,
             (retryable AND next_attempt_at IS NOT NULL) AS retrying, count(*) AS n
      FROM {S}.upload_jobs WHERE state = 'failed'
      GROUP BY 1, 2, 3) f),
  'tallies', (SELECT coalesce(json_agg(t), '[]') FROM (
      SELECT stage, event_type, code, bucket_le, sum(n) AS n, sum(chunks) AS chunks,
             sum(seconds_sum) AS seconds
      FROM {S}.event_tallies GROUP BY 1, 2, 3, 4) t),
  'last_completed', (SELECT extract(epoch FROM max(recorded_at)) FROM {S}.event_tallies
                     WHERE stage = 'commit' AND event_type = 'completed'),
  'stage_runs', (SELECT coalesce(json_agg(r), '[]') FROM (
      SELECT stage, le, count(*) AS n, sum(seconds) AS seconds
      FROM {S}.stage_runs CROSS JOIN LATERAL (
          SELECT coalesce(min(b), 'Infinity'::double precision) AS le
          FROM unnest(%(stage_bounds)s::double precision[]) b WHERE b >= seconds) l
      GROUP BY 1, 2) r),
  'stage_counters', (SELECT coalesce(json_agg(c), '[]') FROM (
      SELECT r.stage, kv.key AS name, sum(kv.value::double precision) AS value
      FROM {S}.stage_runs r CROSS JOIN LATERAL jsonb_each_text(r.counters) kv
      WHERE kv.key = ANY(%(counter_names)s)
      GROUP BY 1, 2) c),
  'providers', (SELECT coalesce(json_agg(p), '[]') FROM (
      SELECT service, kv.key AS outcome, sum(kv.value::bigint) AS n
      FROM {S}.provider_runs CROSS JOIN LATERAL jsonb_each_text(outcomes) kv
      GROUP BY 1, 2) p),
  'provider_state', (SELECT coalesce(json_agg(p), '[]') FROM (
      SELECT service, sum(retries) AS retries,
             (array_agg(breaker_open ORDER BY provider_row_id DESC))[1] AS breaker_open
      FROM {S}.provider_runs GROUP BY service) p),
  'health', (SELECT coalesce(json_agg(h), '[]') FROM (
      SELECT service, ok, latency_seconds, extract(epoch FROM checked_at) AS checked_at
      FROM {S}.service_health) h),
  'spaces', (SELECT coalesce(json_agg(v), '[]') FROM (
      SELECT s.embedding_model AS model, s.dims, s.is_active AS active, s.index_state,
             coalesce((SELECT sum(t.delta) FROM {S}.space_row_tallies t
                       WHERE t.embedding_model = s.embedding_model AND t.dims = s.dims), 0)
                 AS rows
      FROM {S}.vector_spaces s) v),
  'buffers', json_build_object(
      'chunks', (SELECT count(*) FROM {S}.document_chunk_buffer),
      'vectors', (SELECT count(*) FROM {S}.document_vector_buffer))
)
"""


def snapshot(
    conn: psycopg.Connection, stage_bounds: Sequence[float], counter_names: Sequence[str]
) -> dict[str, Any]:
    """Everything a scrape shows, read in one statement (a consistent snapshot)."""
    row = conn.execute(
        SNAPSHOT_SQL,
        {"stage_bounds": [float(b) for b in stage_bounds], "counter_names": list(counter_names)},
    ).fetchone()
    value = row[0]
    return value if isinstance(value, dict) else json.loads(value)


def searchable_bounds(conn: psycopg.Connection) -> list[float]:
    """The upload -> searchable bucket bounds the database uses (for the test that keeps the
    exporter's equal)."""
    rows = conn.execute(
        f"SELECT DISTINCT {S}.searchable_bucket(x) FROM generate_series(0, 100000) x"
    ).fetchall()
    return sorted(r[0] for r in rows if r[0] != float("inf"))


@dataclass(frozen=True)
class ProviderRun:
    """One provider client's requests by outcome over its life (a stage run)."""

    service: str
    outcomes: Mapping[str, int]
    retries: int
    breaker_open: bool


class MetricsStore:
    """Writes for the metrics: mixed into Store, so it uses the pool of StoreBase."""

    pool: Any

    def record_stage_run(
        self,
        stage: str,
        batch_key: str | None,
        seconds: float,
        documents: int,
        counters: Mapping[str, float],
    ) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                f"""INSERT INTO {S}.stage_runs (stage, batch_key, seconds, documents, counters)
                    VALUES (%s, %s, %s, %s, %s)""",
                (stage, batch_key, max(seconds, 0.0), documents, json.dumps(dict(counters))),
            )

    def record_provider_run(self, run: ProviderRun) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                f"""INSERT INTO {S}.provider_runs (service, outcomes, retries, breaker_open)
                    VALUES (%s, %s, %s, %s)""",
                (run.service, json.dumps(dict(run.outcomes)), run.retries, run.breaker_open),
            )


def record_health(url: str, results: Sequence[tuple[str, bool, float]]) -> None:
    """The health sensor's probes: (service, ok, latency in seconds), in one statement."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            f"""INSERT INTO {S}.service_health (service, ok, latency_seconds, checked_at)
                SELECT *, now() FROM unnest(%s::text[], %s::boolean[], %s::float8[])
                ON CONFLICT (service) DO UPDATE SET ok = EXCLUDED.ok,
                    latency_seconds = EXCLUDED.latency_seconds, checked_at = EXCLUDED.checked_at""",
            ([r[0] for r in results], [r[1] for r in results], [r[2] for r in results]),
        )


def open_metrics_pool(url: str) -> ConnectionPool:
    """A small pool for an exporter; it opens in the background, so an exporter starts (and
    reports the database down) while the database is unreachable."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=2,
        check=ConnectionPool.check_connection,
        name="docpipe-metrics",
        open=True,
        kwargs={"connect_timeout": 5, "application_name": "docpipe-metrics"},
    )
