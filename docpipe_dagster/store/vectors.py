"""The vector index lifecycle: spaces, their partial HNSW indexes, bulk loads, search."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import (
    IN_FLIGHT_STATES,
    S,
    VectorSpace,
)
from docpipe_dagster.store.spaces import SpaceCoverage, coverage


@dataclass(frozen=True)
class IndexBuild:
    """How an HNSW index is built in one pass (after a bulk load, or to repair a missing one).

    maintenance_work_mem is sized to what the graph needs (rows x vector size, plus
    overhead), between 64 MB and this cap: a parallel build reserves all of it as shared
    memory, so asking for 1 GB to index a few thousand rows would only waste RAM.
    """

    maintenance_work_mem_mb: int = 1024
    parallel_workers: int = 1

    def work_mem_mb(self, rows: int, dims: int, vector_type: str) -> int:
        per_row = (4 if vector_type == "vector" else 2) * dims + 1024  # vector + graph links
        need = math.ceil(rows * per_row * 1.3 / 2**20) + 16
        return max(64, min(self.maintenance_work_mem_mb, need))


@dataclass(frozen=True)
class BulkLoadPlan:
    """What a commit weighs to choose between inserting into the index and a bulk load."""

    index_state: str  # 'ready' | 'rebuilding' | 'off' | 'missing'
    existing_rows: int
    incoming_rows: int
    pending_rows: int


@dataclass(frozen=True)
class IndexBuilt:
    """What finish_bulk_load did: deferred (other batches in flight) or built (rows, time)."""

    deferred: bool = False
    rows: int = 0
    seconds: float = 0.0
    maintenance_work_mem_mb: int | None = None
    parallel_workers: int | None = None


class VectorIndexStore(StoreBase):
    # --- vector spaces: the HNSW index and bulk loads -------------------------------
    #
    # Inserting rows one by one into an HNSW graph costs several times more than building
    # the graph once after loading (docs/ARCHITECTURE.md, the HNSW index). A commit that brings many rows
    # compared with what a space's index holds drops the index (index_state 'rebuilding'),
    # commits without it, and the last batch in flight builds it again in one pass. Search
    # stays correct meanwhile: without the index it scans exactly, which is slower.

    @staticmethod
    def _space_row(
        conn: psycopg.Connection, space: VectorSpace, *, lock: bool = False
    ) -> tuple[str, str, str] | None:
        """(index_name, vector_type, index_state) of a registered space."""
        return conn.execute(
            f"SELECT index_name, vector_type, index_state FROM {S}.vector_spaces"
            " WHERE embedding_model = %s AND dims = %s" + (" FOR UPDATE" if lock else ""),
            (space.model, space.dims),
        ).fetchone()

    @staticmethod
    def _lock_index(conn: psycopg.Connection, index_name: str) -> None:
        """Serialize index changes of one space across processes (until the transaction ends)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"docpipe:index:{index_name}",))

    @staticmethod
    def _index_exists(conn: psycopg.Connection, index_name: str) -> bool:
        return conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
            (S, index_name),
        ).fetchone()[0]

    def _space_rows(self, conn: psycopg.Connection, space: VectorSpace) -> int:
        return conn.execute(
            f"SELECT count(*) FROM {S}.document_chunks WHERE embedding_model = %s AND dims = %s",
            (space.model, space.dims),
        ).fetchone()[0]

    def _indexed_rows(
        self, conn: psycopg.Connection, space: VectorSpace, index_name: str | None
    ) -> int:
        """Rows in the space, for choosing a bulk load: the index's own count when it is
        large (pg_class.reltuples, set by CREATE INDEX and refreshed by (auto)vacuum; it may
        lag recent inserts by autovacuum's insert threshold), so that a small commit into a
        big space does not scan the whole table; an exact count otherwise."""
        if index_name:
            row = conn.execute(
                "SELECT reltuples FROM pg_class"
                " WHERE oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (S, index_name),
            ).fetchone()
            if row and row[0] >= 50_000:
                return int(row[0])
        return self._space_rows(conn, space)

    def _create_index(
        self,
        conn: psycopg.Connection,
        space: VectorSpace,
        index_name: str,
        vector_type: str,
        build: IndexBuild | None,
    ) -> dict[str, Any]:
        """CREATE INDEX (in the caller's transaction) with memory sized to the rows."""
        rows = self._space_rows(conn, space)
        info: dict[str, Any] = {"rows": rows}
        if build is not None:
            mem = build.work_mem_mb(rows, space.dims, vector_type)
            conn.execute(
                sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{mem}MB"))
            )
            conn.execute(
                sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(
                    sql.Literal(max(0, build.parallel_workers))
                )
            )
            if build.parallel_workers > 0:
                # The vectors live in TOAST, so the heap the planner sizes workers by is
                # small: without this a build of tens of thousands of rows gets no worker.
                conn.execute("SET LOCAL min_parallel_table_scan_size = 0")
            info.update(maintenance_work_mem_mb=mem, parallel_workers=build.parallel_workers)
        ops = "vector_cosine_ops" if vector_type == "vector" else "halfvec_cosine_ops"
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {}.document_chunks USING hnsw ((embedding::{}({})) {})"
                " WHERE embedding_model = {} AND dims = {}"
            ).format(
                sql.Identifier(index_name),
                sql.Identifier(S),
                sql.SQL(vector_type),
                sql.Literal(space.dims),
                sql.SQL(ops),
                sql.Literal(space.model),
                sql.Literal(space.dims),
            )
        )
        info["seconds"] = round(time.perf_counter() - started, 3)
        return info

    def space_coverage(self, model: str, dims: int) -> SpaceCoverage | None:
        """How far the (model, dims) space covers the completed documents (None: no such
        space)."""
        with self.pool.connection() as conn:
            return coverage(conn, model, dims)

    def ensure_vector_space(self, space: VectorSpace, build: IndexBuild | None = None) -> None:
        """Register a (model, dims) space and create its partial HNSW index on first use;
        rebuild an index that should exist but does not (dropped for a bulk load by a run
        that crashed, or by hand), or whose type (vector/halfvec) the configuration changed.
        A space in the middle of a bulk load ('rebuilding') is left to finish_bulk_load."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            if row is not None:
                name, vector_type, state = row
                if state in ("off", "rebuilding"):
                    return
                if vector_type == space.vector_type and self._index_exists(conn, name):
                    return
        with self.transaction() as conn:
            self._lock_index(conn, row[0] if row else space.index_name)
            row = self._space_row(conn, space, lock=True)
            if row is None:
                self._create_index(conn, space, space.index_name, space.vector_type, build)
                conn.execute(
                    f"""INSERT INTO {S}.vector_spaces (embedding_model, dims, vector_type,
                        index_name, index_built_at) VALUES (%s, %s, %s, %s, now())
                        ON CONFLICT DO NOTHING""",
                    (space.model, space.dims, space.vector_type, space.index_name),
                )
                return
            name, vector_type, state = row
            if state != "ready":
                return
            if vector_type != space.vector_type:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(S, name)))
            elif self._index_exists(conn, name):
                return
            self._create_index(conn, space, name, space.vector_type, build)
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET vector_type = %s, index_built_at = now()
                    WHERE embedding_model = %s AND dims = %s""",
                (space.vector_type, space.model, space.dims),
            )

    def bulk_load_plan(
        self,
        space: VectorSpace,
        job_ids: Sequence[uuid.UUID],
        batch_key: str | None,
        in_flight_within: timedelta,
    ) -> BulkLoadPlan:
        """What a commit weighs to choose between inserting into the index and a bulk load:
        the space's index state and rows, the rows these jobs bring, and an estimate of the
        rows other batches in flight will bring (their chunk counts, else ~1 per 1.5 kB)."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            existing = self._indexed_rows(conn, space, row[0] if row else None)
            incoming, pending = conn.execute(
                f"""SELECT
                      coalesce(sum(chunk_count) FILTER (WHERE job_id = ANY(%s)), 0),
                      coalesce(sum(coalesce(chunk_count, ceil(size_bytes / 1500.0)::int))
                          FILTER (WHERE NOT job_id = ANY(%s) AND state = ANY(%s)
                                  AND batch_key IS DISTINCT FROM %s
                                  AND updated_at > now() - %s), 0)
                    FROM {S}.upload_jobs
                    WHERE job_id = ANY(%s) OR (state = ANY(%s) AND updated_at > now() - %s)""",
                (
                    list(job_ids),
                    list(job_ids),
                    list(IN_FLIGHT_STATES),
                    batch_key,
                    in_flight_within,
                    list(job_ids),
                    list(IN_FLIGHT_STATES),
                    in_flight_within,
                ),
            ).fetchone()
        return BulkLoadPlan(
            index_state=row[2] if row else "missing",
            existing_rows=int(existing),
            incoming_rows=int(incoming),
            pending_rows=int(pending),
        )

    def begin_bulk_load(self, space: VectorSpace) -> bool:
        """Drop the space's HNSW index for a bulk load (index_state 'rebuilding'); False if
        the space is not 'ready' (already loading in bulk, or indexed 'off')."""
        with self.transaction() as conn:
            row = self._space_row(conn, space)
            if row is None or row[2] != "ready":
                return False
            self._lock_index(conn, row[0])
            row = self._space_row(conn, space, lock=True)
            if row is None or row[2] != "ready":
                return False
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(S, row[0])))
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET index_state = 'rebuilding'
                    WHERE embedding_model = %s AND dims = %s""",
                (space.model, space.dims),
            )
        return True

    def finish_bulk_load(
        self, space: VectorSpace, build: IndexBuild | None, in_flight_within: timedelta
    ) -> IndexBuilt | None:
        """Build the index of a space left 'rebuilding' once no job is in flight any more
        (in-flight jobs not updated within `in_flight_within` are taken as dead and do not
        hold the index back). None when the space needs nothing; deferred while other
        batches still run; otherwise what the build took."""
        with self.pool.connection() as conn:
            row = self._space_row(conn, space)
            if row is None or row[2] != "rebuilding":
                return None
            busy = conn.execute(
                f"""SELECT EXISTS (SELECT 1 FROM {S}.upload_jobs WHERE state = ANY(%s)
                    AND updated_at > now() - %s)""",
                (list(IN_FLIGHT_STATES), in_flight_within),
            ).fetchone()[0]
            if busy:
                return IndexBuilt(deferred=True)
        with self.transaction() as conn:
            self._lock_index(conn, row[0])
            row = self._space_row(conn, space, lock=True)
            if row is None or row[2] != "rebuilding":
                return None
            info = self._create_index(conn, space, row[0], space.vector_type, build)
            conn.execute(
                f"""UPDATE {S}.vector_spaces SET index_state = 'ready', vector_type = %s,
                    index_built_at = now() WHERE embedding_model = %s AND dims = %s""",
                (space.vector_type, space.model, space.dims),
            )
        return IndexBuilt(**info)
