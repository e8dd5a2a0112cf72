"""Query side shared by `docpipe search` and the API: embed the query with the model of the
space being searched, then call the SQL search function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS, EmbeddingsClient
from docpipe_dagster.config import api_key_value, service_settings
from docpipe_dagster.store.search import (
    SearchFilters,
    SearchResult,
    SpaceRef,
    search,
    search_space,
)


class QueryError(ValueError):
    """The query could not be answered (empty, not embeddable, bad parameters)."""


def space_client(space: SpaceRef, **options: Any) -> EmbeddingsClient:
    """An embeddings client for the space's model, asking for its dimensions when they are
    not the model's native ones (exactly as the pipeline embedded its chunks)."""
    settings = service_settings()
    native = MODEL_DIMENSIONS.get(space.model)
    return EmbeddingsClient(
        settings.embedder_base_url,
        api_key_value(settings.embedder_api_key_env, settings.embedder_base_url),
        space.model,
        space.dims if native != space.dims else None,
        **options,
    )


async def embed_texts(texts: list[str], space: SpaceRef) -> list[Sequence[float]]:
    """Texts embedded with the space's model and dimensions (for a backfill)."""
    async with space_client(space) as client:
        batch = await client.embed(texts)
    missing = [i for i, v in enumerate(batch.vectors) if v is None]
    if missing:
        raise QueryError(f"{len(missing)} chunks could not be embedded: {batch.errors[missing[0]]}")
    return [v for v in batch.vectors if v is not None]


def configured_space() -> SpaceRef:
    """The space the pipeline writes now (DOCPIPE_EMBEDDING_MODEL / _DIMENSIONS)."""
    from docpipe_dagster.config import settings

    current = settings()
    dims = current.vector_dims
    if dims is None:
        raise QueryError(f"set DOCPIPE_EMBEDDING_DIMENSIONS for model {current.embedding_model!r}")
    return SpaceRef(current.embedding_model, dims)


def sync_configured_space(url: str, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Backfill the configured space for every completed document it lacks, then activate
    it if it covers them all (what `docpipe ingest --wait` and `docpipe spaces backfill` do)."""
    import asyncio

    from docpipe_dagster.config import settings
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.queries import Store, VectorSpace
    from docpipe_dagster.store.spaces import activate_if_complete, backfill, coverage

    target = configured_space()
    vector_type = settings().vector_type.lower() or None
    with Store.open(url, max_size=1) as store:
        store.ensure_vector_space(VectorSpace(target.model, target.dims, vector_type))
    with connect(url, autocommit=True) as conn:
        cov = coverage(conn, target.model, target.dims)
        written = {"documents": 0, "chunks": 0}
        if cov is not None and not cov.complete:
            echo(f"backfilling {target.model}:{target.dims}: {cov.missing} documents")
            written = asyncio.run(
                backfill(conn, target, lambda texts: embed_texts(list(texts), target))
            )
        active = activate_if_complete(conn, target.model, target.dims)
        if active and not (cov and cov.is_active):
            echo(f"vector space {target.model}:{target.dims} is now active")
    return {**written, "active": active}


async def embed_query(text: str, space: SpaceRef) -> Sequence[float]:
    """The query embedded exactly as the space's chunks were (same model and dimensions)."""
    async with space_client(space, max_attempts=3) as client:
        batch = await client.embed([text])
    vector = batch.vectors[0]
    if vector is None:
        raise QueryError(f"the query could not be embedded: {batch.errors[0]}")
    return vector


def resolve_space(conn: psycopg.Connection, model: str | None, dims: int | None) -> SpaceRef | None:
    """The named space (explicitly asked: it may be incomplete), else the active one."""
    if model is None:
        return search_space(conn)
    row = conn.execute(
        "SELECT embedding_model, dims, vector_type, is_active FROM upload_pipeline.vector_spaces"
        " WHERE embedding_model = %s AND (%s::int IS NULL OR dims = %s)"
        " ORDER BY is_active DESC, created_at LIMIT 1",
        (model, dims, dims),
    ).fetchone()
    if row is None:
        raise QueryError(f"no vector space {model}:{dims or '*'} (see `docpipe spaces`)")
    return SpaceRef(row[0], int(row[1]), row[2], bool(row[3]))


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
        explicit = space if space_model is not None else None
        results = search(
            conn,
            query,
            vector,
            k=k,
            mode=mode,
            filters=filters,
            ef_search=ef_search,
            space=explicit or space,
        )
    return {
        "query": query,
        "mode": mode,
        "model": space.model if space else None,
        "dimensions": space.dims if space else None,
        "results": [r.as_dict() for r in results],
    }
