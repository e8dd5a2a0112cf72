"""The embedding cache: one COPY for new vectors; a text cached meanwhile keeps its row."""

from __future__ import annotations

import psycopg

from docpipe_dagster.store.queries import Store, VectorSpace

SPACE = VectorSpace("test-model", 3)


def _cached(url: str) -> dict[str, list[float]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT text_sha256, embedding::text FROM upload_pipeline.embedding_cache"
            " WHERE embedding_model = %s AND dims = %s",
            (SPACE.model, SPACE.dims),
        ).fetchall()
    return {sha: [float(x) for x in text.strip("[]").split(",")] for sha, text in rows}


def test_new_vectors_are_cached_and_a_text_cached_meanwhile_keeps_its_row(
    database_url: str,
) -> None:
    with Store.open(database_url, max_size=2) as store:
        store.cache_embeddings({"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0]}, SPACE)
        assert _cached(database_url) == {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0]}

        # "b" was cached by someone else since this run looked: the COPY conflicts, and the
        # rows go in without replacing it
        store.cache_embeddings({"b": [0.0, 0.0, 1.0], "c": [0.5, 0.5, 0.0]}, SPACE)
        assert _cached(database_url) == {
            "a": [1.0, 0.0, 0.0],
            "b": [0.0, 1.0, 0.0],
            "c": [0.5, 0.5, 0.0],
        }
        assert store.cached_text_shas(["a", "b", "c", "d"], SPACE) == {"a", "b", "c"}
