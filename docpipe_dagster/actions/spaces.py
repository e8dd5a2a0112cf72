"""Vector spaces: the one `MODEL[:DIMS]` parser, the configured space, its backfill and
activation (for `docpipe spaces backfill`, `ingest --wait` and the vector-space sensor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from docpipe_dagster.actions import QueryError
from docpipe_dagster.store.schema import VectorSpace


def parse_space(space: str | None) -> tuple[str | None, int | None]:
    """`MODEL[:DIMS]` -> (model, dims); (None, None) for no space.

    A suffix of digits after the last colon is the dimensions; anything else is part of
    the model's name (`nomic-embed-text:latest` is a model)."""
    if not space:
        return None, None
    model, sep, dims = space.rpartition(":")
    if not (sep and dims.isdigit()):
        return space, None
    if not model:
        raise QueryError(f"a space is MODEL[:DIMS], got {space!r}")
    return model, int(dims)


def space_client(space: VectorSpace, **options: Any):
    """An embeddings client for the space's model, asking for its dimensions when they are
    not the model's native ones (exactly as the pipeline embedded its chunks)."""
    from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS, EmbeddingsClient
    from docpipe_dagster.config import api_key_value, service_settings

    settings = service_settings()
    native = MODEL_DIMENSIONS.get(space.model)
    return EmbeddingsClient(
        settings.embedder_base_url,
        api_key_value(settings.embedder_api_key_env, settings.embedder_base_url),
        space.model,
        space.dims if native != space.dims else None,
        **options,
    )


async def embed_texts(texts: list[str], space: VectorSpace) -> list[Sequence[float]]:
    """Texts embedded with the space's model and dimensions (for a backfill)."""
    async with space_client(space) as client:
        batch = await client.embed(texts)
    missing = [i for i, v in enumerate(batch.vectors) if v is None]
    if missing:
        raise QueryError(f"{len(missing)} chunks could not be embedded: {batch.errors[missing[0]]}")
    return [v for v in batch.vectors if v is not None]


def configured_space() -> VectorSpace:
    """The space the pipeline writes now (DOCPIPE_EMBEDDING_MODEL / _DIMENSIONS / _VECTOR_TYPE)."""
    from docpipe_dagster.config import settings

    current = settings()
    dims = current.vector_dims
    if dims is None:
        raise QueryError(f"set DOCPIPE_EMBEDDING_DIMENSIONS for model {current.embedding_model!r}")
    return VectorSpace(current.embedding_model, dims, current.vector_type.lower() or None)


def sync_configured_space(url: str, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Backfill the configured space for every completed document it lacks, then activate
    it if it covers them all (what `docpipe ingest --wait`, `docpipe spaces backfill` and
    the vector_space_backfill job do). Returns {"documents", "chunks", "active"}."""
    import asyncio

    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.queries import Store
    from docpipe_dagster.store.spaces import activate_if_complete, backfill, coverage

    target = configured_space()
    with Store.open(url, max_size=1) as store:
        store.ensure_vector_space(target)
    with connect(url, autocommit=True) as conn:
        cov = coverage(conn, target.model, target.dims)
        written = {"documents": 0, "chunks": 0}
        if cov is not None and not cov.complete:
            echo(f"backfilling {target.name}: {cov.missing} documents")
            written = asyncio.run(
                backfill(conn, target, lambda texts: embed_texts(list(texts), target))
            )
        active = activate_if_complete(conn, target.model, target.dims)
        if active and not (cov and cov.is_active):
            echo(f"vector space {target.name} is now active")
    return {**written, "active": active}


@dataclass(frozen=True)
class SpaceCheck:
    """What the configured space needs: a backfill run (`run_key`, one per coverage state,
    so a run still going is not asked for again) or nothing (`reason`)."""

    run_key: str | None
    reason: str = ""


def check_configured_space(url: str) -> SpaceCheck:
    """Whether the configured space lacks completed documents; a complete one is activated."""
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.spaces import activate_if_complete, any_completed, coverage

    target = configured_space()
    with connect(url, autocommit=True) as conn:
        cov = coverage(conn, target.model, target.dims)
        if cov is None:
            # the space is registered by its first commit or by the backfill run
            if any_completed(conn):
                return SpaceCheck(f"{target.name}:new")
            return SpaceCheck(None, "no completed documents yet")
        if cov.complete:
            if not cov.is_active and activate_if_complete(conn, target.model, target.dims):
                return SpaceCheck(None, f"{target.name} activated")
            return SpaceCheck(None, f"{target.name} covers every completed document")
    return SpaceCheck(f"{target.name}:{cov.documents}/{cov.completed}")
