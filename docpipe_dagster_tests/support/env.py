"""The environment that points build_resources() at one test's database, folder and mocks."""

from __future__ import annotations

from pathlib import Path

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
