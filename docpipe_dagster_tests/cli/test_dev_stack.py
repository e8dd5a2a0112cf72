"""`docpipe dev` as a user runs it: the UI answers, a dropped file completes, Ctrl-C cleans up."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from docpipe_dagster_tests.support.dev_stack import docpipe_dev, graphql, wait_for

pytestmark = pytest.mark.timeout(420)
NOISE = re.compile(r"(Preview|Beta|Deprecation|Supersession)Warning|is currently in (preview|beta)")


def test_docpipe_dev_end_to_end(tmp_path: Path) -> None:
    with docpipe_dev(tmp_path) as stack:
        # the shipped samples were put into storage on first start
        storage = stack.home / "storage"
        samples = sorted(p.name for p in (storage / "samples").iterdir())
        assert len(samples) >= 4

        dropped = storage / "dropped" / "otters.md"
        dropped.parent.mkdir(parents=True, exist_ok=True)
        dropped.write_text(
            "# Otters\n\nSea otters hold hands while sleeping so they do not drift apart.\n"
        )

        def completed() -> dict | None:
            status = stack.status()
            done = status.get("documents", {}).get("by_state", {}).get("completed", 0)
            return status if done == len(samples) + 1 else None

        status = wait_for(completed, 120, "the samples and the dropped file to complete", 2)
        assert status["failures"] == []

        def finished_runs() -> list[dict] | None:
            runs = graphql(
                stack.base,
                '{ runsOrError(filter: {pipelineName: "ingest_batch"}) { ... on Runs { results { status } } } }',
            )["runsOrError"]["results"]
            # A document is completed before its run has finished its checks: wait for that.
            busy = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}
            return runs if runs and not any(r["status"] in busy for r in runs) else None

        runs = wait_for(finished_runs, 60, "the batch runs to finish", 1)
        assert all(r["status"] == "SUCCESS" for r in runs)

        found = stack.docpipe("search", "otters sleeping holding hands", "--json")
        assert json.loads(found.stdout)["results"][0]["storage_key"] == "dropped/otters.md"

        # A quiet start: the code server and the run workers loaded the code, and nothing
        # said Preview/Beta/deprecated (test_quiet_start.py has the fast check).
        noisy = [line for line in stack.log_path.read_text().splitlines() if NOISE.search(line)]
        assert noisy == [], noisy
