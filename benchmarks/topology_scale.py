"""Throughput under the daemon with 1, 2, 4 concurrent batch runs against one Postgres.

    python -m benchmarks.topology_scale                       # 200 documents, runs 1,2,4
    python -m benchmarks.topology_scale --docs 400 --runs 1,2,4,8

For each run cap N: a fresh docpipe database and Dagster database on one embedded Postgres,
`DAGSTER_HOME` with deploy/dagster.yaml (max_concurrent_runs = N, the pools' limits set to N so
they do not bind), `dagster code-server start` and `dagster-daemon run` as separate processes
(the production topology; the webserver is left out, it does no work here). The corpus is
moved into the storage folder at once, cut into 4 batches (DOCPIPE_BATCH_MAX_FILES = docs / 4),
so N = 4 runs them all side by side. Measured from the move to the last document completed:
documents/s and vectors/s; CPU seconds of each component (run workers = the code server's
process tree, the daemon, Postgres, each mock) against wall × cores; and the mean time of each
step (from Dagster's step stats), which shows the stage that slows down as runs are added.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml
from psycopg import sql

from benchmarks.corpus import CorpusSpec, generate
from benchmarks.infra import REPO_ROOT, Infra, child_env, free_port, stop_group
from docpipe_dagster.local.lifeline import spawn
from docpipe_dagster.store.server import for_dagster, replace_database

BIN = Path(sys.executable).parent
LOCATION = "docpipe_dagster"


def _instance_yaml(runs: int) -> str:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = runs
    config["concurrency"]["pools"]["default_limit"] = runs
    return yaml.safe_dump(config, sort_keys=False)


class CpuMeter:
    """CPU seconds per component; processes that exit (run workers) keep their last sample."""

    def __init__(self, roots: dict[str, list[int]]) -> None:
        self.roots = roots
        self.seen: dict[str, dict[int, float]] = {name: {} for name in roots}
        self.baseline: dict[str, float] = {}

    def start(self) -> None:
        """What `used` counts from."""
        self.sample()
        self.baseline = self.totals()

    def used(self) -> dict[str, float]:
        """CPU seconds per component since `start`, sampled now."""
        self.sample()
        return {k: round(v - self.baseline.get(k, 0.0), 2) for k, v in self.totals().items()}

    def sample(self) -> None:
        for name, pids in self.roots.items():
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            t = proc.cpu_times()
                            self.seen[name][proc.pid] = t.user + t.system

    def totals(self) -> dict[str, float]:
        return {name: round(sum(v.values()), 2) for name, v in self.seen.items()}


def service_roots(infra: Infra) -> dict[str, list[int]]:
    """The processes every path shares: the embedded Postgres and the two mocks."""
    assert infra.parser and infra.embedder
    return {
        "postgres": infra.postgres_pids()[:1],
        "parser mock": [infra.parser.proc.pid],
        "embedder mock": [infra.embedder.proc.pid],
    }


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process group of its own that dies with the benchmark, however it ends."""
    with log.open("ab") as out:
        return spawn(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def measure(infra: Infra, runs: int, docs: int, workdir: Path) -> dict[str, Any]:
    database_url = infra.new_database(f"scale{runs}")
    dagster_db = f"bench_scale{runs}_dagster_{os.getpid()}"
    with psycopg.connect(infra.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dagster_db)))
    home = workdir / f"runs-{runs}"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(_instance_yaml(runs))
    port = free_port()
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {port}, location_name: {LOCATION}}}\n"
    )
    storage = home / "storage"
    storage.mkdir()
    assert infra.parser and infra.embedder
    env = child_env(
        DAGSTER_HOME=str(dagster_home),
        DOCPIPE_HOME=str(home),
        DOCPIPE_DATABASE_URL=database_url,
        DOCPIPE_DAGSTER_DATABASE_URL=for_dagster(replace_database(infra.server_url, dagster_db)),
        LLAMAPARSE_BASE_URL=infra.parser.base_url,
        OPENAI_BASE_URL=infra.embedder.base_url + "/v1",
        DOCPIPE_STORAGE_BACKEND="folder",
        DOCPIPE_STORAGE_DIR=str(storage),
        DOCPIPE_BATCH_MAX_FILES=str(max(1, docs // 4)),
        DOCPIPE_SETTLE_SECONDS="1",
    )
    # Pools' limits set explicitly, as the init step does (concurrent first claims on a
    # default limit race and fail runs); = N so they do not bind.
    for step in (
        ["instance", "migrate"],
        ["instance", "concurrency", "set", "parser", str(runs)],
        ["instance", "concurrency", "set", "embedder", str(runs)],
    ):
        subprocess.run([str(BIN / "dagster"), *step], env=env, check=True, capture_output=True)
    code_server = _spawn(
        [
            str(BIN / "dagster"),
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "docpipe_dagster.definitions",
            "--location-name",
            LOCATION,
        ],
        env,
        home / "code-server.log",
    )
    daemon = None
    try:
        health = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        _wait(
            lambda: subprocess.run(health, env=env, capture_output=True).returncode == 0,
            180,
            "the code server",
        )
        daemon = _spawn(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, home / "daemon.log"
        )
        staging = home / "staging"
        files = generate(CorpusSpec(docs=docs, prefix="scale"), staging)
        time.sleep(1.5)  # older than the settle time when they appear
        meter = CpuMeter(
            {
                "run workers + code server": [code_server.pid],
                "daemon": [daemon.pid],
                **service_roots(infra),
            }
        )
        meter.start()
        started = time.monotonic()
        os.rename(staging / "scale", storage / "scale")

        def completed() -> bool:
            meter.sample()
            with psycopg.connect(database_url) as conn:
                (done,) = conn.execute(
                    "SELECT count(*) FROM upload_pipeline.upload_jobs"
                    " WHERE state IN ('completed', 'failed')"
                ).fetchone()
            return done >= len(files)

        _wait(completed, 1800, f"{len(files)} documents")
        wall = time.monotonic() - started
        cpu = meter.used()
        with psycopg.connect(database_url) as conn:
            (vectors,) = conn.execute(
                "SELECT count(*) FROM upload_pipeline.document_chunks"
            ).fetchone()
            states = dict(
                conn.execute(
                    "SELECT state, count(*) FROM upload_pipeline.upload_jobs GROUP BY state"
                ).fetchall()
            )
        steps = _step_stats(env)
    finally:
        for proc in (daemon, code_server):
            if proc is not None:
                stop_group(proc)
        infra.drop_database(database_url)
        with contextlib.suppress(psycopg.Error):
            infra.drop_database(dagster_db)
    cores = psutil.cpu_count() or 1
    busiest = max(cpu, key=cpu.get)
    return {
        "max_concurrent_runs": runs,
        "documents": len(files),
        "vectors": vectors,
        "states": states,
        "wall_s": round(wall, 1),
        "documents_per_s": round(len(files) / wall, 2),
        "vectors_per_s": round(vectors / wall, 1),
        "cpu_s": cpu,
        "cpu_utilisation": round(sum(cpu.values()) / (wall * cores), 2),
        "busiest": busiest,
        **steps,
        # other processes on the machine compete for the same cores
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def _step_stats(env: dict[str, str]) -> dict[str, Any]:
    """Mean seconds per step over the finished batch runs, each run's created/started/ended
    times and the most runs executing at once (a subprocess: the instance is the
    benchmark's DAGSTER_HOME, not this process's)."""
    code = (
        "import json, statistics, dagster as dg\n"
        "import time\n"
        "i = dg.DagsterInstance.get()\n"
        "busy = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]\n"
        "deadline = time.time() + 120\n"
        "while i.get_runs(filters=dg.RunsFilter(statuses=busy)) and time.time() < deadline:\n"
        "    time.sleep(0.5)  # a document completes before its run's checks do\n"
        "by, spans, unfinished = {}, [], []\n"
        "for r in i.get_runs(filters=dg.RunsFilter(job_name='ingest_batch')):\n"
        "    for s in i.get_run_step_stats(r.run_id):\n"
        "        if s.start_time and s.end_time:\n"
        "            by.setdefault(s.step_key, []).append(s.end_time - s.start_time)\n"
        "    st = i.get_run_stats(r.run_id)\n"
        "    if st.launch_time and st.start_time:\n"
        "        by.setdefault('(launch -> start)', []).append(st.start_time - st.launch_time)\n"
        "    rec = i.get_run_record_by_id(r.run_id)\n"
        "    if not (st.start_time and st.end_time):\n"
        "        unfinished.append(r.status.value)  # never started, or still running\n"
        "        continue\n"
        "    spans.append([rec.create_timestamp.timestamp(), st.start_time, st.end_time])\n"
        "t0 = min(c for c, _, _ in spans)\n"
        "edges = sorted([(a, 1) for _, a, _ in spans] + [(b, -1) for _, _, b in spans])\n"
        "live = peak = 0\n"
        "for _, d in edges:\n"
        "    live += d; peak = max(peak, live)\n"
        "print(json.dumps({'steps_mean_s': {k: round(statistics.mean(v), 2) for k, v in by.items()},\n"
        "  'runs_timeline_s': sorted([round(c - t0, 1), round(a - t0, 1), round(b - t0, 1)] for c, a, b in spans),\n"
        "  'runs_at_once_max': peak, 'runs_unfinished': unfinished}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"reading the runs' stats failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topology_scale")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--runs", default="1,2,4", help="run caps to measure, comma-separated")
    parser.add_argument("--parser-latency-ms", type=float, default=100.0)
    parser.add_argument("--embedder-latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "topology_scale.json"
    )
    args = parser.parse_args(argv)
    results = []
    with Infra() as infra:
        workdir = infra.workdir / "scale"
        for runs in (int(r) for r in args.runs.split(",")):
            infra.reset_mocks(args.parser_latency_ms, args.embedder_latency_ms)
            result = measure(infra, runs, args.docs, workdir)
            results.append(result)
            print(json.dumps(result), flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'runs':>4} {'docs/s':>7} {'vectors/s':>9} {'wall s':>7} {'CPU use':>7}  busiest")
    for r in results:
        print(
            f"{r['max_concurrent_runs']:>4} {r['documents_per_s']:>7} {r['vectors_per_s']:>9}"
            f" {r['wall_s']:>7} {r['cpu_utilisation']:>7}  {r['busiest']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
