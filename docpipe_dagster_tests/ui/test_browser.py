"""The Dagster UI in a real browser (Debian's chromium, driven by playwright) against a running
`docpipe dev`: the ingestion graph, a batch's metadata and checks, the per-document view.

Chromium is installed with apt-get when missing; if that is impossible the test fails and
says why (never a silent skip). Screenshots go to $DOCPIPE_HOME/screenshots.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from docpipe_dagster_tests.support.apt import ensure_commands
from docpipe_dagster_tests.support.dev_stack import DevStack, docpipe_dev, graphql, wait_for

pytestmark = pytest.mark.timeout(600)

PIPELINE_ASSETS = (
    "raw_documents",
    "parsed_documents",
    "document_chunks",
    "chunk_embeddings",
    "searchable_chunks",
)


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return ensure_commands(("chromium",), ("chromium",), recommends=True)[0]


def _samples_settled(stack: DevStack) -> bool:
    by_state = stack.status().get("documents", {}).get("by_state", {})
    if by_state.get("completed", 0) < 4:
        return False
    runs = graphql(
        stack.base,
        '{ runsOrError(filter: {pipelineName: "ingest_batch"}) { ... on Runs { results { status } } } }',
    )["runsOrError"]["results"]
    return bool(runs) and all(r["status"] == "SUCCESS" for r in runs)


def _observed_completed(stack: DevStack) -> int:
    """documents_completed of the documents asset's latest observation (0 if none yet)."""
    query = (
        '{ assetNodes(assetKeys: [{path: ["documents"]}]) { assetObservations(limit: 1) {'
        " metadataEntries { label ... on IntMetadataEntry { intValue } } } } }"
    )
    observations = graphql(stack.base, query)["assetNodes"][0]["assetObservations"]
    if not observations:
        return 0
    entries = {e["label"]: e.get("intValue") for e in observations[0]["metadataEntries"]}
    return entries.get("documents_completed") or 0


def test_the_ui_shows_the_graph_a_batch_and_every_document(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with docpipe_dev(tmp_path) as stack:
        wait_for(lambda: _samples_settled(stack), 180, "the sample batch to complete", 2)
        samples = sorted(p.name for p in (stack.home / "storage" / "samples").iterdir())
        # The sensor observes every 10 s: wait for an observation that has the samples done.
        wait_for(
            lambda: _observed_completed(stack) >= len(samples),
            90,
            "the documents asset to be observed with the samples completed",
            2,
        )
        shots = stack.home / "screenshots"
        shots.mkdir(parents=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)

            page.goto(f"{stack.base}/locations/docpipe_dagster/asset-groups/ingestion")
            # First visit: Dagster asks to join its community; a newcomer clicks Skip.
            page.get_by_role("button", name="Skip").click()
            expect(page.get_by_role("dialog")).to_have_count(0)
            for asset in PIPELINE_ASSETS:
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "ingestion-graph.png"))

            page.goto(f"{stack.base}/assets/searchable_chunks")
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            for key in ("batch_documents", "batch_completed", "documents"):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            # The latest materialization lists the documents of its batch: samples.
            listed = re.compile("^samples/(" + "|".join(re.escape(name) for name in samples) + ")$")
            expect(page.get_by_text(listed).first).to_be_visible()
            page.screenshot(path=str(shots / "batch-metadata.png"), full_page=True)

            page.goto(f"{stack.base}/assets/searchable_chunks?view=checks")
            for check in ("batch_settled", "invariants_hold", "one_vector_per_chunk"):
                expect(page.get_by_text(check, exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "batch-checks.png"))

            page.goto(f"{stack.base}/assets/documents")
            for name in samples:
                if name != "README.md":
                    expect(page.get_by_text(f"samples/{name}").first).to_be_visible()
            expect(page.get_by_text("completed").first).to_be_visible()
            page.screenshot(path=str(shots / "documents.png"), full_page=True)
            browser.close()
        assert len(list(shots.glob("*.png"))) == 4
