"""The environment that points build_resources() at one test's database, folder and mocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from docpipe_dagster_tests.support.mock_servers import MockServer


def pipeline_env(
    database_url: str, storage_dir: Path, parser: MockServer, embedder: MockServer, **extra: str
) -> dict[str, str]:
    return {
        "DOCPIPE_DATABASE_URL": database_url,
        # Unused by the ephemeral instance; keeps the database resource from creating a
        # `<db>_dagster` database per test.
        "DOCPIPE_DAGSTER_DATABASE_URL": database_url,
        "DOCPIPE_STORAGE_BACKEND": "folder",
        "DOCPIPE_STORAGE_DIR": str(storage_dir),
        "LLAMAPARSE_BASE_URL": parser.base_url,
        "OPENAI_BASE_URL": embedder.base_url + "/v1",
        "LLAMA_CLOUD_API_KEY": parser.api_key or "",
        "OPENAI_API_KEY": embedder.api_key or "",
        "DOCPIPE_SETTLE_SECONDS": "0",
        **extra,
    }


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set exactly these docpipe variables: any other DOCPIPE_* (and DAGSTER_HOME) is cleared
    so a developer's shell cannot leak settings into a test."""
    for name in list(os.environ):
        stray = (name.startswith("DOCPIPE_") and name != "DOCPIPE_HOME") or name == "DAGSTER_HOME"
        if stray and name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
