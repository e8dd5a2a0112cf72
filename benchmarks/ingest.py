"""The ingest benchmark: `python -m benchmarks.ingest [--docs 1000] [--dims 1536] [--quick]`.

In one invocation, on its own embedded Postgres (a temp DOCPIPE_HOME, or the server of
--database-url / DOCPIPE_DATABASE_URL) and its own mocks on free 127.0.0.1 ports:

\b
(a) limits: pgvector's write limits at the configured dimension with the corpus's vectors
    (COPY into an unindexed table, inserts into an HNSW-indexed table, HNSW build after load);
(b) a direct baseline: a plain asyncio script, httpx to the same mocks, COPY, no Dagster;
(c) docpipe end to end through the asset graph (`runner.ingest_pending`: the production
    `ingest_batch` job executed in-process per batch, as `docpipe ingest --wait` runs it);
(d) peers: `docpipe ingest --wait` beside LangChain's indexing API and LlamaIndex's
    IngestionPipeline (benchmarks/peers; their own venv, .venv-peers, made on first use);

over the scenarios: overhead only, realistic latency, bulk first load (+ options: reduced
`dimensions`, halfvec, bulk mode off), re-run of an unchanged corpus, trickle, memory growth
(N vs 10 N documents), upload -> searchable latency under `docpipe dev`, and the peers. It
prints a table and the targets, and writes every figure as JSON (--out). See
benchmarks/README.md.
The scenarios live in benchmarks/scenarios.py, the report in benchmarks/report.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import psycopg

from benchmarks import corpus as corpus_mod
from benchmarks.infra import REPO_ROOT, Infra
from benchmarks.report import evaluate_targets, report, table_rows
from benchmarks.scenarios import SCENARIOS, TARGETS, Bench, _machine
from docpipe_dagster.cli import run_command
from docpipe_dagster.config import settings

__all__ = ["SCENARIOS", "TARGETS", "main"]

# What --quick changes: (full run, quick run) for options left unset.
QUICK_DEFAULTS = {
    "docs": (1000, 150),
    "probe_insert_rows": (400, 100),
    "random_probe_rows": (5000, 0),
    "trickle_batches": (5, 3),
    "trickle_docs": (20, 10),
    "memory_docs": (1000, 100),
    "dev_files": (10, 5),
    "repeat": (3, 1),
    "dev_tuned": (True, False),
    "peers_docs": ("300,1000", "300"),
    "production_docs": (1000, 100),
    "production_repeat": (2, 1),
    "production_latency_files": (20, 5),
    "production_runs": ("1,2,4", ""),
}


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help=__doc__,
)
@click.option(
    "--docs", type=int, default=None, help="documents in the main corpus (1000; --quick 150)"
)
@click.option("--dims", type=int, default=1536, show_default=True)
@click.option("--model", default="text-embedding-3-small", show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--mean-chars",
    type=int,
    default=10_000,
    show_default=True,
    help="mean document size (log-normal)",
)
@click.option(
    "--sigma", type=float, default=0.6, show_default=True, help="log-normal sigma of document sizes"
)
@click.option(
    "--mix",
    default=corpus_mod.DEFAULT_MIX,
    show_default=True,
    help="formats and weights, e.g. md:5,txt:2,html:2,pdf:1",
)
@click.option(
    "--scenarios", default=",".join(SCENARIOS), show_default=True, help="comma list of scenarios"
)
@click.option("--skip", default="", help="comma list of scenarios to leave out")
@click.option("--quick", is_flag=True, help="small sizes everywhere (a few minutes)")
@click.option(
    "--parser-latency-ms",
    type=float,
    default=100.0,
    show_default=True,
    help="per parser request (3 a document)",
)
@click.option(
    "--embedder-latency-ms",
    type=float,
    default=50.0,
    show_default=True,
    help="per embeddings request",
)
@click.option(
    "--maintenance-work-mem",
    default="1GB",
    show_default=True,
    help="cap for HNSW builds (docpipe and probes)",
)
@click.option(
    "--parallel-workers",
    type=int,
    default=max(0, min(2, (os.cpu_count() or 1) - 1)),
    show_default=True,
)
@click.option(
    "--reduced-dims",
    type=int,
    default=512,
    show_default=True,
    help="the `dimensions` option measured (0: skip)",
)
@click.option("--probe-insert-rows", type=int, default=None)
@click.option(
    "--random-probe-rows", type=int, default=None, help="random dense vectors probe (0: skip)"
)
@click.option("--trickle-batches", type=int, default=None)
@click.option("--trickle-docs", type=int, default=None)
@click.option("--memory-docs", type=int, default=None, help="N of the N vs 10 N memory scenario")
@click.option("--memory-mean-chars", type=int, default=2000, show_default=True)
@click.option("--dev-files", type=int, default=None)
@click.option("--dev-settle-seconds", type=float, default=None, help="default: docpipe's")
@click.option("--dev-sensor-interval", type=int, default=None, help="default: docpipe's")
@click.option(
    "--dev-tuned/--no-dev-tuned",
    default=None,
    help="also measure with DOCPIPE_SETTLE_SECONDS=0.5 DOCPIPE_SENSOR_INTERVAL_SECONDS=1 "
    "(default: on, off with --quick)",
)
@click.option(
    "--production-docs",
    type=int,
    default=lambda: int(os.environ.get("DOCPIPE_BENCH_PRODUCTION_DOCS", 0)) or None,
    help="documents of the production scenario's burst (1000; --quick 100; 10000 takes "
    "long; env DOCPIPE_BENCH_PRODUCTION_DOCS)",
)
@click.option("--production-repeat", type=int, default=None, help="burst/CLI pairs (2; --quick 1)")
@click.option(
    "--production-latency-files", type=int, default=None, help="single files (20; --quick 5)"
)
@click.option(
    "--production-runs", default=None, help="run caps for the runs table (1,2,4; --quick none)"
)
@click.option(
    "--peers-docs", default=None, help="corpus sizes of the peers scenario (300,1000; --quick 300)"
)
@click.option(
    "--peers-systems",
    default="docpipe,docpipe_local,langchain,llamaindex",
    show_default=True,
    help="systems of the peers scenario",
)
@click.option(
    "--peers-embedders",
    default="zero_latency,realistic",
    show_default=True,
    help="the peers scenario's embedder mocks (realistic: 100 ms + 1 ms per input a request)",
)
@click.option(
    "--peers-chunkings",
    default="own,docpipe",
    show_default=True,
    help="the peers' splitters: their own usual ones, docpipe's chunk size",
)
@click.option(
    "--peers-profile",
    default="",
    help="py-spy these docpipe systems in the peers scenario (e.g. docpipe,docpipe_local)",
)
@click.option(
    "--database-url",
    default=lambda: settings().database_url or None,
    help="default: DOCPIPE_DATABASE_URL, else an embedded server",
)
@click.option("--workdir", default=None, help="keep everything here (default: a temp dir, removed)")
@click.option(
    "--out", default=str(REPO_ROOT / "benchmarks" / "results" / "ingest.json"), show_default=True
)
@click.option("--repeat", type=int, default=None, help="overhead runs per system (3; --quick 1)")
@click.option("--run-timeout", type=float, default=1800.0, show_default=True)
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    for name, (full, quick) in QUICK_DEFAULTS.items():
        if options[name] is None:
            options[name] = quick if options["quick"] else full
    chosen = [s.strip() for s in options["scenarios"].split(",") if s.strip()]
    skipped = {s.strip() for s in options["skip"].split(",") if s.strip()}
    unknown = (set(chosen) | skipped) - set(SCENARIOS)
    if unknown:
        raise click.UsageError(f"unknown scenario(s): {sorted(unknown)}")
    args = SimpleNamespace(
        **options, selected=[s for s in SCENARIOS if s in chosen and s not in skipped]
    )
    ctx.exit(run(args, ctx.obj))


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.ingest`; the exit status is 1 when a scenario failed."""
    return run_command(cli, argv, "python -m benchmarks.ingest", obj=argv)


def run(args: SimpleNamespace, argv: list[str] | None) -> int:
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    command = "python -m benchmarks.ingest " + " ".join(argv if argv is not None else sys.argv[1:])
    workdir = Path(args.workdir) if args.workdir else None
    doc: dict[str, Any] = {
        "command": command.strip(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("database_url",)},
        "database": "external (DOCPIPE_DATABASE_URL)"
        if args.database_url
        else "embedded (temp DOCPIPE_HOME)",
        "scenarios": {},
        "limits": {},
        "skipped": {},
    }
    with Infra(workdir, args.database_url) as infra:
        with psycopg.connect(infra.server_url) as conn:
            doc["machine"]["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        with psycopg.connect(infra.new_database("version")) as conn:
            doc["machine"]["pgvector"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
        doc["processes"] = {  # so a caller can check that nothing was left running
            "parser_mock": infra.parser.proc.pid,
            "embedder_mock": infra.embedder.proc.pid,
            "postgres": infra.postgres_pids()[:1],
        }
        bench = Bench(args, infra)
        order = [s for s in SCENARIOS if s in args.selected]
        for name in order:
            t = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                getattr(bench, "probes" if name == "limits" else name)()
            except Exception as exc:  # one scenario's failure is reported, the rest still run
                doc["skipped"][name] = f"failed: {exc.__class__.__name__}: {exc}"[:2000]
                print(f"   {name} FAILED: {exc}", flush=True)
            print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
        for name in SCENARIOS:
            if name not in args.selected:
                doc["skipped"].setdefault(name, "not selected")
        doc["scenarios"] = bench.results
        doc["limits"] = bench.limits
    doc["targets"] = evaluate_targets(doc["scenarios"])
    doc["table"] = table_rows(doc["scenarios"])
    doc["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print()
    print(report(doc))
    print(f"\nwrote {out} ({doc['seconds']} s in all)")
    return 1 if any(v.startswith("failed") for v in doc["skipped"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
