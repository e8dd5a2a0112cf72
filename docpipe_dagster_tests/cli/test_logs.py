"""Logs fit for a cluster: DOCPIPE_LOG_FORMAT=json gives one JSON object per line, each
carrying the run id, batch key and the file it was about; secrets never appear."""

from __future__ import annotations

import json
from pathlib import Path

from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.mock_servers import MockServer


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            lines.append(json.loads(line))
    return lines


def test_json_logs_carry_run_batch_and_document_ids_and_no_secret(
    cli_env: dict[str, str], cli_mocks: dict[str, MockServer], tmp_path: Path
) -> None:
    parser = cli_mocks["llamaparse"]
    parser.reset()
    # Two 500s on the upload: the client retries (and logs each retry) then succeeds.
    parser.set_faults({"kind": "http_500", "count": 2, "path": "/api/v2/parse/upload"})
    docs = tmp_path / "logged"
    docs.mkdir()
    (docs / "kites.md").write_text("# Kites\n\nA kite flies when the wind lifts it.\n")
    # DOCPIPE_PARSE_LOCALLY=none: the .md goes to the parser (text-like types are local).
    env = dict(cli_env, DOCPIPE_LOG_FORMAT="json", DOCPIPE_PARSE_LOCALLY="none")
    out = docpipe(env, "ingest", str(docs), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr

    lines = _json_lines(out.stderr)
    retries = [line for line in lines if "retry" in line.get("event", "")]
    assert retries, out.stderr[-2000:]
    for line in retries:
        assert line["level"] == "warning"
        assert line["storage_key"] == "logged/kites.md"
        assert line["asset"] == "parsed_documents"
        assert line["batch_key"] and line["run_id"] and line["job_id"]
        assert line["timestamp"].endswith("Z")
    for secret in (env["LLAMA_CLOUD_API_KEY"], env["OPENAI_API_KEY"], env["DOCPIPE_DATABASE_URL"]):
        assert secret not in out.stderr and secret not in out.stdout


def test_a_bad_log_format_is_refused_with_the_variable_name() -> None:
    import pytest

    from docpipe_dagster.logs import configure

    with pytest.raises(ValueError, match="DOCPIPE_LOG_FORMAT"):
        configure("xml")
