"""What one Prometheus scrape costs at scale (`python -m benchmarks.metrics_scrape`).

    python -m benchmarks.metrics_scrape --docs 100000 [--repeat 50] [--database-url URL]

On its own embedded Postgres (a temp folder; or a fresh database on --database-url's server,
dropped afterwards) it writes the rows a pipeline leaves behind after N documents, in
batches of 100 as the pipeline writes them (so the tally tables get their real number of
rows): jobs in every state (90% completed, 5% failed, the rest waiting or in flight), three
searchable chunks per completed document (8-dimensional vectors in a space of their own),
six events per document, a stage run per stage and batch, provider runs. Then it times the
first scrape (which folds the tally tables, store/metrics.py: fold_tallies), then the full
scrape (the database read and the text exposition) `--repeat` times, and prints the median,
the p95 and the largest, and the statement's own execution time (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from psycopg import sql

from benchmarks.infra import embedded_postgres
from docpipe_dagster.metrics.collector import PipelineCollector
from docpipe_dagster.metrics.names import COUNTER_NAMES, OUTCOMES
from docpipe_dagster.store.metrics import snapshot_sql
from docpipe_dagster.store.migrate import migrate
from docpipe_dagster.store.server import database_name, replace_database

BATCH = 100
MODEL, DIMS = "bench-model", 8


def _fill(url: str, docs: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO upload_pipeline.vector_spaces (embedding_model, dims, index_name, "
            "index_state, is_active) VALUES (%s, %s, 'bench_idx', 'off', false)",
            (MODEL, DIMS),
        )
        for start in range(0, docs, BATCH):
            n = min(BATCH, docs - start)
            with conn.transaction():
                _batch(conn, start, n)
            if start and start % 20000 == 0:
                print(f"  {start} documents written", file=sys.stderr)
        conn.execute("VACUUM ANALYZE")


def _batch(conn: psycopg.Connection, start: int, n: int) -> None:
    batch = f"bench-{start // BATCH:06d}"
    # Registered, then moved a stage at a time as the pipeline moves them (one statement per
    # stage, one per failure): 90% completed, 5% failed, 3% waiting, 2% parsing.
    conn.execute(
        """INSERT INTO upload_pipeline.upload_jobs (job_id, document_id, storage_key,
               content_sha256, size_bytes, media_type, batch_key, registered_at)
           SELECT md5('j' || i)::uuid, md5('d' || i)::uuid, 'bench/doc-' || i || '.md',
               encode(sha256(('c' || i)::bytea), 'hex'), 1000, 'text/markdown', %(batch)s,
               now() - interval '1 hour'
           FROM generate_series(%(a)s::int, %(b)s::int) i""",
        {"batch": batch, "a": start, "b": start + n - 1},
    )
    rank = "(substring(storage_key FROM 'doc-([0-9]+)')::int %% 100)"
    jobs = "UPDATE upload_pipeline.upload_jobs SET state = %(to)s, updated_at = now()"
    moving = f" WHERE batch_key = %(batch)s AND {rank} < %(below)s AND state = %(from)s"
    steps = ("uploaded", "parsing", "parsed", "chunked", "embedded")
    for before, after in zip(steps, (*steps[1:], "completed"), strict=True):
        conn.execute(
            jobs + moving,
            {
                "to": after,
                "from": before,
                "batch": batch,
                "below": 100 if before == "uploaded" else 90,
            },
        )
        if before == "uploaded":  # 3% wait: back to uploaded
            conn.execute(
                f"UPDATE upload_pipeline.upload_jobs SET state = 'uploaded' WHERE batch_key = "
                f"%(batch)s AND {rank} BETWEEN 95 AND 97",
                {"batch": batch},
            )
    failing = conn.execute(
        f"SELECT job_id FROM upload_pipeline.upload_jobs WHERE batch_key = %(batch)s"
        f" AND {rank} BETWEEN 90 AND 94",
        {"batch": batch},
    ).fetchall()
    for (job_id,) in failing:
        conn.execute(
            "UPDATE upload_pipeline.upload_jobs SET state = 'failed', failed_stage = 'parse',"
            " failure_code = 'UNSUPPORTED', failure_reason = 'bench failure', retryable = false,"
            " attempts = 1 WHERE job_id = %s",
            (job_id,),
        )
    conn.execute(
        "UPDATE upload_pipeline.upload_jobs SET completed_at = now(), chunk_count = 3"
        " WHERE batch_key = %(batch)s AND state = 'completed'",
        {"batch": batch},
    )
    ids = "SELECT job_id FROM upload_pipeline.upload_jobs WHERE batch_key = %(batch)s"
    for stage, kind, extra in (
        ("intake", "registered", "'{}'"),
        ("parse", "parsing", "'{}'"),
        ("parse", "parsed", """'{"pages": 2, "cache_hit": false}'"""),
        ("chunk", "chunked", """'{"chunks": 3, "tokens": 300}'"""),
        ("embed", "embedded", "'{}'"),
    ):
        conn.execute(
            f"INSERT INTO upload_pipeline.events (job_id, stage, event_type, payload) "
            f"SELECT job_id, '{stage}', '{kind}', {extra}::jsonb FROM ({ids}) j",
            {"batch": batch},
        )
    conn.execute(
        """INSERT INTO upload_pipeline.document_chunks (chunk_id, document_id, job_id,
               storage_key, content_sha256, chunk_index, content, token_estimate,
               embedding_model, dims, embedding, char_start, char_end)
           SELECT gen_random_uuid(), j.document_id, j.job_id, j.storage_key, j.content_sha256,
               k, 'chunk ' || k || ' of ' || j.storage_key, 100, %(model)s, %(dims)s,
               array_fill(0.1::real, ARRAY[%(dims)s])::vector, 0, 10
           FROM upload_pipeline.upload_jobs j CROSS JOIN generate_series(0, 2) k
           WHERE j.batch_key = %(batch)s AND j.state = 'completed'""",
        {"batch": batch, "model": MODEL, "dims": DIMS},
    )
    conn.execute(
        """INSERT INTO upload_pipeline.events (job_id, stage, event_type, payload)
            SELECT job_id, CASE WHEN state = 'failed' THEN 'parse' ELSE 'commit' END,
                   CASE WHEN state = 'failed' THEN 'failed' ELSE 'completed' END,
                   CASE WHEN state = 'failed' THEN '{"code": "UNSUPPORTED"}'::jsonb
                        ELSE '{"chunks": 3, "replaced": 0}'::jsonb END
            FROM upload_pipeline.upload_jobs
            WHERE batch_key = %(batch)s AND state IN ('completed', 'failed')""",
        {"batch": batch},
    )
    counters = {"cache_hits": 1, "pages": 200, "tokens": 30000, "chunks": 270}
    for stage in ("intake", "parse", "chunk", "embed", "commit"):
        conn.execute(
            "INSERT INTO upload_pipeline.stage_runs (stage, batch_key, seconds, bucket_le,"
            " documents, counters) VALUES (%s, %s, %s, %s, %s, %s)",
            (stage, batch, 1.5, 2.5, n, json.dumps(counters)),
        )
    for service in ("parser", "embedder"):
        conn.execute(
            "INSERT INTO upload_pipeline.provider_runs (service, outcomes, retries)"
            " VALUES (%s, %s, 1)",
            (service, json.dumps({"ok": 100, "rate_limited": 1})),
        )


def _time_scrapes(url: str, repeat: int) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        registry = CollectorRegistry()
        registry.register(PipelineCollector(lambda: _Borrowed(conn)))
        started = time.perf_counter()
        generate_latest(registry)  # the first scrape folds the tally tables
        print(f"first scrape (folds the tallies): {(time.perf_counter() - started) * 1000:.0f} ms")
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            generate_latest(registry)
            times.append((time.perf_counter() - started) * 1000.0)
        return times


class _Borrowed:
    """One connection lent to every scrape, as the API's pool does."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> psycopg.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


def _plan_ms(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        plan = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + snapshot_sql(COUNTER_NAMES, OUTCOMES)
        ).fetchone()[0]
        return float(plan[0]["Execution Time"])


def _sizes(url: str) -> dict[str, int]:
    tables = ("upload_jobs", "events", "document_chunks", "job_state_tallies", "event_tallies",
              "space_row_tallies", "stage_runs", "provider_runs")  # fmt: skip
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM upload_pipeline.{t}").fetchone()[0]
            for t in tables
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="docpipe-metrics-bench-") as tmp,
        contextlib.ExitStack() as server,  # the embedded server, when there is one
    ):
        server_url = args.database_url or server.enter_context(embedded_postgres(Path(tmp)))
        name = f"bench_metrics_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = replace_database(server_url, name)
        try:
            migrate(url)
            started = time.perf_counter()
            _fill(url, args.docs)
            print(
                f"wrote {args.docs} documents in {time.perf_counter() - started:.0f} s: {_sizes(url)}"
            )
            times = sorted(_time_scrapes(url, args.repeat))
            print(f"after the fold: {_sizes(url)}")
            p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
            print(
                f"scrape of {args.docs} documents ({args.repeat} runs): median "
                f"{statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms; "
                f"the statement alone (EXPLAIN ANALYZE) {_plan_ms(url):.1f} ms"
            )
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database_name(url))
                    )
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
