"""pgvector's write limits on this machine, at the benchmark's dimension, with its vectors.

For each variant (vector at D dims, halfvec at D dims, vector at a reduced dimension that the
embeddings `dimensions` parameter would give), on a fresh table:

1. COPY the load set into the table with no index                -> copy_rows_per_s
2. CREATE INDEX ... USING hnsw after the load                     -> build_rows_per_s
   (maintenance_work_mem and max_parallel_maintenance_workers as configured);
   load + build together                                          -> load_build_rows_per_s
3. insert held-out rows into the indexed table, one client,
   small transactions (a document's worth at a time)            -> insert_rows_per_s
   and the same with two concurrent clients                       -> insert_rows_per_s_2_clients
4. with the chunk texts: the load set again, into a table that also keeps what hybrid search
   needs (the text, its generated tsvector in the configured language, the GIN index), then
   the HNSW build                                                 -> load_build_fulltext_rows_per_s
   (what the commit stage writes besides the vectors, so the limit for that part too)

The vectors are the mock embedder's own (hashed bag-of-words of the corpus's chunks), so the
index sees the same data as the pipeline does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from pgvector import HalfVector, Vector
from pgvector.psycopg import register_vector
from psycopg import sql

PROBE_SCHEMA = "bench_probe"


def _wrap(vector_type: str, values: Sequence[float]) -> Vector | HalfVector:
    return Vector(list(values)) if vector_type == "vector" else HalfVector(list(values))


def _connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url)
    register_vector(conn)
    conn.commit()
    return conn


def _copy(
    conn: psycopg.Connection,
    table: sql.Composable,
    vector_type: str,
    rows,
    columns: tuple[tuple[str, str], ...] = (("id", "int4"),),
) -> None:
    """COPY rows of (`columns`..., embedding) in binary; `columns` are (name, type) pairs."""
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in (*columns, ("embedding", "")))
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(table, names)
        ) as copy,
    ):
        copy.set_types([kind for _, kind in columns] + [vector_type])
        for row in rows:
            copy.write_row(row)


def _build_hnsw(
    conn: psycopg.Connection,
    table: sql.Composable,
    ops: str,
    maintenance_work_mem: str,
    parallel_workers: int,
) -> float:
    """CREATE INDEX ... USING hnsw on the loaded table, as configured; its seconds."""
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem)))
    conn.execute(
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(parallel_workers))
    )
    # This table's heap is tiny (the vectors live in TOAST): without this the planner
    # would use no worker at all, unlike the pipeline's wider table.
    conn.execute("SET min_parallel_table_scan_size = 0")
    t = time.perf_counter()
    conn.execute(
        sql.SQL("CREATE INDEX ON {} USING hnsw (embedding {})").format(table, sql.SQL(ops))
    )
    conn.commit()
    seconds = time.perf_counter() - t
    conn.execute("RESET maintenance_work_mem")
    conn.execute("RESET min_parallel_table_scan_size")
    conn.execute("RESET max_parallel_maintenance_workers")
    conn.commit()
    return seconds


def probe_variant(
    url: str,
    vectors: Sequence[Sequence[float]],
    *,
    dims: int,
    vector_type: str,
    insert_rows: int,
    maintenance_work_mem: str,
    parallel_workers: int,
    group_rows: int = 13,
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure one (type, dims) variant; vectors[-2*insert_rows:] are held out for inserts.
    With `texts` (the text of each vector), also the load + build with full text (step 4)."""
    held = min(insert_rows, max(1, len(vectors) // 10))
    load = [(i, _wrap(vector_type, v)) for i, v in enumerate(vectors[: len(vectors) - 2 * held])]
    ins1 = [
        (100_000_000 + i, _wrap(vector_type, v)) for i, v in enumerate(vectors[-2 * held : -held])
    ]
    ins2 = [(200_000_000 + i, _wrap(vector_type, v)) for i, v in enumerate(vectors[-held:])]
    table = sql.Identifier(PROBE_SCHEMA, f"t_{vector_type}_{dims}")
    ops = "vector_cosine_ops" if vector_type == "vector" else "halfvec_cosine_ops"
    out: dict[str, Any] = {
        "vector_type": vector_type,
        "dims": dims,
        "load_rows": len(load),
        "insert_rows": held,
        "maintenance_work_mem": maintenance_work_mem,
        "parallel_workers": parallel_workers,
    }
    with _connect(url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PROBE_SCHEMA)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, embedding {}({}) NOT NULL)").format(
                table, sql.SQL(vector_type), sql.Literal(dims)
            )
        )
        conn.commit()

        t = time.perf_counter()
        _copy(conn, table, vector_type, load)
        conn.commit()
        copy_s = time.perf_counter() - t

        build_s = _build_hnsw(conn, table, ops, maintenance_work_mem, parallel_workers)

        # one client, a document's worth of rows per transaction
        t = time.perf_counter()
        for start in range(0, len(ins1), group_rows):
            _copy(conn, table, vector_type, ins1[start : start + group_rows])
            conn.commit()
        insert_s = time.perf_counter() - t

    # two clients at once, each with half of the second held-out set
    def insert_half(rows: list) -> None:
        with _connect(url) as c:
            for start in range(0, len(rows), group_rows):
                _copy(c, table, vector_type, rows[start : start + group_rows])
                c.commit()

    halves = [ins2[: len(ins2) // 2], ins2[len(ins2) // 2 :]]
    threads = [threading.Thread(target=insert_half, args=(h,)) for h in halves]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    insert2_s = time.perf_counter() - t

    with _connect(url) as conn:
        size = conn.execute(
            "SELECT pg_relation_size(indexrelid) FROM pg_index WHERE indrelid = %s::regclass"
            " AND indexrelid <> (SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass"
            " AND contype = 'p')",
            (table.as_string(conn), table.as_string(conn)),
        ).fetchone()
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        conn.commit()

    if texts is not None:
        out.update(
            _probe_fulltext(
                url, load, texts, dims, vector_type, ops, maintenance_work_mem, parallel_workers
            )
        )
    copy_s, build_s, insert_s, insert2_s = (
        round(max(x, 1e-6), 6) for x in (copy_s, build_s, insert_s, insert2_s)
    )
    out.update(
        copy_seconds=copy_s,
        build_seconds=build_s,
        insert_seconds=insert_s,
        insert_seconds_2_clients=insert2_s,
        copy_rows_per_s=round(len(load) / copy_s, 1),
        build_rows_per_s=round(len(load) / build_s, 1),
        load_build_rows_per_s=round(len(load) / (copy_s + build_s), 1),
        insert_rows_per_s=round(len(ins1) / insert_s, 1),
        insert_rows_per_s_2_clients=round(len(ins2) / insert2_s, 1),
        index_mb=round((size[0] if size else 0) / 2**20, 1),
    )
    return out


def _probe_fulltext(
    url: str,
    load: list[tuple[int, Vector | HalfVector]],
    texts: Sequence[str],
    dims: int,
    vector_type: str,
    ops: str,
    maintenance_work_mem: str,
    parallel_workers: int,
) -> dict[str, Any]:
    """Step 4: COPY the load set with its texts (no heading path) into a table with the
    schema's generated tsvector column (upload_pipeline.chunk_tsvector, the configured
    language) and its GIN index, then build the HNSW index: the least the commit stage's
    writes can cost."""
    table = sql.Identifier(PROBE_SCHEMA, f"t_{vector_type}_{dims}_fulltext")
    with _connect(url) as conn:
        row = conn.execute("SELECT language::text FROM upload_pipeline.search_settings").fetchone()
        language = row[0] if row else "simple"
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id int PRIMARY KEY, content text NOT NULL,"
                " embedding {}({}) NOT NULL, search_tsv tsvector GENERATED ALWAYS AS"
                " (upload_pipeline.chunk_tsvector({}::regconfig, NULL, content)) STORED)"
            ).format(table, sql.SQL(vector_type), sql.Literal(dims), sql.Literal(language))
        )
        conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (search_tsv)").format(table))
        conn.commit()
        t = time.perf_counter()
        rows = ((i, text, vector) for (i, vector), text in zip(load, texts, strict=False))
        _copy(conn, table, vector_type, rows, columns=(("id", "int4"), ("content", "text")))
        conn.commit()
        copy_s = time.perf_counter() - t
        build_s = _build_hnsw(conn, table, ops, maintenance_work_mem, parallel_workers)
        loaded = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        conn.commit()
    copy_s, build_s = (round(max(x, 1e-6), 6) for x in (copy_s, build_s))
    return {
        "fulltext_language": language,
        "fulltext_rows": loaded,
        "fulltext_copy_seconds": copy_s,
        "fulltext_build_seconds": build_s,
        "load_build_fulltext_rows_per_s": round(loaded / (copy_s + build_s), 1),
    }
