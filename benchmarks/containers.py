"""Throughput of the compose stack (a container per batch run) against `docpipe dev`.

    python -m benchmarks.containers                    # 1,000 documents each way
    python -m benchmarks.containers --docs 50          # a smoke run
    python -m benchmarks.containers --from-nothing     # first build every image, timed

The same N small HTML pages (through the parser mock, at --latency-ms a request) go into
storage — copied into the storage mock's bucket folder for the stack, written into the storage
folder for `docpipe dev` — --put-chunk (200) at a time, the next once those are registered
(one intake tick over 1,000 files through the storage API outlived Dagster's 60 s sensor
timeout on a busy host), and the clock runs from the first one written to the last one
`completed`. Both paths use the settings a user gets (batches of DOCPIPE_BATCH_MAX_FILES=200,
settle 1 s, intake every 2 s) unless --batch-max-files says otherwise. The stack is the test's
(docpipe_dagster_tests/deploy/stack.py: podman, the repository's compose files, the
DockerRunLauncher through `podman system service`); its memory is `podman stats` summed over
every container, sampled while the documents flow; `docpipe dev`'s is the RSS of its process
tree (embedded Postgres, mocks, code server, webserver, daemon, run workers).

--from-nothing points the image cache and podman's image store at a fresh temp directory (the
shared ones are not touched), so the base image (mmdebstrap), the wheelhouse (pip wheel from
PyPI), the docpipe image and the Postgres image are all built, each step timed; the store is
removed at the end. Needs root, podman & co. (installed with apt when missing) and the
project's .venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from docpipe_dagster_tests.deploy import containers
from docpipe_dagster_tests.deploy.stack import RUNS, Stack, document, launch_stack
from docpipe_dagster_tests.support.dev_stack import (
    DevStack,
    docpipe_dev,
    graphql,
    processes_mentioning,
    wait_for,
)

PROJECT = "docpipe-cbench"
OUT = Path(__file__).resolve().parent / "results" / "containers.json"
STORAGE_CONF = '[storage]\ndriver = "overlay"\ngraphroot = "{graph}"\nrunroot = "{run}"\n'


class PeakSampler:
    """Calls probe() every interval seconds in a thread; keeps the largest value."""

    def __init__(self, probe: Callable[[], float], interval: float) -> None:
        self.probe, self.interval, self.peak = probe, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # a probe may race a container's exit: skip that sample
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.probe())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


@contextlib.contextmanager
def fresh_engine_store(work: Path) -> Iterator[None]:
    """An empty image cache and podman image store under work, for the duration."""
    graph, run = work / "graph", work / "run"
    work.mkdir(parents=True)
    conf = work / "storage.conf"
    conf.write_text(STORAGE_CONF.format(graph=graph, run=run))
    saved_cache, saved_conf = containers.CACHE, os.environ.get("CONTAINERS_STORAGE_CONF")
    containers.CACHE = work / "cache"
    os.environ["CONTAINERS_STORAGE_CONF"] = str(conf)
    try:
        yield
    finally:
        env = {**os.environ, "CONTAINERS_CONF": str(containers.CACHE / "containers.conf")}
        containers.podman(env, "rmi", "-a", "-f", check=False, timeout=600)
        containers.CACHE = saved_cache
        if saved_conf is None:
            os.environ.pop("CONTAINERS_STORAGE_CONF", None)
        else:
            os.environ["CONTAINERS_STORAGE_CONF"] = saved_conf
        shutil.rmtree(work, ignore_errors=True)


def names(n: int) -> list[str]:
    return [f"bench{i:05d}" for i in range(n)]


def run_stack(
    work: Path, docs: int, settings: dict[str, str], timeout: float, chunk: int
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    env = containers.engine_env()
    started = time.monotonic()
    images = containers.ensure_images(env)
    result["images_s"] = round(time.monotonic() - started, 1)
    result["built_s"] = {k: round(v, 1) for k, v in images.built_s.items()}
    result["image_mb"] = {
        "docpipe": round(containers.image_size_mb(env, images.docpipe)),
        "postgres": round(containers.image_size_mb(env, images.postgres)),
    }
    result["image_mb"]["base"] = round(containers.image_size_mb(env, containers.BASE_IMAGE))
    with launch_stack(env, images, work, PROJECT, settings) as stack:
        result["start_to_healthy_s"] = round(stack.ready[-1][1], 1)
        result["ready_s"] = {name: round(at, 1) for name, at in stack.ready}
        result["idle_memory_mb"] = round(stack.memory_mb())
        batch = [document(n, word) for n, word in enumerate(names(docs))]
        with PeakSampler(stack.memory_mb, 10) as memory:
            t0 = time.monotonic()
            for k, part in enumerate(chunks(batch, chunk)):
                put_in_volume(stack, part, work / f"docs-{k}")
                registered = k * chunk + len(part)
                wait_for(lambda n=registered: sum(stack.states().values()) >= n, 600, "intake", 1)
            result["put_s"] = round(time.monotonic() - t0, 1)
            stack.wait_completed(docs, timeout)
            elapsed = time.monotonic() - t0
        result.update(_stack_runs(stack))
        result["seconds"] = round(elapsed, 1)
        result["documents_per_s"] = round(docs / elapsed, 2)
        result["peak_memory_mb"] = round(memory.peak)
        result["end_memory_mb"] = round(stack.memory_mb())
    return result


def put_in_volume(stack: Stack, batch: list[tuple[str, bytes]], folder: Path) -> None:
    """Into the storage mock's bucket folder on its volume, all at once: as fast as
    `docpipe dev`'s storage folder is written, so both paths get the same batches (through
    the mock's API, one request at a time, the sensor would cut many small ones)."""
    folder.mkdir()
    for name, data in batch:
        (folder / name).write_bytes(data)
    storage = stack.compose.container("storage-mock")
    stack.compose.podman("exec", storage, "mkdir", "-p", "/data/documents")
    stack.compose.podman("cp", f"{folder}/.", f"{storage}:/data/documents/")


def _stack_runs(stack: Stack) -> dict[str, Any]:
    runs = stack.settled_runs(300)
    ids = {r["tags"].get("docker/container_id") for r in runs}
    return {
        **run_span(runs, sum(stack.states().values())),
        "batch_runs": len(runs),
        "runs_not_success": len([r for r in runs if r["status"] != "SUCCESS"]),
        "run_containers": len(ids - {None}),
    }


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_span(runs: list[dict[str, Any]], docs: int) -> dict[str, Any]:
    """From the first batch run's start to the last one's end (Dagster's own times)."""
    starts = [r["startTime"] for r in runs if r.get("startTime")]
    ends = [r["endTime"] for r in runs if r.get("endTime")]
    if not starts or not ends:
        return {}
    span = max(ends) - min(starts)
    return {"runs_span_s": round(span, 1), "runs_span_documents_per_s": round(docs / span, 2)}


def dev_memory_mb(dev: DevStack) -> float:
    total = 0
    for proc in processes_mentioning(str(dev.home)):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 1e6


def run_dev(
    work: Path, docs: int, settings: dict[str, str], timeout: float, chunk: int
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    started = time.monotonic()
    with docpipe_dev(work, **settings) as dev:
        url = dev.docpipe("db", "url").stdout.strip().splitlines()[-1]
        with psycopg.connect(url, autocommit=True) as conn:

            def count(where: str) -> int:
                sql = f"SELECT count(*) FROM upload_pipeline.upload_jobs WHERE {where}"
                return conn.execute(sql).fetchone()[0]

            # the shipped samples, which `docpipe dev` ingests first
            wait_for(
                lambda: count("true") and not count("state NOT IN ('completed', 'failed')"),
                600,
                "the samples",
                1,
            )
            result["start_to_samples_done_s"] = round(time.monotonic() - started, 1)
            result["idle_memory_mb"] = round(dev_memory_mb(dev))
            folder = dev.home / "storage" / "bench"
            folder.mkdir(parents=True, exist_ok=True)
            mine = "storage_key LIKE 'bench/%'"
            with PeakSampler(lambda: dev_memory_mb(dev), 10) as memory:
                t0 = time.monotonic()
                batch = [document(n, word) for n, word in enumerate(names(docs))]
                for k, part in enumerate(chunks(batch, chunk)):
                    for name, data in part:
                        tmp = folder / f".{name}.tmp"
                        tmp.write_bytes(data)
                        os.replace(tmp, folder / name)  # appears whole, like an upload
                    registered = k * chunk + len(part)
                    wait_for(lambda n=registered: count(mine) >= n, 600, "intake", 1)
                result["put_s"] = round(time.monotonic() - t0, 1)

                def done() -> bool:
                    failed = count(f"{mine} AND state = 'failed'")
                    assert not failed, f"{failed} documents failed"
                    return count(f"{mine} AND state = 'completed'") >= docs

                wait_for(done, timeout, f"{docs} documents completed", 2)
                elapsed = time.monotonic() - t0
            result["end_memory_mb"] = round(dev_memory_mb(dev))
        runs = graphql(dev.base, RUNS)["runsOrError"]["results"]
    result.update(run_span(runs, docs))
    result["seconds"] = round(elapsed, 1)
    result["documents_per_s"] = round(docs / elapsed, 2)
    result["peak_memory_mb"] = round(memory.peak)
    result["batch_runs_incl_samples"] = len(runs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100, help="mock latency a request")
    parser.add_argument("--batch-max-files", type=int, default=None, help="default: 200")
    parser.add_argument("--paths", default="containers,dev", help="containers,dev")
    parser.add_argument("--from-nothing", action="store_true", help="build every image first")
    parser.add_argument(
        "--put-chunk",
        type=int,
        default=200,
        help="files written at once; the next only once these are registered (an intake tick "
        "over too many files at once outlives Dagster's 60 s sensor timeout)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="per path, seconds")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    settings = {"DOCPIPE_MOCK_LATENCY_MS": str(int(args.latency_ms))}
    if args.batch_max_files:
        settings["DOCPIPE_BATCH_MAX_FILES"] = str(args.batch_max_files)
    report: dict[str, Any] = {
        "docs": args.docs,
        "settings": settings,
        "load_before": os.getloadavg(),
    }
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory(prefix="docpipe-cbench-") as tmp:
        work = Path(tmp)
        if "containers" in paths:
            (work / "stack").mkdir()
            if args.from_nothing:
                with fresh_engine_store(work / "store"):
                    report["containers"] = run_stack(
                        work / "stack", args.docs, settings, args.timeout, args.put_chunk
                    )
            else:
                report["containers"] = run_stack(
                    work / "stack", args.docs, settings, args.timeout, args.put_chunk
                )
            _print(report)
        if "dev" in paths:
            (work / "dev").mkdir()
            report["dev"] = run_dev(work / "dev", args.docs, settings, args.timeout, args.put_chunk)
    report["load_after"] = os.getloadavg()
    if "containers" in report and "dev" in report:
        report["containers_vs_dev"] = round(
            report["containers"]["documents_per_s"] / report["dev"]["documents_per_s"], 2
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _print(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2), flush=True)
    for path in ("containers", "dev"):
        if path in report:
            r = report[path]
            print(
                f"{path:10} {report['docs']} documents in {r['seconds']} s: "
                f"{r['documents_per_s']} documents/s, peak memory {r['peak_memory_mb']} MB",
                flush=True,
            )
    if "containers_vs_dev" in report:
        print(f"containers / dev: {report['containers_vs_dev']}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
