"""Search through the one SQL function `upload_pipeline.search` (sql/0005_hybrid_search.sql).

The CLI and the HTTP API both come here, so they answer identically. Every result carries
its provenance: storage key, document version (job id + content hash), heading path,
character offsets, and a page range when the schema has page columns for chunks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from pgvector import Vector
from psycopg import sql
from psycopg.rows import dict_row

from docpipe_dagster.store.schema import VectorSpace

S = "upload_pipeline"
MODES = ("hybrid", "vector", "text")
# Names a parser-pages migration may give a chunk's page range (first, last page).
PAGE_COLUMNS = (("page_start", "page_end"), ("page_from", "page_to"), ("first_page", "last_page"))


class SearchError(ValueError):
    """A search request the database refused (bad mode, k, dimensions, unknown space)."""


@dataclass(frozen=True)
class SearchFilters:
    key_prefix: str | None = None
    media_types: Sequence[str] | None = None
    document_ids: Sequence[uuid.UUID] | None = None
    ingested_after: datetime | None = None
    ingested_before: datetime | None = None


@dataclass
class SearchResult:
    rank: int
    score: float
    storage_key: str
    chunk_index: int
    text: str
    heading_path: list[str]
    document_id: str
    chunk_id: str
    # provenance
    job_id: str
    content_sha256: str
    media_type: str | None
    char_start: int | None
    char_end: int | None
    page_start: int | None
    page_end: int | None
    committed_at: str
    embedding_model: str
    dims: int
    # why it ranked here
    vector_rank: int | None
    vector_distance: float | None
    text_rank: int | None
    text_score: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data


def search_space(conn: psycopg.Connection) -> VectorSpace | None:
    """The space a search reads by default: the active one (else the oldest with vectors)."""
    row = conn.execute(
        f"SELECT embedding_model, dims, vector_type, is_active FROM {S}.search_space()"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return VectorSpace(row[0], int(row[1]), row[2], bool(row[3]))


def search_language(conn: psycopg.Connection) -> str:
    return str(conn.execute(f"SELECT language::text FROM {S}.search_settings").fetchone()[0])


def set_search_language(conn: psycopg.Connection, language: str) -> str:
    """Make `language` the full-text configuration ('simple' if Postgres has no such one);
    returns the one in effect. Rebuilds the tsvector column and its index only on a change."""
    if search_language(conn) == (language or "").strip().lower():
        return language.strip().lower()
    with conn.transaction():
        row = conn.execute(f"SELECT {S}.set_search_language(%s)", (language,)).fetchone()
    return str(row[0])


def _page_columns(conn: psycopg.Connection) -> tuple[str, str] | None:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped",
        (f"{S}.document_chunks",),
    ).fetchall()
    names = {r[0] for r in rows}
    return next((pair for pair in PAGE_COLUMNS if set(pair) <= names), None)


def search(
    conn: psycopg.Connection,
    query: str,
    query_vector: Sequence[float] | Vector | None,
    *,
    k: int = 10,
    mode: str = "hybrid",
    filters: SearchFilters | None = None,
    ef_search: int | None = None,
    space: VectorSpace | None = None,
    candidates: int | None = None,
) -> list[SearchResult]:
    """Top-k results of `upload_pipeline.search`; raises SearchError for a bad request."""
    f = filters or SearchFilters()
    vec = None
    if query_vector is not None:
        vec = query_vector if isinstance(query_vector, Vector) else Vector(list(query_vector))
    params = {
        "q": query,
        "v": vec,
        "k": k,
        "mode": mode,
        "prefix": f.key_prefix or None,
        "media": list(f.media_types) if f.media_types else None,
        "docs": [uuid.UUID(str(d)) for d in f.document_ids] if f.document_ids else None,
        "after": f.ingested_after,
        "before": f.ingested_before,
        "ef": ef_search,
        "model": space.model if space else None,
        "dims": space.dims if space else None,
        "cand": candidates,
    }
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT * FROM {S}.search(%(q)s, %(v)s::vector, %(k)s, %(mode)s,
                        key_prefix => %(prefix)s, media_types => %(media)s::text[],
                        document_ids => %(docs)s::uuid[], ingested_after => %(after)s,
                        ingested_before => %(before)s, ef_search => %(ef)s,
                        space_model => %(model)s, space_dims => %(dims)s,
                        candidates => %(cand)s)""",
                params,
            )
            rows = cur.fetchall()
    except psycopg.errors.InvalidParameterValue as exc:
        if not conn.autocommit:
            conn.rollback()
        raise SearchError(exc.diag.message_primary or str(exc)) from exc
    pages = _pages(conn, [r["chunk_id"] for r in rows])
    return [
        SearchResult(
            rank=r["rank"],
            score=float(r["score"]),
            storage_key=r["storage_key"],
            chunk_index=r["chunk_index"],
            text=r["content"],
            heading_path=list(r["heading_path"]),
            document_id=str(r["document_id"]),
            chunk_id=str(r["chunk_id"]),
            job_id=str(r["job_id"]),
            content_sha256=r["content_sha256"],
            media_type=r["media_type"],
            char_start=r["char_start"],
            char_end=r["char_end"],
            page_start=pages.get(r["chunk_id"], (None, None))[0],
            page_end=pages.get(r["chunk_id"], (None, None))[1],
            committed_at=r["committed_at"].isoformat(),
            embedding_model=r["embedding_model"],
            dims=r["dims"],
            vector_rank=r["vector_rank"],
            vector_distance=r["vector_distance"],
            text_rank=r["text_rank"],
            text_score=r["text_score"],
        )
        for r in rows
    ]


def _pages(conn: psycopg.Connection, chunk_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple]:
    # Pages do not depend on the space: any row of the chunk carries them.
    """Page ranges, when a migration gave chunks page columns (the parser knows pages)."""
    if not chunk_ids:
        return {}
    cols = _page_columns(conn)
    if cols is None:
        return {}
    query = sql.SQL("SELECT chunk_id, {}, {} FROM {}.document_chunks WHERE chunk_id = ANY(%s)")
    rows = conn.execute(
        query.format(sql.Identifier(cols[0]), sql.Identifier(cols[1]), sql.Identifier(S)),
        (chunk_ids,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}
