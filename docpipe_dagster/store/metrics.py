"""What the Prometheus exporter reads (one statement per scrape) and what the pipeline writes
for it: stage runs, provider clients' request outcomes, the health sensor's probes.

Counters come from small insert-only tables (event_tallies, stage_runs, provider_runs) written
as the pipeline goes, so a scrape never counts the events or the chunks (sql/0007_metrics.sql).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from docpipe_dagster.store.schema import S

# One round trip: every part of the snapshot is a subquery of one SELECT, returned as JSON.
# Each reads a small tally table or an index (sql/0007_metrics.sql), never every job or chunk.
_SNAPSHOT = sql.SQL(
    f"""
SELECT json_build_object(
  'now', extract(epoch FROM statement_timestamp()),
  'states', (SELECT coalesce(json_agg(s), '[]') FROM (
      SELECT state, failed_stage AS stage, code, retrying, sum(delta) AS n
      FROM {S}.job_state_tallies GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0) s),
  'backlog_oldest', (SELECT extract(epoch FROM min(registered_at))
                     FROM {S}.upload_jobs WHERE state = 'uploaded'),
  'tallies', (SELECT coalesce(json_agg(t), '[]') FROM (
      SELECT stage, event_type, code, bucket_le, sum(n) AS n, sum(chunks) AS chunks,
             sum(seconds_sum) AS seconds, extract(epoch FROM max(recorded_at)) AS last
      FROM {S}.event_tallies GROUP BY 1, 2, 3, 4) t),
  'stage_runs', (SELECT coalesce(json_agg(r), '[]') FROM (
      SELECT stage, bucket_le AS le, sum(runs) AS n, sum(seconds) AS seconds
      FROM {S}.stage_runs GROUP BY 1, 2) r),
  'stage_counters', (SELECT coalesce(json_agg(c), '[]') FROM (
      SELECT stage, json_build_object({{counters}}) AS totals
      FROM {S}.stage_runs GROUP BY 1) c),
  'providers', (SELECT coalesce(json_agg(p), '[]') FROM (
      SELECT service, json_build_object({{outcome_sums}}) AS outcomes, sum(retries) AS retries
      FROM {S}.provider_runs GROUP BY 1) p),
  'breakers', (SELECT coalesce(json_agg(b), '[]') FROM (
      SELECT DISTINCT ON (service) service, breaker_open FROM {S}.provider_runs
      WHERE NOT folded ORDER BY service, provider_row_id DESC) b),
  'health', (SELECT coalesce(json_agg(h), '[]') FROM (
      SELECT service, ok, latency_seconds, extract(epoch FROM checked_at) AS checked_at
      FROM {S}.service_health) h),
  'spaces', (SELECT coalesce(json_agg(v), '[]') FROM (
      SELECT s.embedding_model AS model, s.dims, s.is_active AS active, s.index_state,
             coalesce((SELECT sum(t.delta) FROM {S}.space_row_tallies t
                       WHERE t.embedding_model = s.embedding_model AND t.dims = s.dims), 0)
                 AS rows
      FROM {S}.vector_spaces s) v),
  'rows', (SELECT json_build_object(
      'job_state_tallies', (SELECT max(tally_id) - min(tally_id) FROM {S}.job_state_tallies),
      'event_tallies', (SELECT max(tally_id) - min(tally_id) FROM {S}.event_tallies),
      'space_row_tallies', (SELECT max(tally_id) - min(tally_id) FROM {S}.space_row_tallies),
      'stage_runs', (SELECT max(run_row_id) - min(run_row_id) FROM {S}.stage_runs),
      'provider_runs', (SELECT max(provider_row_id) - min(provider_row_id)
                        FROM {S}.provider_runs))),
  'buffers', json_build_object(
      'chunks', (SELECT count(*) FROM {S}.document_chunk_buffer),
      'vectors', (SELECT count(*) FROM {S}.document_vector_buffer))
)
"""
)
_COUNTER = sql.SQL("{name}, coalesce(sum((counters->>{name})::double precision), 0)")
_OUTCOME = sql.SQL("{name}, coalesce(sum((outcomes->>{name})::bigint), 0)")


def _sums(counter_names: Sequence[str], outcomes: Sequence[str]) -> dict[str, sql.Composable]:
    """The json_build_object arguments summing each counter and each outcome (SQL literals)."""
    # Plain identifiers only (they are the exporter's constants), though they go in as literals.
    assert all(re.fullmatch(r"[a-z_]+", n) for n in (*counter_names, *outcomes))
    return {
        "counters": sql.SQL(", ").join(_COUNTER.format(name=sql.Literal(n)) for n in counter_names),
        "outcome_sums": sql.SQL(", ").join(_OUTCOME.format(name=sql.Literal(o)) for o in outcomes),
    }


def snapshot_sql(counter_names: Sequence[str], outcomes: Sequence[str]) -> sql.Composed:
    return _SNAPSHOT.format(**_sums(counter_names, outcomes))


def snapshot(
    conn: psycopg.Connection, counter_names: Sequence[str], outcomes: Sequence[str]
) -> dict[str, Any]:
    """Everything a scrape shows, read in one statement (a consistent snapshot)."""
    row = conn.execute(snapshot_sql(counter_names, outcomes)).fetchone()
    value = row[0]
    return value if isinstance(value, dict) else json.loads(value)


# Past this many rows (an id span: an upper bound) a tally table is folded.
FOLD_ABOVE = 500


# Each fold: delete a tally table's rows and insert their sums, one row per group.
_FOLD = {
    "job_state_tallies": sql.SQL(
        f"""
            WITH gone AS (DELETE FROM {S}.job_state_tallies RETURNING *)
            INSERT INTO {S}.job_state_tallies (state, failed_stage, code, retrying, delta)
            SELECT state, failed_stage, code, retrying, sum(delta) FROM gone
            GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0"""
    ),
    "event_tallies": sql.SQL(
        f"""
            WITH gone AS (DELETE FROM {S}.event_tallies RETURNING *)
            INSERT INTO {S}.event_tallies
                (stage, event_type, code, bucket_le, n, chunks, seconds_sum, recorded_at)
            SELECT stage, event_type, code, bucket_le, sum(n), sum(chunks), sum(seconds_sum),
                   max(recorded_at)
            FROM gone GROUP BY 1, 2, 3, 4"""
    ),
    "space_row_tallies": sql.SQL(
        f"""
            WITH gone AS (DELETE FROM {S}.space_row_tallies RETURNING *)
            INSERT INTO {S}.space_row_tallies (embedding_model, dims, delta)
            SELECT embedding_model, dims, sum(delta) FROM gone
            GROUP BY 1, 2 HAVING sum(delta) <> 0"""
    ),
    "stage_runs": sql.SQL(
        f"""
            WITH gone AS (DELETE FROM {S}.stage_runs RETURNING *)
            INSERT INTO {S}.stage_runs
                (stage, seconds, bucket_le, documents, counters, runs, recorded_at)
            SELECT stage, sum(seconds), bucket_le, sum(documents), jsonb_build_object({{counters}}),
                   sum(runs), max(recorded_at)
            FROM gone GROUP BY stage, bucket_le"""
    ),
    "provider_runs": sql.SQL(
        f"""
            WITH newest AS (
                SELECT DISTINCT ON (service) provider_row_id FROM {S}.provider_runs
                WHERE NOT folded ORDER BY service, provider_row_id DESC),
            gone AS (
                DELETE FROM {S}.provider_runs
                WHERE provider_row_id NOT IN (SELECT provider_row_id FROM newest)
                RETURNING *)
            INSERT INTO {S}.provider_runs (service, outcomes, retries, folded, recorded_at)
            SELECT service, jsonb_build_object({{outcome_sums}}), sum(retries), true,
                   max(recorded_at)
            FROM gone GROUP BY service"""
    ),
}


def fold_tallies(
    conn: psycopg.Connection,
    tables: Sequence[str],
    counter_names: Sequence[str],
    outcomes: Sequence[str],
) -> None:
    """Fold each named tally table into one row per group, in one transaction: its rows are
    deleted and their sums inserted. Rows another transaction writes meanwhile are not
    visible to the DELETE, so they stay and count once; a concurrent scrape sees the table
    before or after, never between. The newest unfolded provider run per service stays (its
    breaker state)."""
    sums = _sums(counter_names, outcomes)
    with conn.transaction():
        for table in tables:
            conn.execute(_FOLD[table].format(**sums))


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
        bounds: Sequence[float],
    ) -> None:
        """One stage run; `bounds`: the histogram's, to store the bucket `seconds` falls in."""
        seconds = max(seconds, 0.0)
        le = next((float(b) for b in bounds if seconds <= b), float("inf"))
        with self.pool.connection() as conn:
            conn.execute(
                f"""INSERT INTO {S}.stage_runs
                        (stage, batch_key, seconds, bucket_le, documents, counters)
                    VALUES (%s, %s, %s, %s, %s, %s)""",
                (stage, batch_key, seconds, le, documents, json.dumps(dict(counters))),
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
