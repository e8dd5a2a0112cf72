"""The direct baseline: a plain asyncio script, no Dagster, no job state, no caches.

It reads the files from the storage folder, parses them with the LlamaParse mock (upload,
poll, JSON result), chunks them with the same chunker and settings, embeds the chunks with
the OpenAI mock (requests of up to 2,048 inputs and ~300k tokens, base64), and COPYs the
rows into one Postgres table in one transaction; then, when asked, builds the HNSW index.
Concurrency is the same as docpipe's defaults: 8 parses and 4 embedding requests at a time.
Everything is streamed: parsed documents are chunked and queued for embedding at once, and
vectors are written to the open COPY as they arrive.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pgvector import HalfVector, Vector
from pgvector.psycopg import register_vector_async
from psycopg import sql

from docpipe_dagster.clients.parsing import local_extensions
from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.core.extract import extract

SCHEMA = "bench_baseline"
MAX_INPUTS = 2048
MAX_TOKENS = 300_000
PAGE_SEPARATOR = "\n---\n"
MEDIA = {".md": "text/markdown", ".txt": "text/plain", ".html": "text/html"}


def _tokens(text: str) -> int:
    return math.ceil(len(text.encode()) / 3)


def index_sql(dims: int, vector_type: str, name: str = "chunks_hnsw") -> sql.Composable:
    ops = "vector_cosine_ops" if vector_type == "vector" else "halfvec_cosine_ops"
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.chunks USING hnsw (embedding {})").format(
        sql.Identifier(name), sql.Identifier(SCHEMA), sql.SQL(ops)
    )


async def prepare(url: str, dims: int, vector_type: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.chunks (chunk_id uuid PRIMARY KEY, storage_key text"
                " NOT NULL, chunk_index int NOT NULL, content text NOT NULL, embedding {}({}) NOT NULL)"
            ).format(sql.Identifier(SCHEMA), sql.SQL(vector_type), sql.Literal(dims))
        )


async def run_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["storage_dir"])
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if spec.get("only_prefix"):
        files = [p for p in files if p.relative_to(root).as_posix().startswith(spec["only_prefix"])]
    dims = int(spec["dims"])
    vector_type = spec.get("vector_type", "vector")
    wrap = Vector if vector_type == "vector" else HalfVector
    chunking = ChunkingConfig(
        max_chars=spec.get("chunk_max_chars", 1200),
        overlap_chars=spec.get("chunk_overlap_chars", 150),
    )
    payload_extra = {"dimensions": dims} if spec.get("send_dimensions") else {}
    await prepare(spec["database_url"], dims, vector_type)

    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {spec['api_key']}"}
    parser = httpx.AsyncClient(
        base_url=spec["parser_url"],
        headers=headers,
        timeout=60,
        limits=httpx.Limits(max_connections=16),
    )
    embedder = httpx.AsyncClient(
        base_url=spec["embedder_url"],
        headers=headers,
        timeout=60,
        limits=httpx.Limits(max_connections=8),
    )
    parse_sem = asyncio.Semaphore(spec.get("parse_concurrency", 8))
    embed_sem = asyncio.Semaphore(spec.get("embed_concurrency", 4))
    poll_s = spec.get("poll_seconds", 0.25)
    chunk_q: asyncio.Queue = asyncio.Queue()
    row_q: asyncio.Queue = asyncio.Queue(maxsize=64)
    counts = {
        "documents": 0,
        "failed": 0,
        "chunks": 0,
        "vectors": 0,
        "requests": 0,
        "local_parses": 0,
    }
    local = local_extensions(spec.get("parse_locally"))
    configuration = json.dumps({"tier": "cost_effective", "version": "latest"})

    async def parse_remote(path: Path, data: bytes) -> str | None:
        """LlamaParse v2: upload, poll, the markdown pages in order (None: the job failed)."""
        mime = MEDIA.get(path.suffix, "application/pdf")
        r = await parser.post(
            "/api/v2/parse/upload",
            files={"file": (path.name, data, mime)},
            data={"configuration": configuration},
        )
        r.raise_for_status()
        job = r.json()["id"]
        while True:
            status = (await parser.get(f"/api/v2/parse/{job}")).json()["job"]["status"]
            if status == "COMPLETED":
                break
            if status in ("FAILED", "CANCELLED"):
                return None
            await asyncio.sleep(poll_s)
        result = (await parser.get(f"/api/v2/parse/{job}", params={"expand": "markdown"})).json()
        pages = sorted(result["markdown"]["pages"], key=lambda p: p["page_number"])
        return PAGE_SEPARATOR.join(str(p.get("markdown") or "") for p in pages)

    async def parse(path: Path) -> None:
        key = path.relative_to(root).as_posix()
        async with parse_sem:
            data = await asyncio.to_thread(path.read_bytes)
            if path.suffix.lower() in local:  # what docpipe parses in-process, so does this
                pages = await asyncio.to_thread(extract, path.name, data)
                counts["local_parses"] += 1
                markdown = PAGE_SEPARATOR.join(p.md for p in pages)
            else:
                markdown = await parse_remote(path, data)
                if markdown is None:
                    counts["failed"] += 1
                    return
        chunks = split_into_chunks(markdown, chunking)
        counts["documents"] += 1
        for c in chunks:
            await chunk_q.put((key, c.index, c.text))

    async def embed_request(items: list[tuple[str, int, str]]) -> None:
        async with embed_sem:
            r = await embedder.post(
                "/embeddings",
                json={
                    "input": [t for _, _, t in items],
                    "model": spec["model"],
                    "encoding_format": "base64",
                    **payload_extra,
                },
            )
            counts["requests"] += 1
            r.raise_for_status()
            data = sorted(r.json()["data"], key=lambda d: d["index"])
        rows = []
        for (key, index, text), d in zip(items, data, strict=True):
            vec = array("f")
            vec.frombytes(base64.b64decode(d["embedding"]))
            rows.append(
                (
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{key}#{index}"),
                    key,
                    index,
                    text,
                    wrap(vec.tolist()),
                )
            )
        await row_q.put(rows)

    async def batcher() -> None:
        """Groups queued chunks into requests: full ones at once, the rest at the end."""
        pending: list[tuple[str, int, str]] = []
        tokens = 0
        tasks = []
        while True:
            item = await chunk_q.get()
            if item is None:
                break
            t = _tokens(item[2])
            if pending and (len(pending) >= MAX_INPUTS or tokens + t > MAX_TOKENS):
                tasks.append(asyncio.create_task(embed_request(pending)))
                pending, tokens = [], 0
            pending.append(item)
            tokens += t
        if pending:
            tasks.append(asyncio.create_task(embed_request(pending)))
        await asyncio.gather(*tasks)
        await row_q.put(None)

    async def writer() -> None:
        async with await psycopg.AsyncConnection.connect(spec["database_url"]) as conn:
            await register_vector_async(conn)
            async with (
                conn.cursor() as cur,
                cur.copy(
                    sql.SQL(
                        "COPY {}.chunks (chunk_id, storage_key, chunk_index, content, embedding)"
                        " FROM STDIN WITH (FORMAT BINARY)"
                    ).format(sql.Identifier(SCHEMA))
                ) as copy,
            ):
                copy.set_types(["uuid", "text", "int4", "text", vector_type])
                while (rows := await row_q.get()) is not None:
                    for row in rows:
                        await copy.write_row(row)
                    counts["chunks"] += len(rows)
                    counts["vectors"] += len(rows)
            await conn.commit()

    writer_task = asyncio.create_task(writer())
    batcher_task = asyncio.create_task(batcher())
    await asyncio.gather(*(parse(p) for p in files))
    await chunk_q.put(None)
    await batcher_task
    await writer_task
    await parser.aclose()
    await embedder.aclose()
    load_seconds = time.perf_counter() - started

    index_seconds = 0.0
    if spec.get("index") == "build":
        t = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(
            spec["database_url"], autocommit=True
        ) as conn:
            await conn.execute(
                sql.SQL("SET maintenance_work_mem = {}").format(
                    sql.Literal(spec["maintenance_work_mem"])
                )
            )
            await conn.execute(
                sql.SQL("SET max_parallel_maintenance_workers = {}").format(
                    sql.Literal(int(spec["parallel_workers"]))
                )
            )
            await conn.execute(index_sql(dims, vector_type))
        index_seconds = time.perf_counter() - t
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": load_seconds,
        "index_seconds": index_seconds,
        "documents": counts["documents"],
        "failed": counts["failed"],
        "local_parses": counts["local_parses"],
        "chunks": counts["chunks"],
        "vectors": counts["vectors"],
        "embedding_requests": counts["requests"],
    }


async def build_index(url: str, dims: int, vector_type: str, mwm: str, workers: int) -> None:
    """An HNSW index on the baseline table (used to prepare the trickle scenario)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(mwm)))
        await conn.execute(
            sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers))
        )
        await conn.execute(index_sql(dims, vector_type))
