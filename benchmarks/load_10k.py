"""Load run: N small documents at once through the asset graph (`python -m benchmarks.load_10k`).

    python -m benchmarks.load_10k --docs 10000 [--dims 1536] [--batch-max-files 200]

On its own embedded Postgres (a temp DOCPIPE_HOME; or --database-url, where a fresh database
is created and dropped) and its own mocks on free 127.0.0.1 ports, it writes N small markdown
documents into a storage folder and runs `runner.ingest_pending` (what `docpipe ingest --wait`
runs: the intake scan, then one in-process Dagster run per capped batch) until nothing is
left. It prints the wall time, the batches (count, largest, the cap), the peak RSS of this
process, the documents by state and the invariant check, and exits 1 if any document did not
complete, a batch exceeded the cap or an invariant failed. The test suite runs the same at a
reduced size: docpipe_dagster_tests/reliability/test_load.py (DOCPIPE_LOAD_DOCS).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import psutil
import psycopg
from psycopg import sql

from docpipe_dagster.cli import run_command

TOPICS = ("lighthouse", "orchard", "glacier", "foundry", "monastery", "harbour", "observatory")
WORDS = ("north", "amber", "copper", "willow", "basalt", "saffron", "granite", "heron")


def small_document(i: int) -> str:
    """~300 bytes of markdown, distinct per i (one chunk each)."""
    rng = random.Random(i)
    topic = TOPICS[i % len(TOPICS)]
    words = " ".join(rng.choice(WORDS) for _ in range(30))
    return (
        f"# Record {i} of the {topic}\n\n"
        f"Entry number {i}: the {topic} ledger notes {words}.\n\n"
        f"Signed by clerk {rng.randrange(10_000)} on day {rng.randrange(365)}.\n"
    )


class RssSampler:
    """Peak RSS of this process, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def run(args: SimpleNamespace) -> int:
    # Imported here so `--help` is fast and the environment is set before anything reads it.
    import dagster as dg

    from benchmarks.infra import embedded_postgres
    from docpipe_dagster.defs.resources import PipelineSettings, build_resources
    from docpipe_dagster.runner import ingest_pending
    from docpipe_dagster.store.invariants import check_invariants
    from docpipe_dagster.store.migrate import migrate
    from docpipe_dagster.store.server import replace_database
    from docpipe_dagster_tests.support.mock_servers import start_mock

    workdir = Path(tempfile.mkdtemp(prefix="docpipe-load10k-"))
    server = contextlib.ExitStack()  # the embedded server, when there is one
    mocks = []
    admin_url = args.database_url
    db_name = f"load10k_{uuid.uuid4().hex[:8]}"
    try:
        os.environ["DOCPIPE_HOME"] = str(workdir / "home")
        if admin_url is None:
            admin_url = server.enter_context(embedded_postgres(workdir / "home"))
        with psycopg.connect(replace_database(admin_url, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
        url = replace_database(admin_url, db_name)
        migrate(url)
        parser = start_mock("llamaparse", pending_seconds=0.0)
        mocks.append(parser)
        embedder = start_mock("openai")
        mocks.append(embedder)

        storage = workdir / "storage"
        started = time.perf_counter()
        for i in range(args.docs):
            path = storage / f"load/{i // 1000:03d}/doc-{i:05d}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(small_document(i))
        print(f"wrote {args.docs} documents in {time.perf_counter() - started:.1f} s", flush=True)

        for name in [n for n in os.environ if n.startswith("DOCPIPE_") and n != "DOCPIPE_HOME"]:
            del os.environ[name]
        os.environ.update(
            {
                "DOCPIPE_DATABASE_URL": url,
                "DOCPIPE_DAGSTER_DATABASE_URL": url,  # unused: the instance is ephemeral
                "DOCPIPE_STORAGE_BACKEND": "folder",
                "DOCPIPE_STORAGE_DIR": str(storage),
                "LLAMAPARSE_BASE_URL": parser.base_url,
                "OPENAI_BASE_URL": embedder.base_url + "/v1",
                "LLAMA_CLOUD_API_KEY": parser.api_key or "",
                "OPENAI_API_KEY": embedder.api_key or "",
                "DOCPIPE_EMBEDDING_DIMENSIONS": str(args.dims),
                "DOCPIPE_BATCH_MAX_FILES": str(args.batch_max_files),
                "DOCPIPE_SETTLE_SECONDS": "0",
            }
        )
        os.environ.pop("DAGSTER_HOME", None)
        resources: dict[str, Any] = build_resources()
        settings = resources["pipeline_settings"]
        assert isinstance(settings, PipelineSettings)
        assert settings.batch_max_files == args.batch_max_files

        done = [0]

        def progress(outcome: Any, _scan: Any) -> None:
            done[0] += 1
            if done[0] % 10 == 0 or not outcome.success:
                elapsed = time.perf_counter() - started
                state = "ok" if outcome.success else "RUN FAILED"
                print(f"  batch {done[0]}: {state} ({elapsed:.0f} s)", flush=True)

        with dg.DagsterInstance.ephemeral() as instance, RssSampler() as rss:
            started = time.perf_counter()
            outcomes = ingest_pending(resources=resources, instance=instance, on_batch=progress)
            wall = time.perf_counter() - started

        with psycopg.connect(url) as conn:
            batches = conn.execute(
                "SELECT count(*) AS n FROM upload_pipeline.upload_jobs GROUP BY batch_key"
            ).fetchall()
            states = dict(
                conn.execute(
                    "SELECT state, count(*) FROM upload_pipeline.upload_jobs GROUP BY state"
                ).fetchall()
            )
            chunks = conn.execute("SELECT count(*) FROM upload_pipeline.document_chunks").fetchone()
            report = check_invariants(conn, live_batches=set())

        largest = max((n for (n,) in batches), default=0)
        result = {
            "docs": args.docs,
            "dims": args.dims,
            "wall_seconds": round(wall, 1),
            "docs_per_second": round(args.docs / wall, 1) if wall else None,
            "batches": len(batches),
            "runs": len(outcomes),
            "runs_failed": sum(not o.success for o in outcomes),
            "largest_batch": largest,
            "batch_max_files": args.batch_max_files,
            "peak_rss_mib": round(rss.peak / 2**20),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "states": states,
            "searchable_chunks": chunks[0] if chunks else 0,
            "invariants_ok": report.ok,
            "invariants": report.render(limit=10),
        }
        print()
        print(f"documents        {args.docs} ({args.dims} dims)")
        print(f"wall time        {wall:.1f} s ({result['docs_per_second']} docs/s)")
        print(
            f"batches          {len(batches)} runs, largest {largest} files "
            f"(cap {args.batch_max_files}), {result['runs_failed']} runs failed"
        )
        print(f"peak RSS         {_mib(rss.peak)} (this process)")
        print(f"states           {states}")
        print(f"invariants       {report.render(limit=10)}")
        print(json.dumps(result, sort_keys=True))
        ok = (
            report.ok
            and states == {"completed": args.docs}
            and largest <= args.batch_max_files
            and result["runs_failed"] == 0
        )
        return 0 if ok else 1
    finally:
        for mock in mocks:
            with contextlib.suppress(Exception):
                mock.stop()
        if args.database_url is not None:
            with (
                contextlib.suppress(Exception),
                psycopg.connect(replace_database(admin_url, "postgres"), autocommit=True) as conn,
            ):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db_name)
                    )
                )
        with contextlib.suppress(Exception):
            server.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


@click.command(
    name="python -m benchmarks.load_10k",
    help=__doc__,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--docs", type=int, default=10_000, show_default=True)
@click.option("--dims", type=int, default=1536, show_default=True, help="embedding dimensions")
@click.option("--batch-max-files", type=int, default=200, show_default=True)
@click.option("--database-url", default=None, help="a server to create a DB on")
@click.option("--keep", is_flag=True, help="keep the temp folder")
def _command(**options: Any) -> None:
    raise click.exceptions.Exit(run(SimpleNamespace(**options)))


def main(argv: list[str] | None = None) -> int:
    return run_command(_command, argv)


if __name__ == "__main__":
    sys.exit(main())
