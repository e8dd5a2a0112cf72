"""A real Prometheus (Debian's) scrapes the running API's /metrics while documents, some of
them failing, are ingested: its query API agrees with `docpipe status --json`; with the parser
down the stalled-ingestion alert fires, and it clears once the parser is back. Also
`docpipe metrics`, the standalone exporter, on its default loopback host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from docpipe_dagster_tests.cli.test_api import KEY, api  # noqa: F401 (the fixture)
from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.dev_stack import wait_for
from docpipe_dagster_tests.support.mock_servers import MockServer, free_port
from docpipe_dagster_tests.support.prometheus import prometheus_binaries

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
STALLED = "DocpipeIngestionStalled"


def _fast_rules(path: Path) -> Path:
    """The shipped rules with the stall alert's 15 minutes and 5 minutes made seconds."""
    rules = yaml.safe_load(RULES.read_text())
    (stalled,) = [r for r in rules["groups"][0]["rules"] if r["alert"] == STALLED]
    assert "> 900" in stalled["expr"] and stalled["for"] == "5m"
    stalled["expr"] = stalled["expr"].replace("> 900", "> 3")
    stalled["for"] = "2s"
    path.write_text(yaml.safe_dump(rules))
    return path


def _start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str]:
    prometheus, _ = prometheus_binaries()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(_fast_rules(tmp_path / "alerts.yml"))],
        "scrape_configs": [{"job_name": "docpipe", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "Prometheus to be ready")
    return proc, base


@pytest.fixture
def cli_env(cli_env: dict[str, str]) -> dict[str, str]:
    """Every file to the parser mock (text-like types are otherwise parsed in-process): the
    parser being down must leave the late document waiting, and its requests are counted."""
    return {**cli_env, "DOCPIPE_PARSE_LOCALLY": "none"}


@pytest.fixture
def prometheus(api: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[str]:  # noqa: F811
    base, _ = api
    proc, url = _start_prometheus(tmp_path, base.removeprefix("http://"))
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def query(prometheus: str, expr: str) -> dict[str, float]:
    """Instant query -> {label values joined by ',': value}."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return {
        ",".join(
            v for k, v in sorted(r["metric"].items()) if k not in ("job", "instance", "__name__")
        ): float(r["value"][1])
        for r in body["data"]["result"]
    }


def scalar(prometheus: str, expr: str) -> float | None:
    values = query(prometheus, expr)
    return next(iter(values.values())) if values else None


def alert_states(prometheus: str) -> dict[str, str]:
    body = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()
    return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prometheus_agrees_with_status_and_the_stall_alert_fires_and_clears(
    api: tuple[str, dict[str, str]],  # noqa: F811
    prometheus: str,
    cli_mocks: dict[str, MockServer],
    tmp_path: Path,
) -> None:
    base, env = api
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\nA paragraph about lamps {i}.\n")
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00" + bytes(range(256)))  # unsupported
    (folder / "blank.txt").write_text("   \n\n  ")  # nothing to chunk
    out = docpipe(env, "ingest", str(folder), "--wait")
    assert out.returncode == 1, out.stdout + out.stderr  # the two failures
    status = json.loads(docpipe(env, "status", "--json").stdout)
    by_state = status["documents"]["by_state"]
    assert by_state == {"completed": 5, "failed": 2}

    # Prometheus scrapes every second: wait for a scrape taken after the ingest.
    wait_for(
        lambda: scalar(prometheus, "docpipe_documents_completed_total") == 5,
        30,
        "Prometheus to scrape the completed documents",
    )
    documents = query(prometheus, "docpipe_documents")
    assert {k: v for k, v in documents.items() if v} == {s: float(n) for s, n in by_state.items()}
    assert scalar(prometheus, "docpipe_chunks_committed_total") == status["chunks"]
    assert scalar(prometheus, "sum(docpipe_vector_space_rows)") == status["vectors"]
    failures = query(prometheus, "docpipe_document_failures_total")
    expected = {f"{f['code'] or 'none'},{f['stage']}": 1.0 for f in status["failures"]}
    assert failures == expected
    assert scalar(prometheus, "docpipe_dead_letter_documents") == 2
    assert scalar(prometheus, "docpipe_backlog_documents") == 0
    assert scalar(prometheus, "docpipe_upload_to_searchable_seconds_count") == 5
    assert scalar(prometheus, "up") == 1
    # The API counts its own requests by route template.
    httpx.get(f"{base}/v1/documents/note-0.md", headers={"Authorization": f"Bearer {KEY}"})
    wait_for(
        lambda: query(prometheus, 'docpipe_api_requests_total{route="/v1/documents/{key:path}"}'),
        15,
        "the API's request counter",
    )
    assert alert_states(prometheus).get(STALLED) is None

    # The parser down (its uploads answer 503; its health probe still passes, so `ingest`
    # registers the file): the document waits, nothing is committed, the alert fires.
    parser = cli_mocks["llamaparse"]
    parser.set_faults({"kind": "http_503", "path": "/api/v2/parse/upload"})
    try:
        (folder / "late.md").write_text("# Late\n\nIt waits for the parser.\n")
        out = docpipe(env, "ingest", str(folder), "--wait")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "5 completed, 2 failed, 1 other" in out.stdout, out.stdout + out.stderr
        try:
            wait_for(
                lambda: alert_states(prometheus).get(STALLED) == "firing",
                60,
                "the stalled-ingestion alert to fire",
            )
        except AssertionError:
            seen = {
                name: query(prometheus, name)
                for name in (
                    "docpipe_backlog_documents",
                    "docpipe_in_flight_documents",
                    "time() - docpipe_last_commit_timestamp_seconds",
                )
            }
            raise AssertionError(f"{seen}; ingest said: {out.stdout[-1500:]}") from None
        # The alert may fire on a scrape taken while the failed run was still recording.
        errors = 'docpipe_provider_requests_total{service="parser",outcome="server_error"}'
        wait_for(lambda: (scalar(prometheus, errors) or 0) >= 1, 30, "the parser's 503s")
        assert scalar(prometheus, "docpipe_backlog_documents") == 1
    finally:
        parser.clear_faults()

    out = docpipe(env, "ingest", str(folder), "--wait")
    assert out.returncode == 1, out.stdout + out.stderr  # the two failures, still failed
    assert "6 completed, 2 failed, 0 other" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: STALLED not in alert_states(prometheus), 60, "the stalled alert to clear")
    status = json.loads(docpipe(env, "status", "--json").stdout)
    assert status["documents"]["by_state"] == {"completed": 6, "failed": 2}
    wait_for(
        lambda: scalar(prometheus, 'docpipe_documents{state="completed"}') == 6,
        30,
        "Prometheus to see the sixth document",
    )
    assert scalar(prometheus, 'docpipe_provider_requests_total{service="parser",outcome="ok"}')


def test_the_standalone_exporter_serves_the_metrics_on_loopback(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "metrics.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docpipe_dagster.cli", "metrics", "--port", str(port)],
        env=cli_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def scraped() -> str | None:
            assert proc.poll() is None, (tmp_path / "metrics.log").read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except httpx.HTTPError:
                return None
            return response.text if response.status_code == 200 else None

        text = wait_for(scraped, 60, "docpipe metrics to answer", 0.3)
        assert "docpipe_database_up 1.0" in text
        assert 'docpipe_documents{state="completed"} 0.0' in text
        assert "docpipe_provider_requests_total" in text
        # Loopback only by default.
        sockets = psutil.Process(proc.pid).net_connections(kind="inet")
        hosts = {c.laddr.ip for c in sockets if c.status == psutil.CONN_LISTEN}
        assert hosts == {"127.0.0.1"}, hosts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.close()
