"""A tiny run of the retrieval benchmark: it runs end to end and its figures are in range
(quality between 0 and 1 and far better than chance; latencies present, never judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.retrieval import load_corpus, make_queries

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_corpus_and_labels_are_real_and_consistent() -> None:
    corpus = load_corpus()
    keys = set(corpus.keys)
    assert sum(k.startswith("licenses/") for k in keys) >= 5
    assert sum(k.startswith("python-reference/") for k in keys) >= 50
    queries = make_queries(corpus, 1, seed=1)
    assert queries and all(q.relevant and q.relevant <= keys for q in queries)
    apache = next(q for q in queries if q.text.startswith("grant of patent license"))
    assert all(
        "Apache License" in next(d.text for d in corpus.docs if d.key == k) for k in apache.relevant
    )


def test_tiny_run_reports_every_mode_in_range(tmp_path: Path) -> None:
    out = tmp_path / "retrieval.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    cmd = [
        sys.executable, "-m", "benchmarks.retrieval", "--dims", "64", "--sizes", "1500",
        "--chunkings", "1200:150", "--ef", "40", "--per-doc", "1", "--latency-queries", "15",
        "--workdir", str(tmp_path / "run"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    (quality,) = report["quality"]
    assert set(quality["modes"]) == {"hybrid", "vector", "text"}
    for figures in quality["modes"].values():
        # chance over ~120 documents is ~0.04; any working search is far above it
        assert 0.3 < figures["mrr@10"] <= 1 and 0.3 < figures["recall@5"] <= 1
    assert [row["chunks"] for row in report["latency"]] == [1500, 1500]
    for row in report["latency"]:
        assert 0 <= row["vector_top10_overlap_with_exact"] <= 1
        for figures in row["modes"].values():
            assert figures["p95_ms"] >= figures["p50_ms"] > 0
