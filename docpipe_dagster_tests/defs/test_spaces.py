"""A changed embedding dimension: search stays on the old, complete space while the new one
is backfilled, switches in one transaction when it covers every completed document, and the
old space can then be dropped. Real pipeline, real mocks over HTTP, real Postgres."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from pgvector.psycopg import register_vector

from docpipe_dagster.actions.search import embed_query
from docpipe_dagster.actions.spaces import sync_configured_space
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.invariants import check_invariants
from docpipe_dagster.store.search import search, search_space
from docpipe_dagster.store.spaces import SpaceError, drop_space, list_spaces
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.defs.conftest import wired_pipeline
from docpipe_dagster_tests.support import MockServer


def _top(url: str, text: str) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        space = search_space(conn)
        vector = asyncio.run(embed_query(text, space))
        return search(conn, text, vector, k=3, mode="hybrid")


def test_model_change_switches_only_when_backfilled(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
) -> None:
    storage = tmp_path / "storage"
    with wired_pipeline(monkeypatch, storage, database_url, llamaparse_mock, openai_mock) as p:
        p.write("a/otters.md", "# Otters\n\nSea otters hold hands while they sleep.\n")
        p.write("a/bees.md", "# Bees\n\nThe queen bee lays eggs in the brood comb.\n")
        p.write("a/winch.pdf", build_text_pdf(["Winch maintenance", "Grease the drum yearly."]))
        assert all(o.success for o in ingest_pending(resources=p.resources, instance=p.instance))
        assert sync_configured_space(database_url)["active"] is True
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert search_space(conn).dims == 1536

    env = {"DOCPIPE_EMBEDDING_DIMENSIONS": "256"}
    with wired_pipeline(
        monkeypatch, storage, database_url, llamaparse_mock, openai_mock, **env
    ) as p:
        p.write("b/lava.md", "# Lava\n\nMagma erupts from the volcano as lava.\n")
        assert all(o.success for o in ingest_pending(resources=p.resources, instance=p.instance))
        with psycopg.connect(database_url, autocommit=True) as conn:
            spaces = {(s.model, s.dims): s for s in list_spaces(conn)}
            new = spaces[("text-embedding-3-small", 256)]
            assert (new.documents, new.completed, new.is_active) == (1, 4, False)
            # search never reads the incomplete new space on its own
            assert search_space(conn).dims == 1536
        assert {r.dims for r in _top(database_url, "otters holding hands")} == {1536}

        result = sync_configured_space(database_url)
        assert (result["documents"], result["active"]) == (3, True)
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert search_space(conn).dims == 256
            events = conn.execute(
                "SELECT dims, event_type, payload FROM upload_pipeline.space_events"
                " ORDER BY event_id"
            ).fetchall()
            assert events[-1][:2] == (256, "activated")
            assert events[-1][2]["previous"] == "text-embedding-3-small:1536"
            assert check_invariants(conn).ok
        hits = _top(database_url, "otters holding hands")
        assert hits[0].storage_key == "a/otters.md" and hits[0].dims == 256
        assert _top(database_url, "volcano lava magma")[0].storage_key == "b/lava.md"
        # the backfilled chunks keep their ids and provenance
        assert hits[0].char_start is not None
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT dims, chunk_id, char_start, char_end, page_start, page_end"
                " FROM upload_pipeline.document_chunks WHERE storage_key = 'a/winch.pdf'"
                " ORDER BY chunk_id, dims"
            ).fetchall()
        assert {r[0] for r in rows} == {256, 1536}
        assert {r[1:] for r in rows if r[0] == 256} == {r[1:] for r in rows if r[0] == 1536}
        assert {(r[4], r[5]) for r in rows} == {(1, 2)}

        with psycopg.connect(database_url, autocommit=True) as conn:
            with pytest.raises(SpaceError, match="the space search reads"):
                drop_space(conn, "text-embedding-3-small", 256)
            with pytest.raises(SpaceError, match="several spaces"):
                drop_space(conn, "text-embedding-3-small", None)
            drop_space(conn, "text-embedding-3-small", 1536)
            left = [(s.dims, s.is_active, s.complete) for s in list_spaces(conn)]
            assert left == [(256, True, True)]
            assert check_invariants(conn).ok


def test_daemon_sensor_requests_the_backfill_and_the_run_switches(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
) -> None:
    import dagster as dg

    from docpipe_dagster.defs.spaces.sensors import vector_space_backfill, vector_space_sensor

    storage = tmp_path / "storage"

    def evaluate(p) -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(resources=p.resources, instance=p.instance) as context:
            return vector_space_sensor(context)

    with wired_pipeline(monkeypatch, storage, database_url, llamaparse_mock, openai_mock) as p:
        p.write("a/otters.md", "# Otters\n\nSea otters hold hands while they sleep.\n")
        assert all(o.success for o in ingest_pending(resources=p.resources, instance=p.instance))
        first = evaluate(p)  # complete, not yet active: activated by the sensor itself
        assert isinstance(first, dg.SkipReason) and "activated" in str(first.skip_message)

    env = {"DOCPIPE_EMBEDDING_DIMENSIONS": "128"}
    with wired_pipeline(
        monkeypatch, storage, database_url, llamaparse_mock, openai_mock, **env
    ) as p:
        request = evaluate(p)
        assert isinstance(request, dg.SensorResult)
        (run,) = request.run_requests
        assert run.run_key.startswith("text-embedding-3-small:128:")
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert search_space(conn).dims == 1536  # still the complete old space
        result = vector_space_backfill.execute_in_process(
            resources={"database": p.resources["database"]}, instance=p.instance
        )
        assert result.success
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert search_space(conn).dims == 128
        done = evaluate(p)
        assert isinstance(done, dg.SkipReason) and "covers every" in str(done.skip_message)
