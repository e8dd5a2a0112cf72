"""Direct reads of the pipeline's tables for assertions, shared by the test harnesses."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from docpipe_dagster.store.queries import S


class TableReads:
    """`rows`, `execute` and `jobs` over `self.database_url` ({S} in a query is the schema)."""

    database_url: str

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query.replace("{S}", S), params)
            return cur.fetchall()

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> int:
        """One statement, committed; the row count."""
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query.replace("{S}", S), params).rowcount

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The current (newest registered) job per storage key."""
        rows = self.rows(
            "SELECT DISTINCT ON (storage_key) * FROM {S}.upload_jobs"
            " ORDER BY storage_key, registered_at DESC"
        )
        return {r["storage_key"]: r for r in rows}
