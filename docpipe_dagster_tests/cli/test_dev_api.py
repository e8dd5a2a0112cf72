"""The HTTP API under `docpipe dev`: upload -> completed -> found, over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from docpipe_dagster_tests.support.dev_stack import docpipe_dev, port_open, wait_for

pytestmark = pytest.mark.timeout(420)


def test_api_round_trip_under_docpipe_dev(tmp_path: Path) -> None:
    with docpipe_dev(tmp_path) as stack:
        home, proc, log_path = stack.home, stack.proc, stack.log_path
        api = f"http://127.0.0.1:{stack.ports['api']}"

        def api_up_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            if not port_open(stack.ports["api"]):
                return False
            try:
                return httpx.get(f"{api}/openapi.json", timeout=5).is_success
            except httpx.HTTPError:
                return False

        wait_for(api_up_or_exited, 300, "the API under docpipe dev")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        output = log_path.read_text()
        # the generated key lives in a file readable by its owner only, never in the output
        key_file = home / "api-key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key = key_file.read_text().strip()
        assert key and key not in output
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{api}/v1/search", params={"q": "x"}).status_code == 401

        up = httpx.post(
            f"{api}/v1/documents",
            headers=auth,
            files={
                "file": (
                    "puffins.md",
                    b"# Puffins\n\nAtlantic puffins dig burrows on turf cliffs.\n",
                )
            },
            data={"prefix": "api"},
            params={"wait": 30},
            timeout=60,
        )
        assert up.status_code == 202, up.text
        assert up.json()["registered"] is True  # the sensor registered it within the wait

        def completed() -> dict | None:
            doc = httpx.get(f"{api}/v1/documents/api/puffins.md", headers=auth, timeout=10).json()
            return doc if doc["state"] == "completed" else None

        doc = wait_for(completed, 180, "the uploaded document to complete", 1)
        assert doc["versions"][0]["job_id"] == up.json()["job_id"]
        found = httpx.get(
            f"{api}/v1/search",
            params={"q": "puffins burrows turf cliffs", "k": 3},
            headers=auth,
            timeout=30,
        ).json()
        assert found["results"][0]["storage_key"] == "api/puffins.md"
        health = httpx.get(f"{api}/health", timeout=30)
        assert health.status_code == 200, health.text

        # /metrics under docpipe dev: the counts `docpipe status` gives, and the health
        # sensor's probes (every 10 s by default).
        def metrics_agree() -> str | None:
            text = httpx.get(f"{api}/metrics", timeout=30).text
            completed = stack.status().get("documents", {}).get("by_state", {}).get("completed")
            line = f'docpipe_documents{{state="completed"}} {float(completed or -1)}'
            probed = 'docpipe_service_up{service="parser"} 1.0' in text
            return text if probed and line in text else None

        text = wait_for(metrics_agree, 120, "/metrics to agree with status, probes included", 2)
        assert "docpipe_database_up 1.0" in text
        assert 'docpipe_api_requests_total{method="GET",route="/v1/search",status="200"}' in text
