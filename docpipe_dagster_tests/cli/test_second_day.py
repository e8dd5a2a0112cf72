"""A user's second day: where is my file, what failed, try it again."""

from __future__ import annotations

import json
from pathlib import Path

from docpipe_dagster_tests.cli.test_cli import docpipe
from docpipe_dagster_tests.support.mock_servers import MockServer


def _docs(root: Path) -> Path:
    folder = root / "notes"
    folder.mkdir()
    (folder / "owls.md").write_text("# Owls\n\nOwls hunt at night and see well in the dark.\n")
    (folder / "figs.txt").write_text("Fig trees are pollinated by tiny wasps.\n")
    return folder


def test_dead_lettered_documents_are_listed_explained_and_retried(
    cli_env: dict[str, str], cli_mocks: dict[str, MockServer], tmp_path: Path
) -> None:
    embedder = cli_mocks["openai"]
    embedder.reset()
    # Not retryable: the document is dead-lettered at once (no attempt would help).
    embedder.set_faults({"kind": "insufficient_quota", "count": 100, "path": "/v1/embeddings"})
    first = docpipe(cli_env, "ingest", str(_docs(tmp_path)), "--wait")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "0 completed, 2 failed" in first.stdout

    failed = json.loads(docpipe(cli_env, "status", "--failed", "--json").stdout)["failed"]
    assert sorted(f["storage_key"] for f in failed) == ["notes/figs.txt", "notes/owls.md"]
    assert all("quota" in f["reason"].lower() for f in failed), failed

    # Running ingest again does not revive a dead letter: the fault is gone, still failed.
    embedder.clear_faults()
    other = tmp_path / "other"
    other.mkdir()
    (other / "moss.md").write_text("# Moss\n\nMoss grows on the north side of trees.\n")
    again = docpipe(cli_env, "ingest", str(other), "--wait")
    assert "1 completed, 0 failed" in again.stdout, again.stdout + again.stderr
    assert len(json.loads(docpipe(cli_env, "status", "--failed", "--json").stdout)["failed"]) == 2

    retried = docpipe(cli_env, "retry", "notes/owls.md", "notes/figs.txt", "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "re-queued 2 document(s)" in retried.stdout
    assert "2 completed, 0 failed" in retried.stdout
    assert json.loads(docpipe(cli_env, "status", "--failed", "--json").stdout)["failed"] == []

    story = json.loads(docpipe(cli_env, "status", "notes/owls.md", "--json").stdout)
    (version,) = story["versions"]
    assert version["state"] == "completed" and version["attempts"] == 0
    kinds = [(e["stage"], e["event_type"]) for e in version["events"]]
    assert ("embed", "failed") in kinds and ("intake", "retry") in kinds
    assert kinds.index(("embed", "failed")) < kinds.index(("intake", "retry"))
    assert kinds[-1][1] == "completed", kinds
    text = docpipe(cli_env, "status", "notes/owls.md")
    assert text.returncode == 0 and "COMPLETED" in text.stdout and "retry" in text.stdout


def test_retry_needs_a_target_and_names_what_it_could_not_retry(cli_env: dict[str, str]) -> None:
    bare = docpipe(cli_env, "retry")
    assert bare.returncode == 2 and "--all-failed" in bare.stderr
    unknown = docpipe(cli_env, "retry", "no/such.md")
    assert unknown.returncode == 1 and "not retried no/such.md" in unknown.stderr
    missing = docpipe(cli_env, "status", "no/such.md")
    assert missing.returncode == 1 and "no document" in missing.stderr


def test_ingest_again_retries_transient_failures_at_once(
    cli_env: dict[str, str], cli_mocks: dict[str, MockServer], tmp_path: Path
) -> None:
    parser = cli_mocks["llamaparse"]
    parser.reset()
    parser.set_faults({"kind": "parse_error", "count": 1})
    docs = tmp_path / "one"
    docs.mkdir()
    (docs / "report.md").write_text("# Report\n\nQuarterly numbers went up.\n")
    env = dict(cli_env, DOCPIPE_PARSE_LOCALLY="none")  # .md goes to the parser
    first = docpipe(env, "ingest", str(docs), "--wait")
    story = json.loads(docpipe(env, "status", "one/report.md", "--json").stdout)
    version = story["versions"][0]
    assert version["state"] == "failed", first.stdout
    assert version["retryable"] is True, version  # a failed parse job may succeed next time
    assert version["next_attempt_at"] is not None  # backoff scheduled for the daemon

    second = docpipe(env, "ingest", str(docs), "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 completed, 0 failed" in second.stdout


def test_ingest_of_an_unchanged_folder_touches_nothing(
    cli_env: dict[str, str], cli_mocks: dict[str, MockServer], tmp_path: Path, database_url: str
) -> None:
    import psycopg

    docs = _docs(tmp_path)
    first = docpipe(cli_env, "ingest", str(docs), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr

    def snapshot() -> tuple:
        with psycopg.connect(database_url) as conn:
            jobs = conn.execute(
                "SELECT job_id, state, updated_at, source_modified_at"
                " FROM upload_pipeline.upload_jobs ORDER BY job_id"
            ).fetchall()
            events = conn.execute("SELECT count(*) FROM upload_pipeline.events").fetchone()
        return jobs, events

    before = snapshot()
    for mock in cli_mocks.values():
        mock.reset()
    again = docpipe(cli_env, "ingest", str(docs), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "put 0 files" in again.stdout and "2 already there, unchanged" in again.stdout
    assert "nothing new to process" in again.stdout
    assert "2 completed, 0 failed" in again.stdout
    assert snapshot() == before  # no row touched, no event written
    # Nothing to do: no service was even probed, let alone asked to parse or embed.
    for name in ("llamaparse", "openai"):
        assert cli_mocks[name].stats()["by_route"] == {}, name


def test_ingest_after_a_change_goes_the_full_way(
    cli_env: dict[str, str], cli_mocks: dict[str, MockServer], tmp_path: Path
) -> None:
    """The no-op path is taken only when nothing at all is to do: one edited file, one file
    put into storage by someone else, or a transient failure each send it the full way."""
    storage = tmp_path / "storage"
    cli_env = {**cli_env, "DOCPIPE_STORAGE_DIR": str(storage)}
    docs = _docs(tmp_path)
    assert docpipe(cli_env, "ingest", str(docs), "--wait").returncode == 0
    edited = next(p for p in sorted(docs.iterdir()) if p.is_file())
    edited.write_text(edited.read_text() + "\nOne more line about kites.\n")
    again = docpipe(cli_env, "ingest", str(docs), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing new to process" not in again.stdout
    assert "put 1 files" in again.stdout and "2 completed, 0 failed" in again.stdout
    embedded = cli_mocks["openai"].stats()["by_route"]
    assert any(route.startswith("POST ") for route in embedded), embedded

    # A file that reached storage some other way: the given files are unchanged, but a
    # scan would register it, so it is processed too.
    (storage / "dropped-in.md").write_text("# Dropped in\n\nA file nobody ingested.\n")
    third = docpipe(cli_env, "ingest", str(docs), "--wait")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "nothing new to process" not in third.stdout
    status = docpipe(cli_env, "status", "dropped-in.md")
    assert "completed" in status.stdout, status.stdout + status.stderr
