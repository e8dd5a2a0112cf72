"""Security: secrets never leak, everything binds 127.0.0.1, the mocks answer bad keys as the
real services do, SQL is parameterized, keys cannot climb out of storage, webhook bodies are
authenticated. docs/RELIABILITY.md ("Security") maps each threat to its test here.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import httpx
import psutil
import psycopg
import pytest
from click.testing import CliRunner
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from psycopg import sql

from docpipe_dagster.cli import main as cli_main
from docpipe_dagster.clients.embeddings import EmbeddingError, EmbeddingsClient
from docpipe_dagster.clients.llamaparse import (
    LlamaParseClient,
    ParseError,
    verify_webhook_signature,
)
from docpipe_dagster.clients.storage import (
    FolderStorage,
    InvalidKeyError,
    StorageError,
    SupabaseStorage,
)
from docpipe_dagster.config import PROJECT_ROOT
from docpipe_dagster.defs.resources import build_resources
from docpipe_dagster.runner import BatchOutcome, ingest_pending
from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster_mocks.llamaparse.testdata import build_encrypted_pdf
from docpipe_dagster_mocks.llamaparse.webhook import SIGNATURE_HEADER, sign
from docpipe_dagster_tests.reliability.corpus import (
    EXE,
    SQL_NAME,
    UNICODE_NAME,
    reason_problems,
    truncated_pdf,
)
from docpipe_dagster_tests.support import MockServer, start_mock

# Distinctive values: each ends in four upper-case letters that no hex id or base64 run of
# the pipeline is likely to produce, so even the masked form OpenAI echoes (first three and
# last four characters) would be found.
SECRETS = {
    "LLAMA_CLOUD_API_KEY": "llx-SECRET-parser-6tq2-KQWZ",
    "OPENAI_API_KEY": "sk-SECRET-embedder-9vx4-PXVT",
    "SUPABASE_SERVICE_KEY": "sb-SECRET-storage-3mr8-LRNY",
}
DB_ROLE = "docpipe_sec_role"
DB_PASSWORD = "pg-SECRET-password-5kd7-WHJS"
WRONG_PARSER_KEY = "llx-WRONG-parser-2hb6-GNSV"
WRONG_EMBEDDER_KEY = "sk-WRONG-embedder-8cw1-UJHM"
ALL_SECRETS = [*SECRETS.values(), DB_PASSWORD, WRONG_PARSER_KEY, WRONG_EMBEDDER_KEY]
WEBHOOK_SECRET = "whsec-SECRET-webhook-7pn3-QMXB"


def leaks(text: str) -> list[str]:
    """The secrets (whole, or their last four characters) found in `text`."""
    return [s for s in ALL_SECRETS if s in text or s[-4:] in text]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sec_mocks(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, MockServer]]:
    """The three mocks, each requiring its distinctive key."""
    data_dir = tmp_path_factory.mktemp("sec-storage") / "data"
    mocks = {
        "parser": start_mock(
            "llamaparse",
            api_key=SECRETS["LLAMA_CLOUD_API_KEY"],
            pending_seconds=0.0,
            webhook_secret=WEBHOOK_SECRET,
        ),
        "embedder": start_mock("openai", api_key=SECRETS["OPENAI_API_KEY"]),
        "storage": start_mock(
            "storage", api_key=SECRETS["SUPABASE_SERVICE_KEY"], data_dir=str(data_dir)
        ),
    }
    yield mocks
    for mock in mocks.values():
        mock.stop()


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
def sec_database_url(pg_server_url: str, database_url: str) -> Iterator[str]:
    """The test database through a role that must give its password (scram-sha-256 for that
    role only: the embedded server trusts local connections otherwise)."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        # The password cannot be a bind parameter in DDL; it is a constant of this module.
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.SQL(verb),
                sql.Identifier(DB_ROLE),
                sql.Literal(DB_PASSWORD),
            )
        )
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        line = f"local all {DB_ROLE} scram-sha-256\n"
        original = hba.read_text()
        hba.write_text(line + original)
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)  # the postmaster reloads asynchronously
    url = _with_credentials(database_url, DB_ROLE, DB_PASSWORD)
    try:
        yield url
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


# --- secrets -----------------------------------------------------------------------------------


def _texts_of_dagster_run(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Everything Dagster stored for a run: its config and tags, every event record (with all
    metadata) serialized as the UI reads them."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    texts = [json.dumps(run.run_config, default=str), json.dumps(run.tags, default=str)]
    records = instance.get_records_for_run(run_id, limit=100_000).records
    assert records, "the run stored no events"
    metadata_values = 0
    for record in records:
        entry = record.event_log_entry
        texts.append(serialize_value(entry))
        event = entry.dagster_event
        if event is None:
            texts.append(entry.user_message or "")
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.step_materialization_data.materialization.metadata
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            metadata = event.asset_check_evaluation_data.metadata
        else:
            continue
        for value in metadata.values():
            texts.append(str(value.value))
            metadata_values += 1
    assert metadata_values > 0
    return texts


def _ingest(
    monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, **env: str
) -> list[BatchOutcome]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outcomes = ingest_pending(resources=build_resources(), instance=instance)
    assert outcomes and all(o.success for o in outcomes)
    return outcomes


def test_secrets_never_leak(
    sec_mocks: dict[str, MockServer],
    sec_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A full run through the Supabase storage API, with failures of every kind (bad files, a
    wrong parser key, a wrong embedder key), leaves no key and no database password in the
    logs, the output, the events, the failure reasons, Dagster's run records or the code
    location's resource config (which shows the variables' names)."""
    caplog.set_level(logging.DEBUG)
    parser, embedder, storage_mock = (
        sec_mocks["parser"],
        sec_mocks["embedder"],
        sec_mocks["storage"],
    )
    for mock in sec_mocks.values():
        mock.reset()
    # The password is really needed: without it the server refuses the role.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_with_credentials(sec_database_url, DB_ROLE, "wrong")).close()
    bucket = f"sec-{uuid.uuid4().hex[:8]}"
    for name in list(os.environ):
        if name.startswith("DOCPIPE_") and name != "DOCPIPE_HOME":
            monkeypatch.delenv(name)
    env = {
        **SECRETS,
        "DOCPIPE_DATABASE_URL": sec_database_url,
        "DOCPIPE_DAGSTER_DATABASE_URL": sec_database_url,
        "DOCPIPE_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": storage_mock.base_url,
        "DOCPIPE_STORAGE_BUCKET": bucket,
        "LLAMAPARSE_BASE_URL": parser.base_url,
        "OPENAI_BASE_URL": embedder.base_url + "/v1",
        "DOCPIPE_SETTLE_SECONDS": "0",
        "DOCPIPE_EMBEDDING_DIMENSIONS": "256",
    }
    documents: dict[str, bytes] = {
        "good/notes.md": b"# Kiln log\n\nThe kiln reached cone six after nine hours of firing.\n",
        SQL_NAME: b"A document whose name is an SQL injection attempt.\n",
        UNICODE_NAME: "Ein Dokument mit einem unicode Namen. 文档.\n".encode(),
        "it's; fine.txt": b"Quotes and semicolons in a name are only characters.\n",
        "empty.txt": b"",
        "noise.txt": bytes(range(256)) * 64,
        "tool.exe": EXE,
        "locked.pdf": build_encrypted_pdf(["Sealed minutes of the board."], "hunter2"),
        "truncated.pdf": truncated_pdf(),
    }
    with (
        SupabaseStorage(storage_mock.base_url, SECRETS["SUPABASE_SERVICE_KEY"], bucket) as store,
        dg.DagsterInstance.ephemeral() as instance,
    ):
        for key, data in documents.items():
            store.write(key, data)
        outcomes = _ingest(monkeypatch, instance, **env)
        # A wrong parser key, then a wrong embedder key: each new document fails with a 401.
        # (.md with DOCPIPE_PARSE_LOCALLY=none: text-like files are otherwise parsed
        # in-process, never meeting the parser)
        store.write("wrong-parser-key.md", b"Parsed with a key the parser does not know.\n")
        outcomes += _ingest(
            monkeypatch,
            instance,
            LLAMA_CLOUD_API_KEY=WRONG_PARSER_KEY,
            DOCPIPE_PARSE_LOCALLY="none",
        )
        store.write("wrong-embedder-key.txt", b"Embedded with a key the embedder refuses.\n")
        outcomes += _ingest(
            monkeypatch,
            instance,
            LLAMA_CLOUD_API_KEY=SECRETS["LLAMA_CLOUD_API_KEY"],
            OPENAI_API_KEY=WRONG_EMBEDDER_KEY,
        )
        dagster_texts = [t for o in outcomes for t in _texts_of_dagster_run(instance, o.run_id)]
        monkeypatch.setenv("OPENAI_API_KEY", SECRETS["OPENAI_API_KEY"])

        # What the UI shows of the code location's resources: the variables' names only.
        from docpipe_dagster.definitions import defs

        snapshot = serialize_value(RepositorySnap.from_def(defs().get_repository_def()))
        for name in SECRETS:
            assert name in snapshot, f"{name} not shown as an environment variable"

    with psycopg.connect(sec_database_url) as conn:
        jobs = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT storage_key, state, failed_stage, failure_reason"
                " FROM upload_pipeline.upload_jobs"
            )
        }
        rows_as_text = [
            r[0]
            for query in (
                "SELECT row_to_json(j)::text FROM upload_pipeline.upload_jobs j",
                "SELECT row_to_json(e)::text FROM upload_pipeline.events e",
            )
            for r in conn.execute(query)
        ]
        report = check_invariants(conn, live_batches=set())
    assert report.ok, report.render()

    # The run really went through failures of every kind, with readable reasons.
    assert set(jobs) == {*documents, "wrong-parser-key.md", "wrong-embedder-key.txt"}
    for key in ("good/notes.md", SQL_NAME, UNICODE_NAME, "it's; fine.txt"):
        assert jobs[key][0] == "completed", (key, jobs[key])
    failed = {key: job for key, job in jobs.items() if job[0] == "failed"}
    assert set(failed) == {
        "empty.txt",
        "noise.txt",
        "tool.exe",
        "locked.pdf",
        "truncated.pdf",
        "wrong-parser-key.md",
        "wrong-embedder-key.txt",
    }
    assert failed["wrong-parser-key.md"][1] == "parse"
    assert "401" in failed["wrong-parser-key.md"][2]
    assert failed["wrong-embedder-key.txt"][1] == "embed"
    assert "401" in failed["wrong-embedder-key.txt"][2]
    assert "Incorrect API key" in failed["wrong-embedder-key.txt"][2]
    for key, (_state, _stage, reason) in failed.items():
        assert not reason_problems(reason, ALL_SECRETS), (key, reason)

    captured = capfd.readouterr()
    places: dict[str, list[str]] = {
        "log records": [caplog.text]
        + [r.getMessage() + str(r.args) + (r.exc_text or "") for r in caplog.records],
        "stdout/stderr": [captured.out, captured.err],
        "upload_jobs and events rows": rows_as_text,
        "Dagster run config, tags, events and metadata": dagster_texts,
        "Dagster code location snapshot": [snapshot],
        "mock logs": [mock.log() for mock in sec_mocks.values()],
        "docpipe status --json": [CliRunner().invoke(cli_main, ["status", "--json"]).output],
    }
    assert any("401" in text for text in places["upload_jobs and events rows"])
    assert len(caplog.records) > 0 and places["docpipe status --json"][0].strip()
    found = {where: leaks("\n".join(texts)) for where, texts in places.items()}
    assert found == {where: [] for where in places}, found


def test_clients_and_mocks_answer_missing_and_wrong_keys_without_echoing_them(
    sec_mocks: dict[str, MockServer],
) -> None:
    parser, embedder, storage = sec_mocks["parser"], sec_mocks["embedder"], sec_mocks["storage"]
    wrong = "sk-WRONG-anything-4ty9-GNSV"

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # LlamaParse: 401 {"detail": ...} for a missing or a wrong key.
    for headers in ({}, bearer(wrong)):
        r = httpx.post(
            f"{parser.base_url}/api/parsing/upload",
            headers=headers,
            files={"file": ("a.txt", b"x")},
        )
        assert (r.status_code, r.json()) == (401, {"detail": "Invalid authentication token"})
    ok = httpx.get(
        f"{parser.base_url}/api/parsing/supported_file_extensions",
        headers=bearer(SECRETS["LLAMA_CLOUD_API_KEY"]),
    )
    assert ok.status_code == 200

    # OpenAI: 401 with the error object; a wrong key is echoed masked, never whole.
    body = {"input": "hello", "model": "text-embedding-3-small"}
    r = httpx.post(f"{embedder.base_url}/v1/embeddings", json=body)
    error = r.json()["error"]
    assert r.status_code == 401 and set(error) == {"message", "type", "param", "code"}
    assert error["message"].startswith("You didn't provide an API key")
    assert (error["type"], error["code"]) == ("invalid_request_error", None)
    r = httpx.post(f"{embedder.base_url}/v1/embeddings", json=body, headers=bearer(wrong))
    error = r.json()["error"]
    assert r.status_code == 401 and error["code"] == "invalid_api_key"
    assert error["message"].startswith("Incorrect API key provided: sk-***")
    assert wrong not in r.text

    # Supabase Storage: 401 without credentials, 403 with a wrong one, in its error shape.
    r = httpx.get(f"{storage.base_url}/storage/v1/bucket")
    assert (r.status_code, r.json()) == (
        401,
        {
            "statusCode": "401",
            "error": "Unauthorized",
            "message": "headers must have required property 'authorization'",
        },
    )
    r = httpx.get(
        f"{storage.base_url}/storage/v1/bucket", headers={**bearer(wrong), "apikey": wrong}
    )
    assert (r.status_code, r.json()) == (
        403,
        {"statusCode": "403", "error": "Unauthorized", "message": "Invalid Compact JWS"},
    )
    for mock in sec_mocks.values():  # health probes need no key and show none
        r = httpx.get(f"{mock.base_url}/health")
        assert r.status_code == 200 and not leaks(r.text)

    # The clients turn those answers into errors that carry no key, whole or masked.
    async def parse() -> None:
        async with LlamaParseClient(parser.base_url, wrong, max_attempts=1) as client:
            await client.parse("a.txt", b"some text")

    async def embed() -> None:
        async with EmbeddingsClient(embedder.base_url + "/v1", wrong, max_attempts=1) as client:
            await client.embed(["some text"])

    with pytest.raises(ParseError) as parse_error:
        asyncio.run(parse())
    with pytest.raises(EmbeddingError) as embed_error:
        asyncio.run(embed())
    with (
        SupabaseStorage(storage.base_url, wrong, "documents", max_attempts=1) as store,
        pytest.raises(StorageError) as storage_error,
    ):
        list(store.list_objects())
    for error, status in ((parse_error, 401), (embed_error, 401), (storage_error, 403)):
        message = str(error.value)
        assert str(status) in message, message
        assert wrong not in message and wrong[-4:] not in message, message
        assert wrong not in repr(error.value)
    for client in (
        LlamaParseClient(parser.base_url, wrong),
        EmbeddingsClient(embedder.base_url, wrong),
        SupabaseStorage(storage.base_url, wrong, "documents"),
    ):
        assert wrong not in repr(client)


# --- network exposure --------------------------------------------------------------------------


def _listening(pid: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def test_everything_binds_loopback_by_default(
    sec_mocks: dict[str, MockServer], docpipe_test_home: Path, pg_server_url: str
) -> None:
    from docpipe_dagster_mocks import serve as mock_serve

    # The defaults: the mocks (`python -m docpipe_dagster_mocks`, serve()), `docpipe dev` and `docpipe mocks`.
    (mock_host,) = [p for p in mock_serve._command.params if p.name == "host"]
    assert mock_host.default == "127.0.0.1"
    assert inspect.signature(mock_serve.serve).parameters["host"].default == "127.0.0.1"
    from docpipe_dagster.local.dev_stack import DevStack

    for command in ("dev", "mocks"):
        (host,) = [p for p in cli_main.commands[command].params if p.name == "host"]
        assert host.default == "127.0.0.1", command
    assert inspect.signature(DevStack).parameters["host"].default == "127.0.0.1"

    # Started mocks (start_mock passes no --host: the default) listen on loopback only.
    for name, mock in sec_mocks.items():
        assert _listening(mock.proc.pid) == {"127.0.0.1"}, name

    # The embedded Postgres listens on a unix socket only: no TCP port at all.
    pid = int((docpipe_test_home / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert "host=" in pg_server_url
    assert psutil.Process(pid).net_connections(kind="inet") == []


def test_dagster_instance_config_names_the_database_url_variable() -> None:
    """The dagster.yaml `docpipe dev` writes into DAGSTER_HOME holds the variable's name."""
    import yaml

    from docpipe_dagster.local.dev_stack import dev_instance_yaml

    config = yaml.safe_load(dev_instance_yaml())
    url = config["storage"]["postgres"]["postgres_url"]
    assert url == {"env": "DOCPIPE_DAGSTER_DATABASE_URL"}


# --- SQL ---------------------------------------------------------------------------------------

_SQL = re.compile(
    r"\b(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE|DROP|ALTER|COPY|TRUNCATE|GRANT)\b"
)
# What an f-string of SQL may interpolate: the schema name constant. `scope` (invariants.py) is
# checked separately: it must be assigned from string constants only.
_SAFE_NAMES = {"S", "SCHEMA"}
_CONSTANT_NAMES = {"in_jobs", "in_docs"}  # the invariant checker's batch-scope clauses


def _string_constants(node: ast.AST) -> bool:
    """True if `node` is built from string constants and conditions only."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.IfExp):
        return _string_constants(node.body) and _string_constants(node.orelse)
    if isinstance(node, ast.JoinedStr):  # an f-string of constants and the schema name
        return all(
            isinstance(v, ast.Constant)
            or (isinstance(v, ast.FormattedValue) and _is_safe_name(v.value))
            for v in node.values
        )
    return False


def _sql_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    where = f"{path.relative_to(PROJECT_ROOT)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if not _SQL.search(text):
                continue
            for value in node.values:
                if not isinstance(value, ast.FormattedValue):
                    continue
                names = {n.id for n in ast.walk(value.value) if isinstance(n, ast.Name)}
                calls = [n for n in ast.walk(value.value) if isinstance(n, ast.Call)]
                allowed = names <= _SAFE_NAMES | _CONSTANT_NAMES and all(
                    isinstance(c.func, ast.Attribute) and c.func.attr == "replace" for c in calls
                )
                if not allowed:
                    problems.append(f"{where}:{node.lineno}: {{{ast.unparse(value.value)}}}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
            # "... %s" % value or "SELECT ..." + value: SQL built by string operations
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if (
                    isinstance(side, ast.Constant)
                    and isinstance(side.value, str)
                    and _SQL.search(side.value)
                    and not (isinstance(other, ast.Constant) or _is_safe_name(other))
                ):
                    problems.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)
            and _SQL.search(node.func.value.value)
        ):
            problems.append(f"{where}:{node.lineno}: str.format on SQL")
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in _CONSTANT_NAMES for t in node.targets)
            and not _string_constants(node.value)
        ):
            problems.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
    return problems


def _is_safe_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in _SAFE_NAMES


def test_sql_is_built_from_constants_and_parameters_only() -> None:
    """No SQL string in the package interpolates a value: f-strings of SQL use only the
    schema constant; identifiers and literals go through psycopg.sql; values are %s
    parameters. (The hostile names of the bad-input corpus round-trip through registration,
    search and status: test_bad_inputs.)"""
    files = sorted((PROJECT_ROOT / "docpipe_dagster").rglob("*.py"))
    store_files = [f for f in files if f.parent.name == "store"]
    assert len(store_files) >= 4
    problems = [p for f in files for p in _sql_problems(f)]
    assert problems == []
    # The check can fail: a value interpolated into SQL is found.
    bad = PROJECT_ROOT / "docpipe_dagster_tests" / "reliability" / "corpus.py"
    sample = "def f(conn, key):\n    conn.execute(f\"SELECT * FROM {S}.t WHERE k = '{key}'\")\n"
    tmp = bad.parent / f"_sql_check_{uuid.uuid4().hex}.py"
    try:
        tmp.write_text(sample)
        assert len(_sql_problems(tmp)) == 1
    finally:
        tmp.unlink()


# --- storage keys ------------------------------------------------------------------------------

TRAVERSALS = [
    "../outside.txt",
    "a/../../outside.txt",
    "./../outside.txt",
    "/etc/passwd",
    "..",
    "a/..",
    "a\\..\\..\\outside.txt",
    "nul\x00.txt",
    "line\nbreak.txt",
]


def test_keys_cannot_climb_out_of_either_storage_backend(
    tmp_path: Path, sec_mocks: dict[str, MockServer]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the storage folder")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_text("secret")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    folder = FolderStorage(root)
    for key in [*TRAVERSALS, "linked/secret.txt", "linked/new.txt"]:
        for operation in (
            lambda k: folder.read(k),
            lambda k: folder.write(k, b"overwritten"),
            lambda k: folder.delete(k),
            lambda k: folder.exists(k),
        ):
            with pytest.raises(InvalidKeyError):
                operation(key)
    assert outside.read_text() == "outside the storage folder"
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == ["secret.txt"]
    assert list(folder.list_objects()) == []
    assert [rel for rel, _ in folder.skipped] == ["linked"]

    storage = sec_mocks["storage"]
    storage.reset()
    bucket = f"keys-{uuid.uuid4().hex[:8]}"
    with SupabaseStorage(storage.base_url, SECRETS["SUPABASE_SERVICE_KEY"], bucket) as store:
        store.write("inside.txt", b"inside")
        before = storage.stats()["total"]
        for key in TRAVERSALS:
            for operation in (
                lambda k: store.read(k),
                lambda k: store.write(k, b"overwritten"),
                lambda k: store.delete(k),
                lambda k: store.exists(k),
            ):
                with pytest.raises(InvalidKeyError):
                    operation(key)
        assert storage.stats()["total"] == before, "a traversal key reached the server"
        # Sent raw, past the client: the mock refuses them too, and nothing is written.
        headers = {
            "Authorization": f"Bearer {SECRETS['SUPABASE_SERVICE_KEY']}",
            "apikey": SECRETS["SUPABASE_SERVICE_KEY"],
        }
        api = f"{storage.base_url}/storage/v1"
        for raw in ("..%2F..%2Foutside.txt", "%2e%2e/%2e%2e/outside.txt", "a/%2e%2e/%2e%2e/x"):
            got = httpx.get(f"{api}/object/authenticated/{bucket}/{raw}", headers=headers)
            put = httpx.post(f"{api}/object/{bucket}/{raw}", headers=headers, content=b"x")
            assert got.status_code in (400, 404) and put.status_code in (400, 404), raw
            assert "outside" not in got.text or "Invalid key" in got.text
        listing = httpx.post(f"{api}/object/list/{bucket}", headers=headers, json={"prefix": "../"})
        assert listing.status_code == 400
        assert [o.key for o in store.list_objects()] == ["inside.txt"]
    assert outside.read_text() == "outside the storage folder"


def test_folder_storage_refusals_are_the_keys_fault_and_a_bad_symlink_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the HTTP API turns into 4xx (cli/test_api.py): a name the file system refuses and
    a file/folder clash are InvalidKeyError with the reason, not a storage failure; a symlink
    out of storage is skipped on every listing but logged once, not at every intake tick."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "plain.md").write_text("x")
    folder = FolderStorage(root)
    long_key = "n" * 300 + ".md"
    with pytest.raises(InvalidKeyError, match="refuses the name"):
        folder.write(long_key, b"x")
    with pytest.raises(InvalidKeyError, match="refuses the name"):
        folder.read(long_key)
    assert folder.exists(long_key) is False
    with pytest.raises(InvalidKeyError, match="collide"):
        folder.write("plain.md/inner.md", b"x")

    caplog.set_level(logging.WARNING, logger="docpipe_dagster")
    for _ in range(5):  # five intake ticks, each with a backend of its own
        backend = FolderStorage(root)
        assert [o.key for o in backend.list_objects()] == ["plain.md"]
        assert [rel for rel, _ in backend.skipped] == ["linked"]
    logged = [r for r in caplog.records if "linked" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


# --- webhooks ----------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, str | None]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((body, self.headers.get(SIGNATURE_HEADER)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_bodies_with_a_bad_signature_are_rejected(
    sec_mocks: dict[str, MockServer],
) -> None:
    body = b'{"id": "job-1", "status": "SUCCESS"}'
    good = sign(WEBHOOK_SECRET, body)
    assert verify_webhook_signature(WEBHOOK_SECRET, body, good)
    rejected = {
        "tampered body": (WEBHOOK_SECRET, body.replace(b"SUCCESS", b"ERROR"), good),
        "other secret": ("another-secret", body, good),
        "no header": (WEBHOOK_SECRET, body, None),
        "empty header": (WEBHOOK_SECRET, body, ""),
        "no scheme": (WEBHOOK_SECRET, body, good.removeprefix("sha256=")),
        "other scheme": (WEBHOOK_SECRET, body, "sha1=" + good.removeprefix("sha256=")),
        "truncated": (WEBHOOK_SECRET, body, good[:-2]),
        "no secret configured": ("", body, sign("", body)),
    }
    for what, (secret, payload, header) in rejected.items():
        assert not verify_webhook_signature(secret, payload, header), what

    # End to end: the mock signs what it delivers; the client's check accepts exactly that.
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    parser = sec_mocks["parser"]
    try:
        r = httpx.post(
            f"{parser.base_url}/api/parsing/upload",
            headers={"Authorization": f"Bearer {SECRETS['LLAMA_CLOUD_API_KEY']}"},
            files={"file": ("hook.txt", f"webhook {uuid.uuid4()}".encode())},
            data={"webhook_url": f"http://127.0.0.1:{server.server_port}/hook"},
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while not _Receiver.received:
            assert time.monotonic() < deadline, "no webhook delivered"
            time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    ((delivered, header),) = _Receiver.received
    assert json.loads(delivered)["status"] == "SUCCESS"
    assert verify_webhook_signature(WEBHOOK_SECRET, delivered, header)
    assert not verify_webhook_signature(WEBHOOK_SECRET, delivered + b" ", header)
    assert WEBHOOK_SECRET not in delivered.decode() and WEBHOOK_SECRET not in (header or "")
