"""Answer a query, for `docpipe search` and GET /v1/search alike: embed it with the model of
the space being searched (exactly as that space's chunks were embedded), then call the SQL
search function (store/search.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from docpipe_dagster.actions import QueryError
from docpipe_dagster.actions.spaces import parse_space, space_client
from docpipe_dagster.store.schema import VectorSpace
from docpipe_dagster.store.search import SearchFilters, SearchResult, search, search_space


async def embed_query(text: str, space: VectorSpace) -> Sequence[float]:
    """The query embedded exactly as the space's chunks were (same model and dimensions)."""
    async with space_client(space, max_attempts=3) as client:
        batch = await client.embed([text])
    vector = batch.vectors[0]
    if vector is None:
        raise QueryError(f"the query could not be embedded: {batch.errors[0]}")
    return vector


def resolve_space(
    conn: psycopg.Connection, model: str | None, dims: int | None
) -> VectorSpace | None:
    """The named space (explicitly asked: it may be incomplete), else the active one."""
    from docpipe_dagster.store.spaces import find_space

    if model is None:
        return search_space(conn)
    space = find_space(conn, model, dims)
    if space is None:
        raise QueryError(f"no vector space {model}:{dims or '*'} (see `docpipe spaces`)")
    return space


async def answer(
    conn: psycopg.Connection,
    query: str,
    *,
    k: int,
    mode: str,
    filters: SearchFilters,
    ef_search: int | None = None,
    space_model: str | None = None,
    space_dims: int | None = None,
) -> dict[str, Any]:
    """The search payload: {"query", "mode", "model", "dimensions", "results": [...]}."""
    if not query.strip():
        raise QueryError("the query is empty")
    space = resolve_space(conn, space_model, space_dims)
    results: list[SearchResult] = []
    if space is not None:
        vector = await embed_query(query, space) if mode in ("vector", "hybrid") else None
        results = search(
            conn,
            query,
            vector,
            k=k,
            mode=mode,
            filters=filters,
            ef_search=ef_search,
            space=space,
        )
    return {
        "query": query,
        "mode": mode,
        "model": space.model if space else None,
        "dimensions": space.dims if space else None,
        "results": [r.as_dict() for r in results],
    }


def run_query(
    conn: psycopg.Connection,
    query: str,
    *,
    k: int,
    mode: str,
    filters: SearchFilters,
    ef_search: int | None = None,
    space: str | None = None,
) -> dict[str, Any]:
    """`answer` from synchronous code, the space named as `MODEL[:DIMS]` (None: the active
    one). Raises QueryError, store.search.SearchError or clients.embeddings.EmbeddingError."""
    model, dims = parse_space(space)
    return asyncio.run(
        answer(
            conn,
            query,
            k=k,
            mode=mode,
            filters=filters,
            ef_search=ef_search,
            space_model=model,
            space_dims=dims,
        )
    )
