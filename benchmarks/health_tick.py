"""What one tick of the health sensor costs (`python -m benchmarks.health_tick`).

    python -m benchmarks.health_tick [--ticks 20]

On its own embedded Postgres and mocks (benchmarks.infra), it runs the sensor's work —
the database checks, the parser, embedder and storage probes, and recording the results for
the metrics — `--ticks` times and prints the median and largest wall time and the CPU time
of this process per tick. At the default interval (DOCPIPE_HEALTH_INTERVAL_SECONDS=10) the
daemon runs one tick every 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.infra import LOCAL_MOCK_API_KEY, Infra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args(argv)
    with Infra() as infra:
        assert infra.parser and infra.embedder
        url = infra.new_database("health")
        os.environ.update(
            {
                "DOCPIPE_DATABASE_URL": url,
                "DOCPIPE_STORAGE_BACKEND": "folder",
                "DOCPIPE_STORAGE_DIR": str(infra.workdir / "storage"),
                "LLAMAPARSE_BASE_URL": infra.parser.base_url,
                "LLAMA_CLOUD_API_KEY": LOCAL_MOCK_API_KEY,
                "OPENAI_BASE_URL": infra.embedder.base_url + "/v1",
                "OPENAI_API_KEY": LOCAL_MOCK_API_KEY,
            }
        )
        (infra.workdir / "storage").mkdir(exist_ok=True)
        from docpipe_dagster.defs.health.checks import _record_for_metrics, collect_health

        walls, cpus = [], []
        for i in range(args.ticks + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            health = collect_health()
            _record_for_metrics(health)
            if i:  # the first tick imports the clients
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
        failed = [name for name, r in health.items() if not r.ok]
        print(
            f"health tick ({args.ticks} ticks): median {statistics.median(walls):.0f} ms wall, "
            f"max {max(walls):.0f} ms, {statistics.median(cpus):.0f} ms CPU of this process; "
            f"failed probes: {failed or 'none'}"
        )
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
