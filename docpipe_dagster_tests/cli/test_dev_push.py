"""The push path under `docpipe dev`: an upload through the API launches its own run through
the webserver's GraphQL API (no wait for the intake sensor), so does a file copied into the
storage folder (the API's watcher), and an API whose webserver is down still loses nothing
(retry_sensor launches the upload's batch)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from docpipe_dagster_tests.support.dev_stack import DevStack, docpipe_dev, graphql, wait_for
from docpipe_dagster_tests.support.mock_servers import free_port

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

RUN_TAGS = """{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status
    tags {{ key value }} }} }} }}"""
BATCH_RUNS = """{{ runsOrError(filter: {{tags: [{{key: "dagster/partition", value: "{batch}"}}]}})
    {{ ... on Runs {{ results {{ runId tags {{ key value }} }} }} }} }}"""


def _api_up(base: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        return True
    try:
        return httpx.get(f"{base}/openapi.json", timeout=5).is_success
    except httpx.HTTPError:
        return False


def _upload(base: str, auth: dict[str, str], name: str, text: str) -> dict:
    up = httpx.post(
        f"{base}/v1/documents",
        headers=auth,
        files={"file": (name, text.encode())},
        data={"prefix": "push"},
        timeout=60,
    )
    assert up.status_code == 202, up.text
    return up.json()


def _completed(stack: DevStack, base: str, auth: dict[str, str], key: str) -> dict:
    def done() -> dict | None:
        doc = httpx.get(f"{base}/v1/documents/{key}", headers=auth, timeout=10).json()
        assert doc["state"] != "failed", doc
        return doc if doc["state"] == "completed" else None

    return wait_for(done, 180, f"{key} to complete ({stack.log()})", 0.5)


def test_uploads_launch_their_own_run_and_a_dead_webserver_loses_nothing(tmp_path: Path) -> None:
    # A short retry interval: the safety net's tick comes soon after the launch grace.
    with docpipe_dev(tmp_path, DOCPIPE_RETRY_INTERVAL_SECONDS="2") as stack:
        api = f"http://127.0.0.1:{stack.ports['api']}"
        wait_for(lambda: _api_up(api, stack.proc), 300, "the API under docpipe dev")
        assert stack.proc.poll() is None, stack.log()
        auth = {"Authorization": f"Bearer {(stack.home / 'api-key').read_text().strip()}"}

        up = _upload(api, auth, "puffins.md", "# Puffins\n\nPuffins dig burrows on turf cliffs.\n")
        assert (up["registered"], up["launch"]) == (True, "launched"), up
        run = graphql(stack.base, RUN_TAGS.format(run_id=up["run_id"]))["runOrError"]
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["docpipe/reason"] == "upload"
        assert tags["dagster/partition"].startswith("upload-")
        doc = _completed(stack, api, auth, "push/puffins.md")
        assert doc["versions"][0]["batch_key"] == tags["dagster/partition"]
        found = httpx.get(
            f"{api}/v1/search", params={"q": "puffins burrows turf", "k": 1}, headers=auth
        ).json()
        assert found["results"][0]["storage_key"] == "push/puffins.md"

        # A file copied into the storage folder: the API's watcher registers it and launches
        # its run (a batch of its own, reason `watch`), no wait for the sensor's tick.
        source = tmp_path / "ospreys.md"
        source.write_text("# Ospreys\n\nOspreys plunge feet first to catch fish.\n")
        shutil.copy(source, stack.home / "storage" / "ospreys.md")
        doc = _completed(stack, api, auth, "ospreys.md")
        batch = doc["versions"][0]["batch_key"]
        assert batch.startswith("upload-"), doc
        (run,) = graphql(stack.base, BATCH_RUNS.format(batch=batch))["runsOrError"]["results"]
        assert {t["key"]: t["value"] for t in run["tags"]}["docpipe/reason"] == "watch"
        found = httpx.get(
            f"{api}/v1/search", params={"q": "ospreys plunge fish", "k": 1}, headers=auth
        ).json()
        assert found["results"][0]["storage_key"] == "ospreys.md"

        # A second API whose webserver URL points at a closed port.
        port = free_port()
        env = {
            **stack.env,
            "DOCPIPE_API_KEY": "push-test-key-not-a-secret",
            "DOCPIPE_DAGSTER_URL": f"http://127.0.0.1:{free_port()}",
        }
        log_path = tmp_path / "dead-url-api.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "docpipe_dagster.api", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            dead = f"http://127.0.0.1:{port}"
            wait_for(lambda: _api_up(dead, proc), 60, "the second API")
            assert proc.poll() is None, log_path.read_text()
            key = {"Authorization": "Bearer push-test-key-not-a-secret"}
            up = _upload(dead, key, "gannets.md", "# Gannets\n\nGannets dive from thirty metres.\n")
            assert (up["registered"], up["launch"], up["run_id"]) == (True, "deferred", None)
            doc = _completed(stack, dead, key, "push/gannets.md")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        assert "could not be launched" in log_path.read_text()
        batch = doc["versions"][0]["batch_key"]
        assert batch.startswith("upload-")
        (run,) = graphql(stack.base, BATCH_RUNS.format(batch=batch))["runsOrError"]["results"]
        assert {t["key"]: t["value"] for t in run["tags"]}["docpipe/reason"] == "retry"
