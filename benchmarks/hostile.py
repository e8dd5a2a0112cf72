"""The hostile-binaries corpus through the parse sandbox, timed, with peak memory.

    python -m benchmarks.hostile                  # the 200,000-row sheet: minutes
    python -m benchmarks.hostile --sheet-rows 20000

Each file of `docpipe_dagster_tests/reliability/corpus.hostile_files` goes through
`parse_locally` as the parse stage calls it (default limits unless DOCPIPE_PARSE_* are set);
prints each outcome and time, and the peak RSS of this process (standing in for the run
worker) and of the largest sandbox worker, sampled every 10 ms. docs/RELIABILITY.md,
"Hostile binaries", records a run.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

import psutil

from docpipe_dagster.clients.llamaparse import ParseError
from docpipe_dagster.pipeline.local_parse import parse_locally, sandbox
from docpipe_dagster_tests.reliability.corpus import hostile_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sheet-rows", type=int, default=200_000)
    args = parser.parse_args(argv)

    started = time.monotonic()
    files = hostile_files(sheet_rows=args.sheet_rows)
    print(f"generated {len(files)} files in {time.monotonic() - started:.1f} s")
    me = psutil.Process()
    base = me.memory_info().rss
    peak = {"self": base, "worker": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak["self"] = max(peak["self"], me.memory_info().rss)
            for pid in sandbox().pids():
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(pid).memory_info().rss
                    peak["worker"] = max(peak["worker"], rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for case, data in files:
        name = case.key.rsplit("/", 1)[-1]
        started = time.monotonic()
        try:
            parsed = parse_locally(name, data)
            outcome = f"completed, {parsed.page_count} pages, {len(parsed.markdown) / 1e6:.1f} MB"
        except ParseError as exc:
            outcome = f"failed {exc.code}: {exc.reason[:100]}"
        seconds = time.monotonic() - started
        print(f"{case.kind:<60}{len(data) / 1e6:8.2f} MB{seconds:8.1f} s  {outcome}")
    stop.set()
    sampler.join()
    print(
        f"peak RSS: this process {peak['self'] / 2**20:.0f} MiB (grew "
        f"{(peak['self'] - base) / 2**20:.0f} MiB), largest worker {peak['worker'] / 2**20:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
