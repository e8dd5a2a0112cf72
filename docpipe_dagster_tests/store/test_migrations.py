from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from docpipe_dagster.store.migrate import MigrationError, discover, migrate, pending, sql_dir

EXPECTED_TABLES = {
    "upload_jobs",
    "document_chunk_buffer",
    "document_vector_buffer",
    "embedding_cache",
    "parse_cache",
    "events",
    "document_chunks",
    "vector_spaces",
    "schema_migrations",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'upload_pipeline'"
        ).fetchall()
    return {r[0] for r in rows}


def _recorded(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version FROM upload_pipeline.schema_migrations ORDER BY version"
        ).fetchall()
    return [r[0] for r in rows]


def test_migrate_creates_schema_and_second_run_is_noop(empty_database_url: str) -> None:
    first = migrate(empty_database_url)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert _tables(empty_database_url) >= EXPECTED_TABLES
    assert migrate(empty_database_url) == []
    assert pending(empty_database_url) == []
    assert _recorded(empty_database_url) == [m.version for m in discover()]


@pytest.mark.slow  # several processes migrating at once
def test_concurrent_migrations_apply_exactly_once(empty_database_url: str) -> None:
    code = "import sys; from docpipe_dagster.store.migrate import migrate; print(len(migrate(sys.argv[1])))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied_counts = sorted(int(out.strip()) for out, _ in outputs)
    # exactly one process applied everything, the others found nothing to do
    assert applied_counts == [0, 0, len(discover())]
    assert _recorded(empty_database_url) == [m.version for m in discover()]


def test_failing_migration_is_rolled_back_whole(empty_database_url: str, tmp_path: Path) -> None:
    for migration in discover():
        shutil.copy(migration.path, tmp_path / migration.path.name)
    (tmp_path / "9001_broken.sql").write_text(
        "CREATE TABLE upload_pipeline.half_done (id int);\n"
        "ALTER TABLE upload_pipeline.upload_jobs ADD COLUMN oops int;\n"
        "SELECT * FROM upload_pipeline.no_such_table;\n"
    )
    with pytest.raises(MigrationError, match=r"9001_broken.sql failed and was rolled back"):
        migrate(empty_database_url, tmp_path)
    tables = _tables(empty_database_url)
    assert "half_done" not in tables
    with psycopg.connect(empty_database_url) as conn:
        cols = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema='upload_pipeline' AND table_name='upload_jobs'"
        ).fetchall()
    assert "oops" not in {c[0] for c in cols}
    assert 9001 not in _recorded(empty_database_url)
    # the good files before it were applied and stay applied
    assert _recorded(empty_database_url) == [m.version for m in discover()]


def test_changed_applied_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    for migration in discover():
        shutil.copy(migration.path, tmp_path / migration.path.name)
    migrate(empty_database_url, tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited later\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database_url, tmp_path)


def test_badly_named_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "add_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(tmp_path)


def test_sql_dir_is_the_checkout_sql_folder() -> None:
    assert sql_dir().name == "sql"
    assert any(sql_dir().glob("0001_*.sql"))


def test_runs_check_migrations_but_never_apply_them(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docpipe_dagster.defs.resources import DatabaseResource

    monkeypatch.setenv("DOCPIPE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("DOCPIPE_DAGSTER_DATABASE_URL", empty_database_url)
    with pytest.raises(RuntimeError, match=r"missing \d+ migration\(s\).*docpipe db migrate"):
        DatabaseResource().store()
    assert len(pending(empty_database_url)) == len(discover())
    migrate(empty_database_url)
    resource = DatabaseResource()
    try:
        assert resource.store().current_versions() == {}
    finally:
        resource.teardown_after_execution(None)  # type: ignore[arg-type]


def test_a_database_migrated_before_a_comment_only_edit_is_still_accepted(
    empty_database_url: str,
) -> None:
    from docpipe_dagster.store.migrate import COMMENT_ONLY_EDITS

    migrate(empty_database_url)
    (earlier,) = COMMENT_ONLY_EDITS[2]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE upload_pipeline.schema_migrations SET checksum = %s WHERE version = 2",
            (earlier,),
        )
    assert migrate(empty_database_url) == []  # accepted, nothing re-applied
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE upload_pipeline.schema_migrations SET checksum = 'other' WHERE version = 2"
        )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database_url)
