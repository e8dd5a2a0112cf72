"""A company's document folder, as a new user drops it into storage: DOCX, PPTX, XLSX, ODT,
EPUB, RTF, a legacy .xls (and .doc when LibreOffice is installed), a scanned PDF and a photo
of a page. Every file ends `completed` and search (the SQL function `docpipe search` calls,
through actions.search.answer) finds each by its own content: once with the default routing
(layout types through the LlamaParse mock) and once with DOCPIPE_PARSE_LOCALLY=all and no
parser service at all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from docpipe_dagster.actions.search import answer
from docpipe_dagster.local.ports import free_ports
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.pool import connect
from docpipe_dagster.store.search import SearchFilters, set_search_language
from docpipe_dagster_tests.defs.conftest import Pipeline, wired_pipeline
from docpipe_dagster_tests.support import MockServer
from docpipe_dagster_tests.support.company_folder import (
    LEGACY_DOC_PHRASE,
    PHRASES,
    company_folder,
    xlsx_file,
    zip_members,
)


def _search(pipeline: Pipeline, query: str) -> list[str]:
    """Storage keys of the top hits, as `docpipe search` would list them."""
    with connect(pipeline.database_url, autocommit=True) as conn:
        set_search_language(conn, "english")
        payload = asyncio.run(
            answer(conn, query, k=3, mode="hybrid", filters=SearchFilters(None, None, None))
        )
    return [r["storage_key"] for r in payload["results"]]


def _ingest_and_find_everything(pipeline: Pipeline, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        pipeline.write(key, data)
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcomes and all(o.success for o in outcomes)
    jobs = pipeline.jobs()
    states = {k: (j["state"], j["failure_reason"]) for k, j in jobs.items()}
    assert states == {k: ("completed", None) for k in files}, states
    phrases = dict(PHRASES)
    if "archive/census.doc" in files:
        phrases["archive/census.doc"] = LEGACY_DOC_PHRASE
    for key, phrase in phrases.items():
        hits = _search(pipeline, phrase)
        assert hits and hits[0] == key, (key, phrase, hits)


@pytest.mark.slow
def test_a_company_folder_through_llamaparse_by_default(pipeline: Pipeline) -> None:
    files = company_folder()
    _ingest_and_find_everything(pipeline, files)
    # Layout types went to the parser (the mock, parsing with the same local backend).
    uploads = pipeline.parser.stats()["by_route"].get("POST /api/v2/parse/upload", 0)
    assert uploads == len(files)
    with pipeline.store() as store:
        parsers = store.status()["parsers"]
    assert sum(n for p, n in parsers.items() if p.startswith("llamaparse-v2")) == len(files)


@pytest.mark.slow
def test_a_company_folder_fully_offline(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
) -> None:
    """DOCPIPE_PARSE_LOCALLY=all: no parser service is running, nothing is sent to one."""
    (nowhere,) = free_ports(1)
    with wired_pipeline(
        monkeypatch,
        tmp_path / "storage",
        database_url,
        llamaparse_mock,
        openai_mock,
        DOCPIPE_PARSE_LOCALLY="all",
        LLAMAPARSE_BASE_URL=f"http://127.0.0.1:{nowhere}",
    ) as pipeline:
        files = company_folder()
        _ingest_and_find_everything(pipeline, files)
        assert not [r for r in llamaparse_mock.stats()["by_route"] if "parse" in r]
        with pipeline.store() as store:
            parsers = store.status()["parsers"]
        assert {p.split(":")[0].split("-")[0] for p in parsers} == {"local"}, parsers
        assert sum(parsers.values()) == len(files)


def test_intake_parses_extensionless_text_and_refuses_impostors(pipeline: Pipeline) -> None:
    """A text file without an extension is parsed in-process (never a paid call that can only
    fail); a renamed program, a zip called .docx and a binary file without an extension fail
    at intake, each with a reason a person can act on. No parser call for any of them."""
    program = b"MZ" + b"\x00" * 58 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 64
    files = {
        "notes/README": b"The boiler room key hangs behind the second door.\n",
        "notes/message-0001": (
            b"From: Ada <ada@example.org>\r\nTo: facilities@example.org\r\n"
            b"Subject: Gutters\r\nDate: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\n"
            b"The gutters above the loading dock overflow in heavy rain.\r\n"
        ),
        "notes/setup.docx": program,
        "notes/archive.docx": zip_members([("a.txt", "not office")]),
        "notes/blob": bytes(range(256)) * 4,
        "notes/revenue.docx": xlsx_file(),
    }
    for key, data in files.items():
        pipeline.write(key, data)
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    jobs = pipeline.jobs()
    assert jobs["notes/README"]["state"] == "completed"
    assert _search(pipeline, "boiler room key")[0] == "notes/README"
    # An e-mail without an extension is detected and parsed as one (headers, then body).
    assert jobs["notes/message-0001"]["media_type"] == "message/rfc822"
    assert jobs["notes/message-0001"]["state"] == "completed"
    assert _search(pipeline, "gutters above the loading dock")[0] == "notes/message-0001"
    reasons = {k: (j["state"], j["failed_stage"], j["failure_reason"]) for k, j in jobs.items()}
    for key, fragment in {
        "notes/setup.docx": "Windows program",
        "notes/archive.docx": "not Office Open XML",
        "notes/blob": "has no extension",
        "notes/revenue.docx": "rename it to revenue.xlsx",
    }.items():
        state, stage, reason = reasons[key]
        assert (state, stage) == ("failed", "intake") and fragment in reason, reasons[key]
    assert not [r for r in pipeline.parser.stats()["by_route"] if "parse" in r], "no parser call"
