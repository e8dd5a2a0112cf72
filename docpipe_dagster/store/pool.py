"""Connection pooling with pgvector's types registered on every connection."""

from __future__ import annotations

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)
    # register_vector runs a query; leave the connection idle, not in a transaction.
    conn.commit()


def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, name: str = "docpipe"
) -> ConnectionPool:
    """An open pool; close it with `pool.close()` (or use it as a context manager)."""
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        configure=_configure,
        # Check a connection before lending it: after a database restart the pool would
        # otherwise hand out dead connections once each.
        check=ConnectionPool.check_connection,
        name=name,
        open=False,
        kwargs={"connect_timeout": 10},
    )
    pool.open(wait=True, timeout=30)
    return pool


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A single connection with pgvector registered (for CLI commands and tests)."""
    conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    register_vector(conn)
    if not autocommit:
        conn.commit()
    return conn
