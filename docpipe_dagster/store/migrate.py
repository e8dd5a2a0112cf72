"""Apply the numbered SQL files in `sql/` in order, once each.

Each file runs in its own transaction (a failing file leaves no trace), under a
session advisory lock so concurrent processes cannot race, and is recorded with its
checksum in `upload_pipeline.schema_migrations`. A second run is a no-op; an applied file
whose content later changed is an error, not a silent divergence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from docpipe_dagster.bundled import bundled_path
from docpipe_dagster.config import settings
from docpipe_dagster.store.schema import SCHEMA

# Arbitrary but fixed: every docpipe process migrating the same database takes this lock.
MIGRATION_LOCK_ID = 7_402_118_553
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


# Migrations whose comments (never their SQL) were edited after release: the checksum
# recorded by databases migrated before the edit is accepted as well.
# 0002: its comment pointed at design notes outside the repository; it now names docs/.
COMMENT_ONLY_EDITS: dict[int, frozenset[str]] = {
    2: frozenset({"d112c1b50edd900e6e034ea6e7e7d0b794795a82797cfe5aef92c5a70f552e6e"}),
}


class MigrationError(RuntimeError):
    """A migration file failed or the recorded history does not match the files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def sql_dir() -> Path:
    """The migrations: `DOCPIPE_SQL_DIR`, else those shipped with the package."""
    raw = settings().sql_dir
    return Path(raw) if raw else bundled_path("sql")


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    # Applying nothing and saying nothing would leave a database without its schema, and
    # the first query would fail far from the cause: refuse instead.
    if not directory.is_dir():
        raise MigrationError(f"no migrations: {directory} is not a folder (DOCPIPE_SQL_DIR)")
    if not any(directory.glob("*.sql")):
        raise MigrationError(f"no migration files (NNNN_name.sql) in {directory}")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return migrations


_BOOTSTRAP = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.schema_migrations",)).fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(f"SELECT version, checksum FROM {SCHEMA}.schema_migrations").fetchall()
    return {int(v): c for v, c in rows}


def pending(url: str, directory: Path | None = None) -> list[Migration]:
    with psycopg.connect(url, autocommit=True) as conn:
        done = applied_versions(conn)
    return [m for m in discover(directory) if m.version not in done]


def migrate(url: str, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations; returns the ones applied by this call."""
    migrations = discover(directory)
    applied: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            # pgvector's type must exist before any file uses it; the extension is
            # database-wide, so creating it here is idempotent and harmless.
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
            done = applied_versions(conn)
            for migration in migrations:
                recorded = done.get(migration.version)
                if recorded is not None:
                    accepted = {migration.checksum} | COMMENT_ONLY_EDITS.get(
                        migration.version, frozenset()
                    )
                    if recorded not in accepted:
                        raise MigrationError(
                            f"{migration.path.name} was changed after it was applied "
                            "(checksum differs); add a new migration instead"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute(
                            f"INSERT INTO {SCHEMA}.schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"{migration.path.name} failed and was rolled back: "
                        f"{exc.diag.message_primary or exc}"
                    ) from exc
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied
