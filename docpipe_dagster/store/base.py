"""The pool, transactions and the audit trail every store module builds on."""

from __future__ import annotations

import json
import struct
import sys
import uuid
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from pgvector import Vector
from psycopg_pool import ConnectionPool

from docpipe_dagster.store.pool import open_pool
from docpipe_dagster.store.schema import S

_StoreT = TypeVar("_StoreT", bound="StoreBase")


def _as_vector(values: Sequence[float] | Vector) -> Vector:
    if isinstance(values, Vector):
        return values
    if isinstance(values, array) and values.typecode == "f":
        # The embeddings client's float32 arrays: as bytes, without a Python float each.
        big_endian = array("f", values)
        if sys.byteorder == "little":
            big_endian.byteswap()
        return Vector.from_binary(struct.pack(">HH", len(values), 0) + big_endian.tobytes())
    return Vector(values if isinstance(values, list) else list(values))


class StoreBase:
    """A psycopg connection pool; no caller outside store/ touches it."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    @classmethod
    def open(cls: type[_StoreT], url: str, *, max_size: int = 8) -> _StoreT:
        return cls(open_pool(url, max_size=max_size))

    def close(self) -> None:
        self.pool.close()

    def __enter__(self: _StoreT) -> _StoreT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self, timeout: float = 5.0) -> None:
        """One round trip to the database; raises when it does not answer within `timeout`."""
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection.

        durable=False skips waiting for the WAL flush at commit (synchronous_commit off for
        this transaction: ~0.3 ms instead of ~3 ms here). It is used for staging writes only
        (parse cache, buffers, intermediate states and their events): a crash of the
        database may then lose the last fraction of a second of them, atomically and in
        order, which only means redoing idempotent work. What users are told is final (a
        commit to search, a failure, a deletion) stays durable.
        """
        with self.pool.connection() as conn, conn.transaction():
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            yield conn

    # --- events ---------------------------------------------------------------------

    @staticmethod
    def _event(
        conn: psycopg.Connection,
        job_id: uuid.UUID,
        stage: str,
        event_type: str,
        payload: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            f"INSERT INTO {S}.events (job_id, stage, event_type, payload) VALUES (%s, %s, %s, %s)",
            (job_id, stage, event_type, json.dumps(payload or {}, default=str)),
        )

    @staticmethod
    def _events(
        conn: psycopg.Connection,
        events: Sequence[tuple[uuid.UUID, str, str, dict[str, Any] | None]],
    ) -> None:
        """Several events in one statement, inserted (and numbered) in the order given."""
        if not events:
            return
        conn.execute(
            f"""INSERT INTO {S}.events (job_id, stage, event_type, payload)
                SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::jsonb[])""",
            (
                [e[0] for e in events],
                [e[1] for e in events],
                [e[2] for e in events],
                [json.dumps(e[3] or {}, default=str) for e in events],
            ),
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for read-only checks (the invariant checker takes one)."""
        with self.pool.connection() as conn:
            yield conn
