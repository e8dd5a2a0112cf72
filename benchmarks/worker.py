"""One measured run in its own process: `python -m benchmarks.worker SPEC.json`.

Each run of docpipe or of the baseline gets a fresh interpreter so its peak RSS is its own
(ru_maxrss of this process; docpipe's in-process executor starts no children) and its
timings exclude interpreter start-up and imports. The spec says what to run; the result is
written as JSON to spec["out"].
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across fork and exec, so a child of a big parent would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _db_counts(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        by_state = dict(
            conn.execute(
                """SELECT state, count(*) FROM (SELECT DISTINCT ON (document_id) state
                   FROM upload_pipeline.upload_jobs ORDER BY document_id, registered_at DESC) l
                   GROUP BY state"""
            ).fetchall()
        )
        chunks = conn.execute("SELECT count(*) FROM upload_pipeline.document_chunks").fetchone()[0]
        # md5 over the searchable rows: a re-run must leave every row exactly as it was
        fingerprint = conn.execute(
            """SELECT md5(coalesce(string_agg(chunk_id::text || job_id::text
                   || committed_at::text, ',' ORDER BY chunk_id), ''))
               FROM upload_pipeline.document_chunks"""
        ).fetchone()[0]
        indexes = [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'upload_pipeline'"
                " AND indexdef ILIKE '%hnsw%' ORDER BY 1"
            )
        ]
    return {"by_state": by_state, "chunks": chunks, "fingerprint": fingerprint, "hnsw": indexes}


def _run_metrics(outcomes: list[Any]) -> dict[str, float]:
    """Seconds per stage (from the assets' metadata, summed over the runs: with runs side by
    side that is more than the wall time) and the runs' own wall time, summed."""
    stages: dict[str, float] = {}
    index: dict[str, float] = {}
    wall = 0.0
    for outcome in outcomes:
        wall += outcome.ended - outcome.started
        for event in outcome.result.get_asset_materialization_events():
            meta = event.step_materialization_data.materialization.metadata
            seconds = meta.get("seconds")
            name = event.asset_key.to_user_string()
            if seconds is not None:
                stages[name] = round(stages.get(name, 0.0) + float(seconds.value), 3)
            if name == "searchable_chunks":
                for key, value in meta.items():
                    if key.startswith("index_") and isinstance(value.value, (int, float)):
                        index[key] = round(index.get(key, 0) + value.value, 3)
    return {"run_wall_seconds": round(wall, 3), "stage_seconds": stages, "index": index}


def run_docpipe(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from docpipe_dagster.defs.resources import build_resources
    from docpipe_dagster.runner import ingest_pending, run_batch

    url = spec["database_url"]
    mode = spec.get("mode", "ingest")
    groups: list[Path] = []
    if mode == "trickle":
        groups = sorted(p for p in Path(spec["trickle_dir"]).iterdir() if p.is_dir())
    storage = Path(spec["storage_dir"])
    before = _db_counts(url)
    seconds = 0.0
    per_group: list[float] = []
    done: list[Any] = []
    # `runs` > 1: batches side by side as `docpipe ingest --wait` runs them (an instance per
    # run thread); else one at a time on one instance.
    runs = int(spec.get("runs", 1))
    with dg.DagsterInstance.ephemeral() as instance:
        if mode == "trickle":
            for group in groups:
                for path in sorted(group.rglob("*")):
                    if path.is_file():
                        dest = storage / path.relative_to(group)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, dest)
                t = time.perf_counter()
                outcomes = ingest_pending(
                    resources=build_resources(), instance=instance, log_level="ERROR"
                )
                per_group.append(time.perf_counter() - t)
                done += outcomes
            seconds = sum(per_group)
        elif mode == "rematerialize":
            import psycopg

            with psycopg.connect(url) as conn:
                keys = [
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT batch_key FROM upload_pipeline.upload_jobs"
                        " WHERE batch_key IS NOT NULL ORDER BY 1"
                    )
                ]
            t = time.perf_counter()
            resources = build_resources()
            for key in keys:
                done.append(
                    run_batch(key, resources=resources, instance=instance, log_level="ERROR")
                )
            seconds = time.perf_counter() - t
        else:
            t = time.perf_counter()
            done = ingest_pending(
                resources=build_resources(),
                instance=instance if runs == 1 else None,
                runs=runs,
                log_level="ERROR",
            )
            seconds = time.perf_counter() - t
        metrics = _run_metrics(done)
    after = _db_counts(url)
    completed = after["by_state"].get("completed", 0) - before["by_state"].get("completed", 0)
    chunks = after["chunks"] - before["chunks"]
    return {
        "seconds": seconds,
        "per_group_seconds": [round(s, 3) for s in per_group],
        "runs": len(done),
        "runs_at_once": runs,
        "documents": completed,
        "failed": after["by_state"].get("failed", 0),
        "chunks": chunks,
        "vectors": chunks,
        "searchable_rows": after["chunks"],
        "rows_unchanged": before["fingerprint"] == after["fingerprint"],
        "hnsw_indexes": after["hnsw"],
        **metrics,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    cpu_before = _cpu_seconds()
    if spec["system"] == "docpipe":
        result = run_docpipe(spec)
    else:
        from benchmarks.baseline import run_baseline

        result = asyncio.run(run_baseline(spec))
    result["peak_rss_mb_self"] = _peak_rss_mb()
    result["cpu_seconds"] = round(_cpu_seconds() - cpu_before, 2)
    Path(spec["out"]).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
