"""upload_pipeline.search over documents ingested through the real pipeline (mocks over HTTP)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from pgvector.psycopg import register_vector

from docpipe_dagster.actions.search import embed_query
from docpipe_dagster.core.text import normalise_text
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.queries import S, Store, VectorSpace
from docpipe_dagster.store.search import (
    SearchError,
    SearchFilters,
    search,
    search_language,
    search_space,
    set_search_language,
)
from docpipe_dagster_tests.defs.conftest import Pipeline

APACHE = (
    "# Apache License 2.0\n\n## Grant of Patent License\n\n"
    "Each Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, "
    "royalty-free, irrevocable patent license to make, have made, use, offer to sell, sell, "
    "import, and otherwise transfer the Work.\n"
)
GPL = (
    "# GNU General Public License v3\n\n## Patents\n\n"
    "A contributor is a copyright holder who authorizes use under this License of the Program. "
    "Each contributor grants you a non-exclusive, worldwide, royalty-free patent license under "
    "the contributor's essential patent claims. You may convey covered works to others. "
    "The GNU General Public License is a free, copyleft license for software and other kinds "
    "of works. This License explicitly affirms your unlimited permission to run the Program. "
    "Conveying under any other circumstances is permitted solely under the conditions stated "
    "below. Sublicensing is not allowed. License license licenses licensing.\n"
)
OTTERS = "# Otters\n\nSea otters hold hands while sleeping so they do not drift apart.\n"
QUERY = "grant of patent license contributor royalty-free irrevocable"


def _ingest(pipeline: Pipeline) -> None:
    pipeline.write("legal/apache.md", APACHE)
    pipeline.write("legal/gpl3.md", GPL)
    pipeline.write("docs/otters.html", f"<html><body><h1>Otters</h1><p>{OTTERS}</p></body></html>")
    outcomes = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert all(o.success for o in outcomes)
    states = {k: j["state"] for k, j in pipeline.jobs().items()}
    assert set(states.values()) == {"completed"}, states


def _query(pipeline: Pipeline, text: str, **kw):
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        register_vector(conn)
        space = search_space(conn)
        assert space is not None
        vector = asyncio.run(embed_query(text, space)) if kw.get("mode") != "text" else None
        return search(conn, text, vector, **kw)


def test_modes_rank_exact_terms_and_carry_provenance(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    text = _query(pipeline, QUERY, mode="text", k=5)
    hybrid = _query(pipeline, QUERY, mode="hybrid", k=5)
    vector = _query(pipeline, QUERY, mode="vector", k=5)
    assert text[0].storage_key == "legal/apache.md"
    assert hybrid[0].storage_key == "legal/apache.md"
    assert text[0].text_rank == 1 and text[0].vector_rank is None
    assert vector[0].vector_rank == 1 and vector[0].text_rank is None
    # hybrid fuses both lists: the top result is ranked by each of them
    assert hybrid[0].vector_rank is not None and hybrid[0].text_rank is not None
    assert [r.rank for r in hybrid] == list(range(1, len(hybrid) + 1))
    assert {r.storage_key for r in text} == {"legal/apache.md", "legal/gpl3.md"}

    top = hybrid[0]
    job = pipeline.jobs()["legal/apache.md"]
    assert top.job_id == str(job["job_id"]) and top.content_sha256 == job["content_sha256"]
    assert top.media_type == "text/markdown"
    assert top.heading_path[:1] == ["Apache License 2.0"]
    markdown = pipeline.rows(
        "SELECT markdown FROM {S}.parse_cache WHERE content_sha256 = %s", (job["content_sha256"],)
    )[0]["markdown"]
    assert top.char_start is not None and top.char_end is not None
    assert normalise_text(markdown)[top.char_start : top.char_end] == top.text
    assert top.page_start is None  # no page columns in this schema


def test_filters(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    keys = lambda rs: {r.storage_key for r in rs}  # noqa: E731
    assert keys(_query(pipeline, "otters license", k=10, filters=SearchFilters("docs/"))) == {
        "docs/otters.html"
    }
    # a prefix is literal: "_" and "%" are not wildcards
    assert _query(pipeline, "license", k=10, filters=SearchFilters("lega_")) == []
    html = _query(
        pipeline, "license otters", k=10, filters=SearchFilters(media_types=["text/html"])
    )
    assert keys(html) == {"docs/otters.html"}
    gpl_id = pipeline.jobs()["legal/gpl3.md"]["document_id"]
    only = _query(pipeline, QUERY, k=10, filters=SearchFilters(document_ids=[gpl_id]))
    assert keys(only) == {"legal/gpl3.md"}
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert _query(pipeline, QUERY, k=10, filters=SearchFilters(ingested_after=future)) == []
    assert len(_query(pipeline, QUERY, k=10, filters=SearchFilters(ingested_before=future))) >= 2


def test_bad_requests_are_explained(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        register_vector(conn)
        with pytest.raises(SearchError, match="mode must be vector, text or hybrid"):
            search(conn, "x", None, mode="fuzzy")
        with pytest.raises(SearchError, match="needs query_vector"):
            search(conn, "x", None, mode="hybrid")
        with pytest.raises(SearchError, match="has 3 dimensions"):
            search(conn, "x", [0.1, 0.2, 0.3], mode="vector")
        with pytest.raises(SearchError, match="k must be between"):
            search(conn, "x", None, mode="text", k=0)
        with pytest.raises(SearchError, match="no vector space"):
            search(conn, "x", None, mode="text", space=VectorSpace("nope", 3))


def test_language_setting_falls_back_to_simple(pipeline: Pipeline) -> None:
    _ingest(pipeline)
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        assert search_language(conn) == "english"
        # english stems: "irrevocably" finds "irrevocable"
        assert search(conn, "irrevocably", None, mode="text")
        assert set_search_language(conn, "klingon") == "simple"
        assert search_language(conn) == "simple"
        assert search(conn, "irrevocably", None, mode="text") == []
        assert search(conn, "irrevocable", None, mode="text")
        assert set_search_language(conn, "english") == "english"


def test_filtered_top_k_is_complete_with_iterative_scan(pipeline: Pipeline) -> None:
    """5 % of 3,000 rows match the prefix: a plain HNSW scan (ef_search 40) would return about
    two of them; the iterative scan returns k, and they are the exact nearest ones."""
    space = VectorSpace("filter-test", 16)
    with Store.open(pipeline.database_url, max_size=1) as store:
        store.ensure_vector_space(space)
    rng = random.Random(7)
    job = uuid.uuid4()
    rows = []
    for i in range(3000):
        vec = [rng.gauss(0, 1) for _ in range(16)]
        key = f"{'hit' if i % 20 == 0 else 'miss'}/{i}.md"
        rows.append((uuid.uuid4(), uuid.uuid4(), job, key, "0" * 64, 0, f"row {i}", vec))
    with psycopg.connect(pipeline.database_url) as conn:
        register_vector(conn)
        conn.execute(
            f"""INSERT INTO {S}.upload_jobs (job_id, document_id, storage_key, content_sha256,
                size_bytes, state) VALUES (%s, %s, 'synthetic', %s, 1, 'completed')""",
            (job, uuid.uuid4(), "0" * 64),
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {S}.document_chunks (chunk_id, document_id, job_id, storage_key,
                    content_sha256, chunk_index, content, token_estimate, embedding_model, dims,
                    embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, 1, 'filter-test', 16,
                    %s::vector)""",
                [(*r[:7], r[7]) for r in rows],
            )
        conn.commit()
        conn.execute("ANALYZE upload_pipeline.document_chunks")
        conn.commit()
        query = [rng.gauss(0, 1) for _ in range(16)]
        plan = conn.execute(
            f"""EXPLAIN SELECT chunk_id FROM {S}.document_chunks c
                WHERE c.embedding_model = 'filter-test' AND c.dims = 16
                ORDER BY c.embedding::vector(16) <=> %s::vector(16) LIMIT 20""",
            (query,),
        ).fetchall()
        assert "document_chunks_hnsw_filter_test_16" in " ".join(r[0] for r in plan)
        got = search(
            conn,
            "x",
            query,
            k=20,
            mode="vector",
            space=VectorSpace("filter-test", 16),
            filters=SearchFilters("hit/"),
        )
        exact = conn.execute(
            f"""SELECT storage_key FROM {S}.document_chunks WHERE embedding_model = 'filter-test'
                AND storage_key LIKE 'hit/%%' ORDER BY embedding::vector(16) <=> %s::vector(16)
                LIMIT 20""",
            (query,),
        ).fetchall()
    assert len(got) == 20
    assert all(r.storage_key.startswith("hit/") for r in got)
    overlap = {r.storage_key for r in got} & {r[0] for r in exact}
    assert len(overlap) >= 18
    distances = [r.vector_distance for r in got]
    assert distances == sorted(distances)
