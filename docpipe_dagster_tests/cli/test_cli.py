"""The CLI through real subprocesses: ingest --wait, search --json, status --json, validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEARCH_RESULT_KEYS = {
    "rank",
    "score",
    "storage_key",
    "chunk_index",
    "heading_path",
    "text",
    "document_id",
    "chunk_id",
    # provenance and why it ranked there (added with hybrid search; the keys above kept)
    "job_id",
    "content_sha256",
    "media_type",
    "char_start",
    "char_end",
    "page_start",
    "page_end",
    "committed_at",
    "embedding_model",
    "dims",
    "vector_rank",
    "vector_distance",
    "text_rank",
    "text_score",
}


def docpipe(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docpipe_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _corpus(root: Path) -> Path:
    folder = root / "handbook"
    (folder / "ops").mkdir(parents=True)
    (folder / "volcanoes.md").write_text(
        "# Volcanoes\n\nMagma rises through the crust and erupts as lava from a volcano.\n"
    )
    (folder / "ops" / "backups.txt").write_text(
        "Nightly backups are copied to a second region and restored once a month as a drill.\n"
    )
    (folder / "tea.html").write_text(
        "<html><body><h1>Tea</h1><p>Green tea is steeped at a lower temperature than black tea.</p></body></html>"
    )
    return folder


def test_help_lists_the_commands(cli_env: dict[str, str]) -> None:
    out = docpipe(cli_env, "--help")
    assert out.returncode == 0
    for command in ("db", "dev", "ingest", "mocks", "search", "status", "validate"):
        assert command in out.stdout


def test_ingest_wait_then_search_and_status(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = _corpus(tmp_path)
    ingested = docpipe(cli_env, "ingest", str(folder), "--wait")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "3 completed, 0 failed" in ingested.stdout

    found = docpipe(cli_env, "search", "nightly backups restored as a drill", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    payload = json.loads(found.stdout)
    assert payload["query"] == "nightly backups restored as a drill"
    assert payload["model"] == "text-embedding-3-small" and payload["dimensions"] == 1536
    assert payload["mode"] == "hybrid"
    assert len(payload["results"]) == 2
    assert set(payload["results"][0]) == SEARCH_RESULT_KEYS
    assert payload["results"][0]["storage_key"] == "handbook/ops/backups.txt"
    assert payload["results"][0]["score"] > payload["results"][1]["score"]

    status = docpipe(cli_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["documents"] == {"total": 3, "by_state": {"completed": 3}}
    assert summary["chunks"] == summary["vectors"] >= 3
    assert summary["failures"] == []
    assert summary["buffers"] == {"chunks": 0, "vectors": 0}
    # Which parser produced them: the corpus is text-like, parsed in-process by default.
    assert sum(summary["parsers"].values()) == 3
    assert all(p.startswith("local") for p in summary["parsers"]), summary["parsers"]
    assert "parsed by: 3 local" in docpipe(cli_env, "status").stdout

    human = docpipe(cli_env, "search", "lava from a volcano")
    assert human.returncode == 0 and "handbook/volcanoes.md" in human.stdout.splitlines()[0]


def test_ingest_wait_with_runs_at_once_prints_only_its_own_lines(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Three batches, two runs at once, each on an ephemeral instance of its own: the output
    is the summary, not Dagster's API-maturity warnings or SQLite complaining that a run
    thread's in-memory storage was closed from another thread."""
    folder = _corpus(tmp_path)
    env = {**cli_env, "DOCPIPE_BATCH_MAX_FILES": "1", "DOCPIPE_INGEST_RUNS": "2"}
    env.pop("DAGSTER_HOME", None)
    out = docpipe(env, "ingest", str(folder), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 completed, 0 failed" in out.stdout
    for noise in ("Traceback", "Warning", "SQLite objects created in a thread"):
        assert noise not in out.stdout + out.stderr, out.stderr[-3000:]


def test_ingest_wait_exits_1_and_names_the_failures(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = _corpus(tmp_path)
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00" + bytes(range(256)))
    (folder / "blank.txt").write_text("   \n\n  ")
    out = docpipe(cli_env, "ingest", str(folder), "--wait")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "3 completed, 2 failed" in out.stdout
    assert "FAILED handbook/setup.exe: unsupported file type .exe" in out.stdout
    assert "FAILED handbook/blank.txt:" in out.stdout

    status = json.loads(docpipe(cli_env, "status", "--json").stdout)
    failed = {f["storage_key"]: f for f in status["failures"]}
    assert set(failed) == {"handbook/setup.exe", "handbook/blank.txt"}
    assert all(f["reason"] and not f["retryable"] for f in failed.values())
    assert status["documents"]["by_state"] == {"completed": 3, "failed": 2}


def test_ingest_without_wait_only_uploads(cli_env: dict[str, str], tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nJust one file.\n")
    out = docpipe(cli_env, "ingest", str(note))
    assert out.returncode == 0, out.stderr
    assert (Path(cli_env["DOCPIPE_HOME"]) / "storage" / "note.md").read_text() == note.read_text()
    status = json.loads(docpipe(cli_env, "status", "--json").stdout)
    assert status["documents"]["total"] == 0


def test_validate_reports_every_component(cli_env: dict[str, str]) -> None:
    out = docpipe(cli_env, "validate", "--json", "--webserver-url", "http://127.0.0.1:9")
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    for name in ("database", "pgvector", "migrations", "parser", "embedder", "storage"):
        assert checks[name]["ok"], checks[name]
        assert checks[name]["latency_ms"] >= 0
    # the webserver was asked for explicitly and is not running: reported, exit 1
    assert not checks["dagster webserver"]["ok"]
    assert out.returncode == 1


def test_validate_fails_when_a_service_is_down(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    out = docpipe(env, "validate")
    assert out.returncode == 1
    assert "FAIL" in out.stdout and "embedder" in out.stdout


def test_ingest_sends_pdfs_to_the_v2_api_and_parses_text_in_process(
    cli_env: dict[str, str], cli_mocks: dict, tmp_path: Path
) -> None:
    import httpx

    from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf

    def counters() -> dict[str, int]:
        return httpx.get(f"{cli_mocks['llamaparse'].base_url}/_mock/jobs").json()

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "manual.pdf").write_bytes(
        build_text_pdf(["Winch maintenance", "Grease the drum every spring."])
    )
    (folder / "readme.txt").write_text("Plain text never needs a paid parser.\n")
    (folder / "facts.json").write_text('{"knots": 4, "zone": "harbour"}\n')
    before = counters()
    out = docpipe(cli_env, "ingest", str(folder), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 completed, 0 failed" in out.stdout
    after = counters()
    # The PDF went through /api/v2/parse/*; the .txt and .json made no parser call.
    assert after["v2_uploads"] - before["v2_uploads"] == 1
    assert after["v1_uploads"] == before["v1_uploads"]
    assert after["uploads"] - before["uploads"] == 1

    # The PDF's one chunk covers both its pages; search says so, in JSON and to people.
    found = docpipe(cli_env, "search", "grease the winch drum", "-k", "1", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    (hit,) = json.loads(found.stdout)["results"]
    assert hit["storage_key"].endswith("manual.pdf")
    assert (hit["page_start"], hit["page_end"]) == (1, 2)
    human = docpipe(cli_env, "search", "grease the winch drum", "-k", "1")
    assert "pages 1\u20132  chars " in human.stdout, human.stdout

    # v1 stays selectable.
    (folder / "second.pdf").write_bytes(build_text_pdf(["Anchor chain", "Check the shackle."]))
    legacy = docpipe({**cli_env, "DOCPIPE_PARSER_API": "v1"}, "ingest", str(folder), "--wait")
    assert legacy.returncode == 0, legacy.stdout + legacy.stderr
    final = counters()
    assert final["v1_uploads"] - after["v1_uploads"] == 1
    assert final["v2_uploads"] == after["v2_uploads"]


def test_page_label_names_one_page_or_a_range() -> None:
    from docpipe_dagster.cli.search import page_label

    assert page_label(2, 2) == "page 2"
    assert page_label(2, None) == "page 2"
    assert page_label(2, 3) == "pages 2\u20133"


def test_a_command_leaves_its_objects_to_the_os_at_exit(cli_env: dict[str, str]) -> None:
    """The interpreter's final garbage collection over Dagster's objects took ~0.8 s after
    `ingest --wait` had printed its summary; the command freezes the heap as it closes."""
    probe = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen objects:', gc.get_freeze_count()))\n"
        "from docpipe_dagster.cli import main\n"
        "main(['status', '--help'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    frozen = int(out.stdout.rsplit("frozen objects:", 1)[1])
    assert frozen > 1000


def test_ingest_wait_fully_offline_starts_no_parser(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """DOCPIPE_PARSE_LOCALLY=all: nothing goes to a parser, so `ingest --wait` neither starts
    a parser mock on the configured (free) port nor probes one; every file completes."""
    from docpipe_dagster.local.ports import free_ports, port_in_use
    from docpipe_dagster_tests.support.company_folder import docx_file, pptx_file

    (port,) = free_ports(1)
    env = {**cli_env, "DOCPIPE_PARSE_LOCALLY": "all"}
    env["LLAMAPARSE_BASE_URL"] = f"http://127.0.0.1:{port}"
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "handbook.docx").write_bytes(docx_file())
    (folder / "roadmap.pptx").write_bytes(pptx_file())
    (folder / "notes.txt").write_text("The spare key is under the flowerpot.\n")
    done = docpipe(env, "ingest", str(folder), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 completed, 0 failed" in done.stdout
    assert "parser" not in done.stderr, done.stderr  # no mock started, none probed
    assert not port_in_use(port)
    assert "parsed by: 3 local" in docpipe(env, "status").stdout


def test_ingest_collects_a_folder_in_path_order_without_links(tmp_path: Path) -> None:
    """The keys `docpipe ingest` gives a folder's files: its name and layout, in path order;
    linked files and linked folders are left out (their targets may be anywhere)."""
    from docpipe_dagster.cli.ingest import _collect

    docs = tmp_path / "docs"
    (docs / "a" / "b").mkdir(parents=True)
    (docs / "a-c").mkdir()
    for rel in ("z.txt", "a/b/deep.md", "a/x.txt", "a-c/y.txt", ".hidden.txt"):
        (docs / rel).write_text(rel)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("o")
    (docs / "linked-folder").symlink_to(outside)
    (docs / "linked.txt").symlink_to(outside / "o.txt")

    keys = [key for key, _ in _collect((str(docs),), "")]
    assert keys == [
        "docs/.hidden.txt",  # left to Upload.of, which reports it as ignored
        "docs/a/b/deep.md",
        "docs/a/x.txt",
        "docs/a-c/y.txt",
        "docs/z.txt",
    ]
    assert [key for key, _ in _collect((str(docs / "z.txt"),), "in/")] == ["in/z.txt"]
