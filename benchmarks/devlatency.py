"""Upload -> searchable latency under `docpipe dev` (the daemon, the sensor, run launches).

Starts `docpipe dev` in a temp DOCPIPE_HOME with the mocks on free ports (its own process
group), waits until the webserver answers and the shipped samples are completed, then drops
files into the storage folder one at a time and measures, for each, the time from the file
being written to its chunks being in `document_chunks` (searchable). The events table splits
that into: waiting for the sensor (settle time + tick interval), run launch (registered ->
first parse event), and the pipeline itself (first parse event -> completed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.infra import REPO_ROOT, child_env, named_free_ports, stop_group


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"docpipe dev exited while waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def measure(
    workdir: Path,
    *,
    files: int,
    dims: int | None,
    settle_seconds: float | None,
    sensor_interval: int | None,
    startup_timeout: float = 300.0,
    file_timeout: float = 120.0,
) -> dict[str, Any]:
    home = workdir / "dev-home"
    ports = named_free_ports(("ui", "storage", "llamaparse", "openai"))
    extra = {
        "DOCPIPE_HOME": str(home),
        "LLAMAPARSE_BASE_URL": f"http://127.0.0.1:{ports['llamaparse']}",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{ports['openai']}/v1",
        "SUPABASE_URL": f"http://127.0.0.1:{ports['storage']}",
    }
    if dims:
        extra["DOCPIPE_EMBEDDING_DIMENSIONS"] = str(dims)
    if settle_seconds is not None:
        extra["DOCPIPE_SETTLE_SECONDS"] = str(settle_seconds)
    if sensor_interval is not None:
        extra["DOCPIPE_SENSOR_INTERVAL_SECONDS"] = str(sensor_interval)
    env = child_env(**extra)
    log = workdir / "dev.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docpipe_dagster.cli", "dev", "--port", str(ports["ui"])],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"files": files, "ui_port": ports["ui"]}
    try:

        def ui_up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(
                    f"http://127.0.0.1:{ports['ui']}/server_info", timeout=2
                ).is_success
            return False

        _wait(ui_up, startup_timeout, "the Dagster webserver", proc, log)
        result["startup_seconds"] = round(time.monotonic() - started, 2)
        url = (
            subprocess.run(
                [sys.executable, "-m", "docpipe_dagster.cli", "db", "url"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        conn = psycopg.connect(url, autocommit=True)

        def samples_done() -> bool:
            rows = conn.execute(
                "SELECT count(*) FILTER (WHERE state IN ('completed', 'failed')), count(*)"
                " FROM upload_pipeline.upload_jobs"
            ).fetchone()
            return rows[1] > 0 and rows[0] == rows[1]

        _wait(samples_done, startup_timeout, "the samples to complete", proc, log)
        result["samples_settled_seconds"] = round(time.monotonic() - started, 2)
        storage = home / "storage" / "bench"
        storage.mkdir(parents=True, exist_ok=True)
        for i in range(files):
            key = f"bench/upload-{i:03d}.md"
            text = (
                f"# Upload {i}\n\nLatency probe number {i}: the quick brown fox {i} jumps over "
                f"the lazy dog {i} while the benchmark waits for it to become searchable.\n"
            )
            path = home / "storage" / key
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)  # appears complete, like an upload
            t0 = time.monotonic()
            wall0 = datetime.now(timezone.utc)

            def searchable(key: str = key) -> bool:
                row = conn.execute(
                    "SELECT count(*) FROM upload_pipeline.document_chunks WHERE storage_key = %s",
                    (key,),
                ).fetchone()
                return row[0] > 0

            _wait(searchable, file_timeout, f"{key} to become searchable", proc, log)
            latency = time.monotonic() - t0
            events = conn.execute(
                """SELECT e.event_type, e.stage, min(e.created_at) FROM upload_pipeline.events e
                   JOIN upload_pipeline.upload_jobs j USING (job_id) WHERE j.storage_key = %s
                   GROUP BY 1, 2""",
                (key,),
            ).fetchall()
            at = {(t, s): ts for t, s, ts in events}
            registered = at.get(("registered", "intake"))
            first_parse = min((ts for (_t, s), ts in at.items() if s == "parse"), default=None)
            sample = {"key": key, "seconds": round(latency, 3)}
            if registered is not None:
                sample["to_registered"] = round((registered - wall0).total_seconds(), 3)
                if first_parse is not None:
                    sample["registered_to_run"] = round(
                        (first_parse - registered).total_seconds(), 3
                    )
                    sample["run_to_searchable"] = round(
                        latency - (first_parse - wall0).total_seconds(), 3
                    )
            samples.append(sample)
        conn.close()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        stop_group(proc, signal.SIGKILL, timeout=10)
        # `docpipe dev` stops its database on exit; make sure, without starting one.
        if (home / "pgdata" / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                subprocess.run(
                    [sys.executable, "-m", "docpipe_dagster.cli", "db", "stop"],
                    cwd=REPO_ROOT,
                    env=env,
                    capture_output=True,
                    timeout=60,
                )
    latencies = [s["seconds"] for s in samples]
    parts: dict[str, float] = {}
    for name in ("to_registered", "registered_to_run", "run_to_searchable"):
        values = [s[name] for s in samples if name in s]
        if values:
            parts[name] = round(statistics.median(values), 3)
    result.update(
        samples=samples,
        p50_seconds=round(_percentile(latencies, 0.5), 3),
        p95_seconds=round(_percentile(latencies, 0.95), 3),
        max_seconds=round(max(latencies), 3) if latencies else None,
        median_parts_seconds=parts,
        settle_seconds=settle_seconds,
        sensor_interval_seconds=sensor_interval,
    )
    return result
