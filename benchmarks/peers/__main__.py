"""`python -m benchmarks.peers [--docs 300,1000] [--systems docpipe,langchain,llamaindex]`.

Starts the benchmark's own embedded Postgres and mocks (benchmarks.infra), runs each system
first and unchanged re-run per corpus size, with each embedder (zero latency; realistic:
100 ms + 1 ms per input a request) and each peer at its own splitter and at docpipe's chunk
size, prints the table and writes the JSON (--out).
Needs the `bench` extra: `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from benchmarks.infra import REPO_ROOT, Infra
from benchmarks.peers.bench import (
    CHUNKINGS,
    EMBEDDERS,
    PEER_MIX,
    SYSTEMS,
    measure,
    options_from,
    peers_available,
    render,
    setup_peers_venv,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument("--docs", default="300,1000", help="comma list of corpus sizes")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--dims", type=int, default=1536)
    p.add_argument("--model", default="text-embedding-3-small")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mean-chars", type=int, default=10_000)
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--mix", default=PEER_MIX, help="md, txt and html only (the peers parse no PDF)")
    p.add_argument("--embedders", default=",".join(EMBEDDERS), help="zero_latency,realistic")
    p.add_argument(
        "--chunkings", default=",".join(CHUNKINGS), help="the peers' splitters: own,docpipe"
    )
    p.add_argument("--parser-latency-ms", type=float, default=0.0)
    p.add_argument("--repeat", type=int, default=1, help="pairs per system; the median is kept")
    p.add_argument(
        "--profile",
        nargs="?",
        const="docpipe",
        default="",
        help="also py-spy a first and a re-run of these systems (comma list; alone: docpipe)",
    )
    p.add_argument(
        "--setup", action="store_true", help="create/update the peers' venv (.venv-peers) and exit"
    )
    p.add_argument(
        "--peers-python", type=Path, default=None, help="default: .venv-peers/bin/python"
    )
    p.add_argument("--database-url", default=os.environ.get("DOCPIPE_DATABASE_URL") or None)
    p.add_argument("--workdir", default=None, help="keep everything here (default: a temp dir)")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "peers.json"))
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.docs.split(",") if x.strip()]
    args.system_list = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(args.system_list) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown system(s): {sorted(unknown)}")
    args.embedder_list = tuple(x.strip() for x in args.embedders.split(",") if x.strip())
    args.chunking_list = tuple(x.strip() for x in args.chunkings.split(",") if x.strip())
    if set(args.embedder_list) - set(EMBEDDERS) or set(args.chunking_list) - set(CHUNKINGS):
        p.error(f"--embedders: {sorted(EMBEDDERS)}; --chunkings: {list(CHUNKINGS)}")
    if "pdf" in args.mix:
        p.error("--mix: the peers parse no PDF; use md, txt and html")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup:
        setup_peers_venv()
        return 0
    missing = peers_available(args.peers_python)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    started = time.perf_counter()
    with Infra(Path(args.workdir) if args.workdir else None, args.database_url) as infra:
        with psycopg.connect(infra.new_database("version")) as conn:
            versions = {
                "postgres": conn.execute("SHOW server_version").fetchone()[0],
                "pgvector": conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()[0],
            }
        doc = measure(
            infra,
            args.sizes,
            args.system_list,
            **options_from(
                args,
                mix=args.mix,
                embedders=args.embedder_list,
                chunkings=args.chunking_list,
                parser_latency_ms=args.parser_latency_ms,
                profile=tuple(s for s in args.profile.split(",") if s),
                peers_python=args.peers_python,
            ),
        )
    doc.update(
        command="python -m benchmarks.peers "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions={**versions, **doc.pop("versions", {})},
        seconds=round(time.perf_counter() - started, 1),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print()
    print(render(doc["table"]))
    for docs, size in doc["sizes"].items():
        for name, variant in size["variants"].items():
            print(f"{docs} docs {name} ratios: {json.dumps(variant['ratios'])}")
    print(f"\nwrote {out} ({doc['seconds']} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
