"""Upload -> searchable latency under `docpipe dev` (the daemon, the sensor, run launches).

    python -m benchmarks.devlatency --files 10 --paths folder,api

Starts `docpipe dev` in a temp DOCPIPE_HOME with the mocks on free ports (its own process
group), waits until the webserver answers and the shipped samples are completed, then puts
files into storage one at a time, alternating between the paths asked for, and measures, for
each file, the time from the write to its chunks being in `document_chunks` (searchable):

- `folder`: the file is dropped into the storage folder; the intake sensor registers it;
- `api`: the file is uploaded with `POST /v1/documents` (the dev API's key from
  $DOCPIPE_HOME/api-key); `docpipe dev` gives the API the webserver's URL, so the API
  registers it and launches its run at once (the push path, docs/API.md).

The events table splits each time into: until registered (settle time + sensor tick, or the
upload request), registered -> first parse event (run launch), and the run itself.
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
    paths: tuple[str, ...] = ("folder",),
) -> dict[str, Any]:
    """The top-level figures are the first path's; `paths` holds each path's."""
    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ValueError(f"paths must be some of {', '.join(PATHS)}, got {paths}")
    home = workdir / "dev-home"
    ports = named_free_ports(("ui", "storage", "llamaparse", "openai", "api"))
    extra = {
        "DOCPIPE_HOME": str(home),
        "DOCPIPE_API_PORT": str(ports["api"]),
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
    per_path: dict[str, list[dict[str, Any]]] = {}
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
        (home / "storage" / "bench").mkdir(parents=True, exist_ok=True)
        puts = {
            name: _api_upload(home, ports["api"]) if name == "api" else _drop(home)
            for name in paths
        }
        # Alternating, one file at a time: each path sees the same machine, load included.
        for i in range(files):
            for name, put in puts.items():
                key = f"bench/{name}-{i:03d}.md"
                sample = _one_file(conn, put, key, i, file_timeout, proc, log)
                per_path.setdefault(name, []).append(sample)
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
    by_path = {name: _summary(found) for name, found in per_path.items()}
    result.update(by_path[paths[0]])
    result.update(
        path=paths[0],
        paths=by_path,
        settle_seconds=settle_seconds,
        sensor_interval_seconds=sensor_interval,
    )
    return result


PATHS = ("folder", "api")


def _text(key: str, i: int) -> str:
    # The key in the text: no two files share content, so no path gains from the caches.
    return (
        f"# Upload {i}\n\nLatency probe {key}: the quick brown fox {i} jumps over "
        f"the lazy dog {i} while the benchmark waits for it to become searchable.\n"
    )


def _drop(home: Path) -> Any:
    """Put a file into the storage folder so that it appears complete, like an upload."""

    def put(key: str, text: str) -> dict[str, Any]:
        path = home / "storage" / key
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return {}

    return put


def _api_upload(home: Path, port: int) -> Any:
    """Upload through the dev API (its key from $DOCPIPE_HOME/api-key)."""
    key = (home / "api-key").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/openapi.json", timeout=2).is_success:
                break
        time.sleep(0.2)
    client = httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )

    def put(storage_key: str, text: str) -> dict[str, Any]:
        started = time.monotonic()
        folder, name = storage_key.rsplit("/", 1)
        response = client.post(
            "/v1/documents", files={"file": (name, text.encode())}, data={"prefix": folder}
        )
        response.raise_for_status()
        body = response.json()
        return {
            "upload_request_s": round(time.monotonic() - started, 3),
            "launch": body.get("launch"),
        }

    return put


def _one_file(
    conn: psycopg.Connection,
    put: Any,
    key: str,
    i: int,
    timeout: float,
    proc: subprocess.Popen,
    log: Path,
) -> dict[str, Any]:
    """Write one file by `put`; seconds to searchable, and the parts from the events."""
    wall0 = datetime.now(timezone.utc)
    t0 = time.monotonic()
    extra = put(key, _text(key, i))

    def searchable() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM upload_pipeline.document_chunks WHERE storage_key = %s",
            (key,),
        ).fetchone()
        return row[0] > 0

    _wait(searchable, timeout, f"{key} to become searchable", proc, log)
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
    sample: dict[str, Any] = {"key": key, "seconds": round(latency, 3), **extra}
    if registered is not None:
        sample["to_registered"] = round((registered - wall0).total_seconds(), 3)
        if first_parse is not None:
            sample["registered_to_run"] = round((first_parse - registered).total_seconds(), 3)
            sample["run_to_searchable"] = round(latency - (first_parse - wall0).total_seconds(), 3)
    return sample


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [s["seconds"] for s in samples]
    parts: dict[str, float] = {}
    for name in ("to_registered", "registered_to_run", "run_to_searchable"):
        values = [s[name] for s in samples if name in s]
        if values:
            parts[name] = round(statistics.median(values), 3)
    return {
        "samples": samples,
        "p50_seconds": round(_percentile(latencies, 0.5), 3),
        "p95_seconds": round(_percentile(latencies, 0.95), 3),
        "max_seconds": round(max(latencies), 3) if latencies else None,
        "median_parts_seconds": parts,
    }


def main() -> None:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10, help="files per path")
    parser.add_argument("--paths", default="folder,api", help="folder, api or both")
    parser.add_argument("--dims", type=int, default=None)
    parser.add_argument("--settle-seconds", type=float, default=None)
    parser.add_argument("--sensor-interval", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="docpipe-devlatency-") as work:
        result = measure(
            Path(work),
            files=args.files,
            dims=args.dims,
            settle_seconds=args.settle_seconds,
            sensor_interval=args.sensor_interval,
            paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()),
        )
    for name, found in result["paths"].items():
        print(
            f"{name}: {args.files} files, p50 {found['p50_seconds']} s, "
            f"p95 {found['p95_seconds']} s, max {found['max_seconds']} s; "
            f"median parts {found['median_parts_seconds']}"
        )
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
