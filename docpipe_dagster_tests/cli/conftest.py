from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from docpipe_dagster_tests.support.mock_servers import MockServer, start_mock


@pytest.fixture(scope="module")
def cli_mocks() -> Iterator[dict[str, MockServer]]:
    servers = {name: start_mock(name) for name in ("llamaparse", "openai", "storage")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, cli_mocks: dict[str, MockServer]) -> dict[str, str]:
    """Environment for running `docpipe` as a subprocess against this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "DAGSTER_"))}
    env.update(
        {
            "DOCPIPE_HOME": str(tmp_path / "home"),
            "DOCPIPE_DATABASE_URL": database_url,
            "LLAMAPARSE_BASE_URL": cli_mocks["llamaparse"].base_url,
            "LLAMA_CLOUD_API_KEY": cli_mocks["llamaparse"].api_key,
            "OPENAI_BASE_URL": cli_mocks["openai"].base_url + "/v1",
            "OPENAI_API_KEY": cli_mocks["openai"].api_key,
            "SUPABASE_URL": cli_mocks["storage"].base_url,
            "SUPABASE_SERVICE_KEY": cli_mocks["storage"].api_key,
        }
    )
    return env
