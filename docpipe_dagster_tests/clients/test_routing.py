"""DOCPIPE_PARSE_LOCALLY: which file types are parsed in-process, which by LlamaParse, and
which intake refuses (clients/parsing.py)."""

from __future__ import annotations

import pytest

from docpipe_dagster.clients.parsing import local_extensions, parser_label, routing
from docpipe_dagster.config import Settings, settings
from docpipe_dagster.core.extract import LOCAL_EXTENSIONS, TEXT_LIKE_EXTENSIONS
from docpipe_dagster.core.llamaparse_extensions import LLAMAPARSE_EXTENSIONS

PDF = b"%PDF-1.7\n"


def test_default_is_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCPIPE_PARSE_LOCALLY", raising=False)
    r = routing()
    assert r.mode == "text" and r.uses_service
    # Text-like types in-process: never paid for.
    for key in ("a.txt", "a.md", "a.markdown", "a.json", "a.csv", "a.html", "a.xml", "README"):
        assert r.is_local(key), key
    # Layout types go to LlamaParse.
    for key in ("a.pdf", "a.docx", "a.pptx", "a.xlsx", "a.odt", "a.epub", "a.rtf", "a.png"):
        assert not r.is_local(key), key
    # What LlamaParse does not read is parsed in-process whatever the setting.
    assert r.is_local("mail.eml") and r.is_local("mail.msg")
    # Intake accepts what either parser reads.
    assert r.accepted == LOCAL_EXTENSIONS | LLAMAPARSE_EXTENSIONS
    assert r.refusal("deck.key", b"PK\x05\x06" + b"\x00" * 18) is None
    assert r.refusal("a.pdf", PDF) is None


def test_all_needs_no_parser_service() -> None:
    r = routing("all")
    assert not r.uses_service
    assert r.local == r.accepted == LOCAL_EXTENSIONS
    assert r.is_local("a.pdf") and r.is_local("a.docx")
    reason = r.refusal("deck.key", b"PK\x05\x06" + b"\x00" * 18)
    assert reason is not None
    assert "DOCPIPE_PARSE_LOCALLY=all" in reason and "DOCPIPE_PARSE_LOCALLY=text" in reason


def test_none_sends_everything_the_service_reads() -> None:
    r = routing("NONE")
    assert r.mode == "none"
    assert not r.is_local("a.md") and not r.is_local("a.csv") and not r.is_local("a.pdf")
    # .txt and .json are not on LlamaParse's list: sending them would only buy an error.
    assert r.is_local("a.txt") and r.is_local("a.json") and r.is_local("NOTES")


def test_an_extension_list_stays_supported() -> None:
    r = routing("md, .CSV")
    assert r.mode == "csv,md"
    assert r.is_local("a.md") and r.is_local("a.csv") and r.is_local("a.txt")
    assert not r.is_local("a.html") and not r.is_local("a.pdf")
    assert local_extensions("pdf") >= {".pdf", ".txt"}
    with pytest.raises(ValueError, match=r"cannot parse \.key locally"):
        routing("txt,key")


def test_the_settings_model_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.model_fields["parse_locally"].default == "text"
    assert routing("text").local >= TEXT_LIKE_EXTENSIONS
    monkeypatch.setenv("DOCPIPE_PARSE_LOCALLY", "everything")
    with pytest.raises(ValueError, match="DOCPIPE_PARSE_LOCALLY='everything'"):
        settings()
    monkeypatch.setenv("DOCPIPE_PARSE_LOCALLY", " All ")
    assert settings().parse_locally == "all"


def test_parser_label() -> None:
    assert parser_label("local-v1:markdown") == "local"
    assert parser_label("llamaparse-v2:cost_effective:latest:markdown") == (
        "llamaparse-v2 (cost_effective)"
    )
    assert parser_label("llamaparse-v1:markdown") == "llamaparse-v1"
    assert parser_label(None) == ""


def test_fully_offline_needs_no_parser_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `all`, `docpipe dev` starts no parser mock (nor checks its port), `ingest --wait`
    neither starts nor probes one, and `validate` reports the parser as not used."""
    from docpipe_dagster.health import service_checks
    from docpipe_dagster.local.dev_stack import DevStack
    from docpipe_dagster.local.mocks import mock_ports
    from docpipe_dagster.local.services import endpoints

    monkeypatch.delenv("DOCPIPE_PARSE_LOCALLY", raising=False)
    assert "llamaparse" in mock_ports()
    assert "parser" in {e.check for e in endpoints()}
    monkeypatch.setenv("DOCPIPE_PARSE_LOCALLY", "all")
    assert set(mock_ports()) == {"storage", "openai"}
    assert "parser" not in {e.check for e in endpoints()}
    assert not [p for p in DevStack(start_mocks=True).required_ports() if "llamaparse" in p[0]]
    (parser,) = service_checks(["parser"])
    assert parser.ok and "not used" in parser.detail
