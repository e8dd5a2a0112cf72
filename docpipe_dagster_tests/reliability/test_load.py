"""Load: many small documents at once (capped batches, bounded memory), and files written
slowly and concurrently while the intake sensor ticks (no partial file is ever registered).

The full-size run (10,000 documents) is `python -m benchmarks.load_10k --docs 10000`; here
DOCPIPE_LOAD_DOCS documents (default 300) keep the suite fast. docs/RELIABILITY.md ("Load")
records both.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.runner import BatchOutcome, ingest_pending
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick
from docpipe_dagster_tests.reliability.corpus import (
    PeakRss,
    assert_invariants,
    assert_runs_succeeded,
    search,
)

LOAD_DOCS = int(os.environ.get("DOCPIPE_LOAD_DOCS", "300"))
LOAD_BATCH_MAX_FILES = 64
# Peak growth of the test process for LOAD_DOCS small documents; measured ~60-120 MiB at 300.
LOAD_MAX_RSS_GROWTH = 400 * 2**20

TOPICS = ("lighthouse", "orchard", "glacier", "foundry", "monastery", "harbour", "observatory")


def small_document(i: int) -> str:
    rng = random.Random(i)
    topic = TOPICS[i % len(TOPICS)]
    words = " ".join(
        rng.choice(("north", "amber", "copper", "willow", "basalt")) for _ in range(30)
    )
    return (
        f"# Record {i} of the {topic}\n\n"
        f"Entry number {i}: the {topic} ledger notes {words}.\n\n"
        f"Signed by clerk {rng.randrange(10_000)} on day {rng.randrange(365)}.\n"
    )


@pytest.mark.slow
def test_many_small_documents_complete_in_capped_batches(corpus_pipeline: Pipeline) -> None:
    pipeline = corpus_pipeline
    for i in range(LOAD_DOCS):
        pipeline.write(f"load/{i // 100:03d}/doc-{i:05d}.md", small_document(i))
    resources = pipeline.with_settings(batch_max_files=LOAD_BATCH_MAX_FILES)

    started = time.perf_counter()
    with PeakRss() as rss:
        outcomes = ingest_pending(resources=resources, instance=pipeline.instance)
    seconds = time.perf_counter() - started
    assert_runs_succeeded(pipeline, outcomes)

    sizes = pipeline.rows(
        "SELECT batch_key, count(*) AS n FROM {S}.upload_jobs GROUP BY batch_key ORDER BY 1"
    )
    assert len(sizes) == len(outcomes) == -(-LOAD_DOCS // LOAD_BATCH_MAX_FILES)
    assert max(r["n"] for r in sizes) <= LOAD_BATCH_MAX_FILES
    assert sum(r["n"] for r in sizes) == LOAD_DOCS
    states = pipeline.rows("SELECT state, count(*) AS n FROM {S}.upload_jobs GROUP BY state")
    assert states == [{"state": "completed", "n": LOAD_DOCS}]
    assert assert_invariants(pipeline) == LOAD_DOCS
    probe = LOAD_DOCS // 2
    hits = search(pipeline, small_document(probe).strip(), k=3)
    assert hits[0].storage_key.endswith(f"doc-{probe:05d}.md"), hits
    print(
        f"\nload: {LOAD_DOCS} documents in {len(outcomes)} batches, {seconds:.1f} s "
        f"({LOAD_DOCS / seconds:.0f} docs/s), peak RSS {rss.peak / 2**20:.0f} MiB "
        f"(+{rss.growth / 2**20:.0f} MiB)"
    )
    assert rss.growth < LOAD_MAX_RSS_GROWTH


CONCURRENT_FILES = 100
SETTLE_SECONDS = 1.0


def test_files_written_slowly_are_registered_only_when_complete(
    corpus_pipeline: Pipeline,
) -> None:
    """100 threads each write a file in small pieces with pauses (no temp file, no rename)
    while the intake sensor ticks every 0.2 s. A file counts as settled once it has not
    changed for settle_seconds (1 s here; the pauses are at most 0.15 s), so every job the
    sensor registers holds the file's final bytes, and all 100 complete."""
    pipeline = corpus_pipeline
    resources = pipeline.with_settings(settle_seconds=SETTLE_SECONDS)
    finals = {
        f"incoming/file-{i:03d}.md": (small_document(i) * (1 + i % 5)).encode()
        for i in range(CONCURRENT_FILES)
    }
    rng = random.Random(42)
    plans = {
        key: (rng.uniform(0, 3.0), [rng.uniform(0.01, 0.15) for _ in range(6)]) for key in finals
    }

    def write_slowly(key: str) -> None:
        delay, pauses = plans[key]
        time.sleep(delay)
        data = finals[key]
        path = pipeline.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        step = -(-len(data) // (len(pauses) + 1))
        with path.open("wb") as fh:
            for n, start in enumerate(range(0, len(data), step)):
                fh.write(data[start : start + step])
                fh.flush()
                if n < len(pauses):
                    time.sleep(pauses[n])

    writers = [threading.Thread(target=write_slowly, args=(key,)) for key in finals]
    for writer in writers:
        writer.start()

    outcomes: list[BatchOutcome] = []
    checked: set[str] = set()
    ticks = settling = 0
    cursor = None
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"only {len(checked)} of {len(finals)} registered"
        result = tick(pipeline, cursor, resources)
        cursor = result.cursor
        assert cursor is not None
        settling += json.loads(cursor)["last_tick"]["unstable"]
        ticks += 1
        # Every job registered so far holds the final bytes of its file.
        for row in pipeline.rows(
            "SELECT storage_key, content_sha256, size_bytes FROM {S}.upload_jobs"
        ):
            final = finals[row["storage_key"]]
            assert row["content_sha256"] == sha256_bytes(final), f"partial {row['storage_key']}"
            assert row["size_bytes"] == len(final), row["storage_key"]
            checked.add(row["storage_key"])
        for key in batch_keys(result):
            outcomes.append(pipeline.run(key, resources))
        if len(checked) == len(finals) and not any(w.is_alive() for w in writers):
            break
        time.sleep(0.2)
    for writer in writers:
        writer.join()

    # The sensor ticked while files were being written, and saw them unsettled.
    assert ticks >= 5 and settling >= CONCURRENT_FILES / 2, (ticks, settling)
    assert_runs_succeeded(pipeline, outcomes)
    jobs = pipeline.rows("SELECT storage_key, state FROM {S}.upload_jobs")
    assert len(jobs) == len(finals), "a file was registered more than once (partial first)"
    assert {r["state"] for r in jobs} == {"completed"}
    assert assert_invariants(pipeline) == len(finals)
