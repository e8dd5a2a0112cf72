"""A tiny run of the ingest benchmark: its JSON is complete and consistent (not its times).

It runs `python -m benchmarks.ingest` as a user would, on its own embedded Postgres and
mocks, then checks that every scenario is reported (or skipped with a reason), that the
counts add up between docpipe, the baseline and the corpus, that every ratio is computed
from the figures it claims, and that no server was left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks.ingest import SCENARIOS, TARGETS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = 20

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    out = work / "ingest.json"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DOCPIPE_")}
    cmd = [
        sys.executable, "-m", "benchmarks.ingest", "--quick",
        "--docs", str(DOCS), "--dims", "64", "--reduced-dims", "32",
        "--skip", "dev,options,realistic,peers,production",
        "--trickle-batches", "2", "--trickle-docs", "3", "--memory-docs", "10",
        "--probe-insert-rows", "20", "--random-probe-rows", "0",
        "--workdir", str(work / "run"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "docpipe/baseline" in done.stdout and "targets:" in done.stdout  # the printed table
    return json.loads(out.read_text())


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.02 * max(abs(a), abs(b)) + 0.01


def test_every_scenario_is_reported_or_skipped_with_a_reason(report: dict) -> None:
    ran = set(report["scenarios"]) | ({"limits"} if report["limits"] else set())
    assert ran | set(report["skipped"]) == set(SCENARIOS)
    assert ran == {"overhead", "limits", "bulk", "rerun", "trickle", "memory"}
    assert all(reason == "not selected" for reason in report["skipped"].values())
    assert report["machine"]["cpus"] and report["machine"]["pgvector"]
    assert report["command"].startswith("python -m benchmarks.ingest")


def test_the_limits_are_measured_for_each_variant(report: dict) -> None:
    assert set(report["limits"]) == {"vector_64", "halfvec_64", "vector_32"}
    for probe in report["limits"].values():
        for key in ("copy_rows_per_s", "build_rows_per_s", "load_build_rows_per_s",
                    "insert_rows_per_s", "insert_rows_per_s_2_clients"):  # fmt: skip
            assert probe[key] > 0, (key, probe)
        assert close(probe["copy_rows_per_s"], probe["load_rows"] / probe["copy_seconds"])


def test_docpipe_and_the_baseline_did_the_same_work(report: dict) -> None:
    for name in ("overhead", "bulk"):
        scenario = report["scenarios"][name]
        base, doc = scenario["baseline"], scenario["docpipe"]
        assert base["documents"] == doc["documents"] == DOCS
        assert doc["failed"] == base["failed"] == 0
        # the same parser output through the same chunker: the same chunks, one vector each
        assert base["chunks"] == doc["chunks"] == doc["vectors"] == doc["searchable_rows"] > DOCS
        # the same parser calls: .txt files are parsed in-process by both
        assert doc["parser_uploads"] == base["parser_uploads"] == DOCS - base["local_parses"]
        assert 0 < base["local_parses"] < DOCS
        assert doc["embedder_requests"] >= 1 and base["embedder_requests"] >= 1
        for run in (base, doc):
            assert close(run["vectors_per_s"], run["vectors"] / run["seconds"])
            assert run["peak_rss_mb"] > 0
        assert close(scenario["docpipe_vs_baseline"], doc["vectors_per_s"] / base["vectors_per_s"])
    bulk = report["scenarios"]["bulk"]
    limit = report["limits"]["vector_64"]["load_build_rows_per_s"]
    assert close(bulk["docpipe_vs_limit"], bulk["docpipe"]["vectors_per_s"] / limit)
    assert bulk["docpipe"]["index"]["index_rebuilt_rows"] == bulk["docpipe"]["chunks"]
    assert bulk["docpipe"]["hnsw_indexes"]  # the index exists after the bulk load
    # the same load with the full text the schema keeps: every row, in the configured language
    probe = report["limits"]["vector_64"]
    assert probe["fulltext_rows"] == probe["load_rows"] and probe["fulltext_language"] == "english"
    fulltext = probe["load_build_fulltext_rows_per_s"]
    seconds = probe["fulltext_copy_seconds"] + probe["fulltext_build_seconds"]
    assert close(fulltext, probe["load_rows"] / seconds)
    assert close(
        bulk["commit_stage_vs_fulltext_limit"], bulk["commit_stage_vectors_per_s"] / fulltext
    )
    assert "load_build_fulltext_rows_per_s" not in report["limits"]["halfvec_64"]


def test_the_rerun_made_no_call_and_changed_no_row(report: dict) -> None:
    rerun = report["scenarios"]["rerun"]
    assert rerun["external_calls"] == rerun["rematerialize_external_calls"] == 0
    assert rerun["rows_unchanged"] is True
    assert rerun["docpipe"]["documents"] == 0
    assert rerun["rematerialize"]["runs"] >= 1
    assert close(
        rerun["fraction_of_first_run"], rerun["docpipe"]["seconds"] / rerun["first_run_seconds"]
    )


def test_trickle_and_memory_counts_add_up(report: dict) -> None:
    trickle = report["scenarios"]["trickle"]
    assert trickle["corpus"]["documents"] == 2 * 3
    assert trickle["docpipe"]["documents"] == trickle["baseline"]["documents"] == 6
    assert trickle["docpipe"]["chunks"] == trickle["baseline"]["chunks"] > 0
    assert len(trickle["docpipe"]["per_group_seconds"]) == 2
    assert trickle["baseline"]["runs"] == 2
    bulk_rows = report["scenarios"]["bulk"]["docpipe"]["searchable_rows"]
    assert trickle["docpipe"]["searchable_rows"] == bulk_rows + trickle["docpipe"]["chunks"]
    memory = report["scenarios"]["memory"]
    assert memory["small"]["docpipe"]["documents"] == 10
    assert memory["large"]["docpipe"]["documents"] == 100
    assert close(
        memory["rss_ratio"],
        memory["large"]["docpipe"]["peak_rss_mb"] / memory["small"]["docpipe"]["peak_rss_mb"],
    )


def test_targets_and_table_are_complete(report: dict) -> None:
    targets = {t["id"]: t for t in report["targets"]}
    # one row per target of the scenarios that ran (dev, realistic, production, peers skipped)
    assert set(targets) == set(TARGETS) - {
        "dev",
        "dev_push",
        "realistic",
        "production",
        "production_done",
        "peers_first_realistic",
        "peers_first_zero_latency",
        "peers_rerun",
    }
    assert all(isinstance(t["met"], bool) for t in targets.values())
    rows = {(r["scenario"], r["system"]) for r in report["table"]}
    for name in ("overhead", "bulk", "trickle"):
        assert {(name, "baseline"), (name, "docpipe")} <= rows
    for row in report["table"]:
        if row["system"] == "docpipe" and row["scenario"] in ("overhead", "bulk", "trickle"):
            assert row["vs_baseline"] is not None and row["vs_limit"] is not None


def test_nothing_is_left_running(report: dict) -> None:
    pids = [report["processes"]["parser_mock"], report["processes"]["embedder_mock"]]
    pids += report["processes"]["postgres"]
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []
