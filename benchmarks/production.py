"""The production path beside the command line, on one corpus, in one run.

    python -m benchmarks.production --docs 1000            # burst + latency + runs 1,2,4
    python -m benchmarks.production --docs 200 --runs ""   # a quick look (no run-cap table)

For each measurement a fresh docpipe database and Dagster database on the benchmark's one
embedded Postgres, and the topology `docpipe dev` starts: `dagster code-server start`, the
webserver and `dagster-daemon run` over gRPC, with the shipped dagster.yaml plus Postgres
storage, and docpipe's default settings (settle time, sensor interval, batch size). Then:

- **burst**: the corpus is copied into the storage folder at once; timed from the start of
  the copy to the last document `completed` (or `failed`);
- **cli**: `docpipe ingest <corpus> --wait` on the same corpus, right after (alternating
  with the burst when `--repeat` > 1), timed to the same point (the last document settled,
  polled in its database) and to the command's end; the ratio is cli s / burst s;
- both are also timed to all work done: the burst until its last run ended (the runs' HNSW
  index build and asset checks come after the documents are searchable), the CLI until the
  command returned (`done_s`, and the ratio `daemon_vs_cli_done`);
- **latency**: after the burst, `--latency-files` single files written one at a time, each
  timed from the write to its chunks in `document_chunks`, split into waiting for intake,
  registration → run, and the run; alternating with as many uploaded through the HTTP API,
  which knows the webserver as under `docpipe dev` (the push path: no wait for the sensor);
- **runs**: the burst again with max_concurrent_runs = 1, 2, 4 (`--runs`).

Run launch and step times come from Dagster's run and step stats; CPU seconds per component
are sampled (run workers = forks under the daemon's process tree).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from psycopg import sql

from benchmarks.corpus import CorpusSpec, generate
from benchmarks.devlatency import _percentile
from benchmarks.infra import REPO_ROOT, Infra, child_env, free_port, stop_group
from benchmarks.topology_scale import CpuMeter, _spawn, _step_stats, _wait, service_roots
from docpipe_dagster.local.lifeline import spawn
from docpipe_dagster.store.server import for_dagster, replace_database

BIN = Path(sys.executable).parent
LOCATION = "docpipe_dagster"
# The corpus the figures were measured on: 600 txt, 200 md, 200 html per 1,000.
MIX = "txt:3,md:1,html:1"
S = "upload_pipeline"
SETTLED = f"SELECT count(*) FILTER (WHERE state IN ('completed', 'failed')) FROM {S}.upload_jobs"
# docpipe's own stage runs per batch (stage_runs), the same on both paths: what is not in
# them is each path's cost around the stages. A row is recorded as its stage ends.
STAGE_RUNS = f"""SELECT batch_key, stage,
        extract(epoch FROM recorded_at) - seconds AS started, extract(epoch FROM recorded_at)
    FROM {S}.stage_runs WHERE batch_key IS NOT NULL ORDER BY 3"""


def stage_figures(conn: psycopg.Connection) -> dict[str, Any]:
    """From one read of docpipe's stage_runs: the median seconds per batch of each stage;
    every batch's stage spans as [stage, start, end] in seconds from the first stage's start
    (intake's check left out); and the seconds during which two or more batches were in the
    same stage at once (both run slots embedding against one embedder, say)."""
    rows = [(b, st, float(a), float(e)) for b, st, a, e in conn.execute(STAGE_RUNS).fetchall()]
    seconds: dict[str, list[float]] = {}
    for _, stage, started, ended in rows:
        seconds.setdefault(stage, []).append(ended - started)
    medians = {stage: round(statistics.median(v), 2) for stage, v in seconds.items()}
    spans = [r for r in rows if r[1] != "intake"]
    t0 = spans[0][2] if spans else 0.0
    batches: dict[str, list[list[Any]]] = {}
    edges: dict[str, list[tuple[float, int]]] = {}
    for batch, stage, started, ended in spans:
        a, b = started - t0, ended - t0
        batches.setdefault(batch, []).append([stage, round(a, 2), round(b, 2)])
        edges.setdefault(stage, []).extend([(a, 1), (b, -1)])
    at_once: dict[str, float] = {}
    for stage, points in edges.items():
        live, last, total = 0, 0.0, 0.0
        for t, d in sorted(points):
            if live >= 2:
                total += t - last
            live, last = live + d, t
        at_once[stage] = round(total, 2)
    return {
        "stage_median_s": medians,
        "stage_spans": {"batches": batches, "same_stage_at_once_s": at_once},
    }


def instance_yaml(runs: int | None) -> str:
    """The dev instance: the shipped dagster.yaml plus Postgres storage (as `docpipe dev`
    writes it); `runs` overrides max_concurrent_runs."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["storage"] = {"postgres": {"postgres_url": {"env": "DOCPIPE_DAGSTER_DATABASE_URL"}}}
    if runs:
        config["concurrency"]["runs"]["max_concurrent_runs"] = runs
    return yaml.safe_dump(config, sort_keys=False)


class Topology:
    """Code server, webserver and daemon on fresh databases; `with` stops them all."""

    def __init__(
        self,
        infra: Infra,
        workdir: Path,
        label: str,
        runs: int | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.infra, self.label, self.runs = infra, label, runs
        self.home = workdir / label
        self.procs: list[subprocess.Popen] = []
        self.database_url = infra.new_database(f"prod_{label}")
        self.dagster_db = f"bench_prod_{label}_dagster_{os.getpid()}"
        with psycopg.connect(infra.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dagster_db)))
        dagster_home = self.home / "dagster_home"
        dagster_home.mkdir(parents=True)
        (dagster_home / "dagster.yaml").write_text(instance_yaml(runs))
        self.storage = self.home / "storage"
        self.storage.mkdir()
        assert infra.parser and infra.embedder
        self.env = child_env(
            DAGSTER_HOME=str(dagster_home),
            DOCPIPE_HOME=str(self.home),
            DOCPIPE_DATABASE_URL=self.database_url,
            DOCPIPE_DAGSTER_DATABASE_URL=for_dagster(
                replace_database(infra.server_url, self.dagster_db)
            ),
            LLAMAPARSE_BASE_URL=infra.parser.base_url,
            OPENAI_BASE_URL=infra.embedder.base_url + "/v1",
            DOCPIPE_STORAGE_BACKEND="folder",
            DOCPIPE_STORAGE_DIR=str(self.storage),
            **(extra_env or {}),
        )

    def __enter__(self) -> Topology:
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        port, web_port = free_port(), free_port()
        workspace = self.home / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server: "
            f"{{host: 127.0.0.1, port: {port}, location_name: {LOCATION}}}\n"
        )
        log = self.home / "topology.log"
        self.code_server = _spawn(
            [
                str(BIN / "dagster"),
                *("code-server", "start", "-h", "127.0.0.1", "-p", str(port)),
                *("-m", "docpipe_dagster.definitions", "--location-name", LOCATION),
            ],
            self.env,
            log,
        )
        self.procs.append(self.code_server)
        health = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        _wait(
            lambda: subprocess.run(health, env=self.env, capture_output=True).returncode == 0,
            180,
            "the code server",
        )
        ws = ["-w", str(workspace)]
        web = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), *ws]
        self.procs.append(_spawn(web, self.env, log))
        self.daemon = _spawn([str(BIN / "dagster-daemon"), "run", *ws], self.env, log)
        self.procs.append(self.daemon)
        # The HTTP API as `docpipe dev` starts it: it knows the webserver (the push path).
        self.api = f"http://127.0.0.1:{free_port()}"
        api_env = {
            **self.env,
            "DOCPIPE_API_KEY": API_KEY,
            "DOCPIPE_DAGSTER_URL": f"http://127.0.0.1:{web_port}",
        }
        api = [sys.executable, "-m", "docpipe_dagster.api", "--port", self.api.rsplit(":", 1)[1]]
        self.procs.append(_spawn(api, api_env, log))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            stop_group(proc)
        with contextlib.suppress(psycopg.Error):
            self.infra.drop_database(self.database_url)
        with contextlib.suppress(psycopg.Error):
            self.infra.drop_database(self.dagster_db)

    def settled(self, conn: psycopg.Connection) -> int:
        """Documents settled, on the poll's one connection (a connection per poll would
        fork a Postgres backend each time, on the machine being measured)."""
        return int(conn.execute(SETTLED).fetchone()[0])

    def wait_for_runs_to_end(self, timeout: float) -> None:
        """Until no run is queued, starting or running (Dagster's run storage, polled on one
        connection: a connection per poll would fork a Postgres backend each time)."""
        url = replace_database(self.infra.server_url, self.dagster_db)
        query = (
            "SELECT count(*) FROM runs WHERE status IN"
            " ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            _wait(lambda: not conn.execute(query).fetchone()[0], timeout, "the runs to end")

    def burst(self, corpus: Path, docs: int, timeout: float) -> dict[str, Any]:
        """Copy the corpus into storage at once; seconds to the last document settled."""
        meter = CpuMeter(
            {
                # The dev instance's launcher forks run workers from a forkserver under the
                # daemon: the daemon's process tree holds them.
                "code server": [self.code_server.pid],
                "daemon + run workers": [self.daemon.pid],
                **service_roots(self.infra),
            }
        )
        meter.start()
        started = time.monotonic()
        shutil.copytree(corpus, self.storage / corpus.name)
        copied = time.monotonic() - started

        with psycopg.connect(self.database_url, autocommit=True) as conn:

            def done() -> bool:
                meter.sample()
                return self.settled(conn) >= docs

            _wait(done, timeout, f"{docs} documents")
        wall = time.monotonic() - started
        cpu = meter.used()
        self.wait_for_runs_to_end(timeout)
        done_s = time.monotonic() - started
        with psycopg.connect(self.database_url) as conn:
            states = dict(
                conn.execute(f"SELECT state, count(*) FROM {S}.upload_jobs GROUP BY 1").fetchall()
            )
            (chunks,) = conn.execute(f"SELECT count(*) FROM {S}.document_chunks").fetchone()
            stages = stage_figures(conn)
        return {
            "documents": docs,
            "copy_s": round(copied, 2),
            "wall_s": round(wall, 2),
            "done_s": round(done_s, 2),
            "documents_per_s": round(docs / wall, 1),
            "chunks": chunks,
            "states": states,
            "cpu_s": cpu,
            **stages,
            "runs": _step_stats(self.env),
            "load_average_1m": round(os.getloadavg()[0], 1),
        }

    def latency(self, files: int, timeout: float = 120.0) -> dict[str, Any]:
        """Single files, one at a time: write -> searchable, and its parts. Files dropped
        into the storage folder (the API's watcher pushes them; the sensor with
        DOCPIPE_WATCH_STORAGE=false) alternate with files uploaded through the API (the push
        path); the top-level figures are the dropped files', `api` the uploads'."""
        samples: dict[str, list[dict[str, Any]]] = {"folder": [], "api": []}
        folder = self.storage / "latency"
        folder.mkdir(exist_ok=True)
        _wait(lambda: _answers(f"{self.api}/openapi.json"), 60, "the API")
        client = httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        )
        with client, psycopg.connect(self.database_url, autocommit=True) as conn:
            for i in range(files):
                for via in ("folder", "api"):
                    key = f"latency/{via}-{i:03d}.md"
                    text = (
                        f"# Upload {i}\n\nLatency probe {key}: the quick brown fox {i} jumps "
                        f"over the lazy dog {i} while the benchmark waits for it to become "
                        "searchable.\n"
                    )
                    wall0 = datetime.now(timezone.utc)
                    t0 = time.monotonic()
                    if via == "api":
                        up = client.post(
                            "/v1/documents",
                            files={"file": (key.split("/")[1], text.encode())},
                            data={"prefix": "latency"},
                        )
                        up.raise_for_status()
                    else:
                        tmp = folder / f".{via}-{i:03d}.md.tmp"
                        tmp.write_text(text)
                        os.replace(tmp, self.storage / key)  # appears complete, like an upload
                    samples[via].append(_latency_sample(conn, key, wall0, t0, timeout))
        folder_figures = _latency_figures(samples["folder"])
        return {"files": files, **folder_figures, "api": _latency_figures(samples["api"])}


API_KEY = "benchmark-api-key-not-a-secret"


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).is_success
    return False


def _latency_sample(
    conn: psycopg.Connection, key: str, wall0: datetime, t0: float, timeout: float
) -> dict[str, Any]:
    def searchable() -> bool:
        (n,) = conn.execute(
            f"SELECT count(*) FROM {S}.document_chunks WHERE storage_key = %s", (key,)
        ).fetchone()
        return n > 0

    _wait(searchable, timeout, f"{key} to become searchable")
    seconds = time.monotonic() - t0
    at = {
        (t, s): ts
        for t, s, ts in conn.execute(
            f"SELECT e.event_type, e.stage, min(e.created_at) FROM {S}.events e"
            f" JOIN {S}.upload_jobs j USING (job_id) WHERE j.storage_key = %s"
            " GROUP BY 1, 2",
            (key,),
        ).fetchall()
    }
    sample: dict[str, Any] = {"seconds": round(seconds, 3)}
    registered = at.get(("registered", "intake"))
    first_run = min((ts for (_t, s), ts in at.items() if s == "parse"), default=None)
    if registered is not None and first_run is not None:
        sample["to_registered"] = round((registered - wall0).total_seconds(), 3)
        sample["registered_to_run"] = round((first_run - registered).total_seconds(), 3)
        sample["in_run"] = round(seconds - (first_run - wall0).total_seconds(), 3)
    return sample


def _latency_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    values = [s["seconds"] for s in samples]
    parts = {
        name: round(statistics.median([s[name] for s in samples if name in s]), 3)
        for name in ("to_registered", "registered_to_run", "in_run")
        if any(name in s for s in samples)
    }
    return {
        "p50_s": round(_percentile(values, 0.5), 3),
        "p95_s": round(_percentile(values, 0.95), 3),
        "max_s": round(max(values), 3) if values else None,
        "median_parts_s": parts,
        "samples": samples,
    }


def cli_ingest(
    infra: Infra,
    workdir: Path,
    corpus: Path,
    docs: int,
    label: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`docpipe ingest <corpus> --wait` on a fresh database: the whole process."""
    url = infra.new_database(f"cli_{label}")
    storage = workdir / f"cli-{label}" / "storage"
    storage.mkdir(parents=True)
    assert infra.parser and infra.embedder
    env = child_env(
        DOCPIPE_DATABASE_URL=url,
        DOCPIPE_DAGSTER_DATABASE_URL=url,
        DOCPIPE_HOME=str(workdir / f"cli-{label}"),
        DOCPIPE_STORAGE_BACKEND="folder",
        DOCPIPE_STORAGE_DIR=str(storage),
        LLAMAPARSE_BASE_URL=infra.parser.base_url,
        OPENAI_BASE_URL=infra.embedder.base_url + "/v1",
        **(extra_env or {}),
    )
    try:
        started = time.monotonic()
        proc = spawn(
            [str(BIN / "docpipe"), "ingest", str(corpus), "--wait"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The same processes as the burst's meter, with the command's own tree in place of
        # the code server, daemon and run workers.
        meter = CpuMeter({"command": [proc.pid], **service_roots(infra)})
        meter.start()
        settled_at = _poll_settled(url, docs, proc, meter)
        cpu = meter.used()
        stdout, stderr = proc.communicate()
        done = time.monotonic() - started
        wall = (settled_at or time.monotonic()) - started
        if proc.returncode != 0:
            raise RuntimeError(f"docpipe ingest --wait failed:\n{stdout[-1500:]}{stderr[-1500:]}")
        with psycopg.connect(url) as conn:
            states = dict(
                conn.execute(f"SELECT state, count(*) FROM {S}.upload_jobs GROUP BY 1").fetchall()
            )
            (chunks,) = conn.execute(f"SELECT count(*) FROM {S}.document_chunks").fetchone()
            stages = stage_figures(conn)
    finally:
        with contextlib.suppress(psycopg.Error):
            infra.drop_database(url)
    return {
        "documents": docs,
        "wall_s": round(wall, 2),
        "done_s": round(done, 2),
        "documents_per_s": round(docs / wall, 1),
        "chunks": chunks,
        "states": states,
        **stages,
        "cpu_s": cpu,
    }


def _poll_settled(url: str, docs: int, proc: subprocess.Popen, meter: CpuMeter) -> float | None:
    """time.monotonic() when `docs` documents had settled in `url`'s database, polled while
    `proc` runs (its output is read once it ends: the command prints a summary only); the
    meter sampled at each poll (the command's run threads' processes come and go)."""
    with psycopg.connect(url, autocommit=True) as conn:  # one connection for every poll
        while proc.poll() is None:
            meter.sample()
            with contextlib.suppress(psycopg.Error):  # before the command's first migration
                if conn.execute(SETTLED).fetchone()[0] >= docs:
                    return time.monotonic()
            time.sleep(0.2)
    return None


def measure(
    infra: Infra,
    workdir: Path,
    *,
    docs: int,
    repeat: int = 1,
    latency_files: int = 10,
    runs: list[int] | None = None,
    timeout: float = 3600.0,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Burst under the topology and `ingest --wait` on the same corpus, `repeat` pairs
    (alternating), the latency probe after the first burst, then the run-cap table."""
    staging = workdir / "corpus"
    files = generate(CorpusSpec(docs=docs, mix=MIX, prefix=f"prod{docs}"), staging)
    corpus = staging / f"prod{docs}"
    pairs: list[dict[str, Any]] = []
    latency: dict[str, Any] | None = None
    for i in range(repeat):
        pair: dict[str, Any] = {}
        order = ("daemon", "cli") if i % 2 == 0 else ("cli", "daemon")
        for system in order:
            if system == "cli":
                pair["cli"] = cli_ingest(
                    infra, workdir, corpus, len(files), f"{docs}_{i}", extra_env
                )
                continue
            with Topology(infra, workdir, f"burst{docs}_{i}", None, extra_env) as topo:
                time.sleep(3)  # the daemon's first sensor tick is done
                pair["daemon"] = topo.burst(corpus, len(files), timeout)
                if latency is None and latency_files:
                    latency = topo.latency(latency_files)
        pair["daemon_vs_cli"] = round(pair["cli"]["wall_s"] / pair["daemon"]["wall_s"], 3)
        pair["daemon_vs_cli_done"] = round(pair["cli"]["done_s"] / pair["daemon"]["done_s"], 3)
        pairs.append(pair)
        print(json.dumps({k: v for k, v in pair.items()}, default=str)[:600], flush=True)

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 3) if values else None

    result: dict[str, Any] = {
        "documents": len(files),
        "mix": MIX,
        "pairs": pairs,
        "daemon_s_median": median([p["daemon"]["wall_s"] for p in pairs]),
        "cli_s_median": median([p["cli"]["wall_s"] for p in pairs]),
        "daemon_vs_cli_median": median([p["daemon_vs_cli"] for p in pairs]),
        "daemon_done_s_median": median([p["daemon"]["done_s"] for p in pairs]),
        "cli_done_s_median": median([p["cli"]["done_s"] for p in pairs]),
        "daemon_vs_cli_done_median": median([p["daemon_vs_cli_done"] for p in pairs]),
        "latency": latency,
        "settings": dict(extra_env or {}),
        "runs": [],
    }
    for cap in runs or []:
        with Topology(infra, workdir, f"runs{cap}_{docs}", cap, extra_env) as topo:
            time.sleep(3)
            one = topo.burst(corpus, len(files), timeout)
        one["max_concurrent_runs"] = cap
        result["runs"].append(one)
        print(json.dumps({"runs": cap, "wall_s": one["wall_s"]}), flush=True)
    shutil.rmtree(staging, ignore_errors=True)
    return result


def summary(result: dict[str, Any]) -> list[str]:
    """The printed lines, with the targets met / NOT MET."""

    def met(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    n = result["documents"]
    ratio = result["daemon_vs_cli_median"]
    lines = [f"production path, {n} documents ({result['mix']}), {len(result['pairs'])} pair(s):"]
    if any((result.get("mock_latency_ms") or {}).values()):
        lines.append(f"  mocks' added latency (ms): {result['mock_latency_ms']}")
    if ratio is not None:
        lines.append(
            f"  burst under the daemon {result['daemon_s_median']} s, `ingest --wait` "
            f"{result['cli_s_median']} s: daemon = {ratio}x the CLI (target >= 0.9: "
            f"{met(ratio >= 0.9)}); per pair {[p['daemon_vs_cli'] for p in result['pairs']]}"
        )
        done = result["daemon_vs_cli_done_median"]
        lines.append(
            f"  to all work done (runs ended / command returned): daemon "
            f"{result['daemon_done_s_median']} s, CLI {result['cli_done_s_median']} s: "
            f"{done}x (>= 0.9: {met(done >= 0.9)}); per pair "
            f"{[p['daemon_vs_cli_done'] for p in result['pairs']]}"
        )
    for i, pair in enumerate(result["pairs"]):
        if "stage_median_s" in pair["daemon"]:  # results saved before the split have none
            lines.append(
                f"  pair {i + 1}, median seconds per batch by stage (docpipe's stage_runs): "
                f"daemon {pair['daemon']['stage_median_s']}, CLI {pair['cli']['stage_median_s']}"
            )
        if "stage_spans" in pair["cli"]:
            lines.append(
                f"  pair {i + 1}, seconds two batches spent in the same stage at once: daemon "
                f"{pair['daemon']['stage_spans']['same_stage_at_once_s']}, "
                f"CLI {pair['cli']['stage_spans']['same_stage_at_once_s']}"
            )
        if "cpu_s" in pair["cli"]:
            lines.append(
                f"  pair {i + 1}, CPU seconds to searchable: daemon {pair['daemon']['cpu_s']}, "
                f"CLI {pair['cli']['cpu_s']}"
            )
    lat = result.get("latency")
    if lat:
        for what, figures in (("dropped into storage", lat), ("uploaded (API)", lat.get("api"))):
            if not figures:
                continue
            lines.append(
                f"  {what} -> searchable, {lat['files']} single files: p50 {figures['p50_s']} s "
                f"(target <= 3: {met(figures['p50_s'] <= 3)}), p95 {figures['p95_s']} s "
                f"(target <= 5: {met(figures['p95_s'] <= 5)}); median parts "
                f"{figures['median_parts_s']}"
            )
    for r in result.get("runs", []):
        lines.append(
            f"  max_concurrent_runs={r['max_concurrent_runs']}: {r['wall_s']} s, "
            f"{r['documents_per_s']} docs/s, runs at once {r['runs'].get('runs_at_once_max')}, "
            f"CPU s {r['cpu_s']}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.production")
    parser.add_argument(
        "--docs", type=int, default=int(os.environ.get("DOCPIPE_BENCH_PRODUCTION_DOCS", 1000))
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="burst/CLI pairs, alternating (0: runs table only)"
    )
    parser.add_argument("--latency-files", type=int, default=10)
    parser.add_argument("--runs", default="1,2,4", help="run caps for the table ('' to skip)")
    parser.add_argument("--parser-latency-ms", type=float, default=0.0)
    parser.add_argument("--embedder-latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--embedder-per-input-ms",
        type=float,
        default=0.0,
        help="added per input of a request (100 and 1: the peers' realistic embedder)",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for both paths (repeatable)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "production.json"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with Infra(args.workdir) as infra:
        infra.reset_mocks(
            args.parser_latency_ms, args.embedder_latency_ms, args.embedder_per_input_ms
        )
        result = measure(
            infra,
            infra.workdir / "production",
            docs=args.docs,
            repeat=args.repeat,
            latency_files=args.latency_files,
            runs=[int(r) for r in args.runs.split(",") if r.strip()],
            extra_env=dict(e.split("=", 1) for e in args.env),
        )
    result["seconds"] = round(time.monotonic() - started, 1)
    result["mock_latency_ms"] = {
        "parser": args.parser_latency_ms,
        "embedder": args.embedder_latency_ms,
        "embedder_per_input": args.embedder_per_input_ms,
    }
    print("\n".join(summary(result)))
    print(f"({result['seconds']} s in all)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
