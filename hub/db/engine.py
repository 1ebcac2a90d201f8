"""Async engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def json_loads(text: str | bytes) -> Any:
    """JSON columns' decoder on every engine: orjson, about six times faster than ``json.loads``
    on the small documents these columns hold (a list of 200 cases decodes 200 of them). What
    orjson refuses and ``json`` takes (NaN, integers beyond 64 bits, which ``json.dumps`` may
    have stored) goes to ``json.loads``, so anything stored still reads back."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Build the engine; on SQLite, WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE.

    SQLite allows one writer. A deferred transaction that reads and then writes can fail at
    once with SQLITE_BUSY when another connection committed in between (the busy handler is
    not consulted for that upgrade), so every transaction takes the write lock up front and
    waits for it instead.
    """
    if not is_sqlite(url):
        # At most 20 connections, as SQLAlchemy's default 10 + 10 overflow, but all of them kept:
        # an overflow connection is closed on its return, so 20 concurrent requests made the
        # pool open and close a connection (a TCP and TLS handshake, authentication) for most
        # of them.
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 0)
        engine = create_async_engine(url, json_deserializer=json_loads, **kwargs)
        # Not pool_pre_ping: asyncpg's dialect pings with BEGIN, ";" and ROLLBACK, three round
        # trips before every checkout's first statement. A connection the server closed (a
        # restart, pg_terminate_backend, an idle timeout) is seen by the event loop as soon as
        # it reads the socket's end, and refused here at no cost; one closed so recently that
        # the loop has not looked yet fails its first statement, which invalidates it (and the
        # pool's older connections) as a disconnect: reads retry once (hub.db.readers), writes fail
        # with the database-unavailable error their callers already handle.
        event.listen(engine.sync_engine, "checkout", refuse_closed)
        return engine

    # Every transaction takes the write lock anyway, so a second pooled connection buys no
    # concurrency; it only makes writers wait in SQLite's busy handler, which sleeps 1-100 ms
    # between tries. One connection queues them in the event loop instead, and the pool
    # timeout keeps the busy timeout's meaning (give up after 30 s). Other connections (the
    # CLI, receiver processes, the DICOM receiver's commit thread) still meet the busy timeout.
    kwargs.setdefault("pool_size", 1)
    kwargs.setdefault("max_overflow", 0)
    kwargs.setdefault("pool_timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    # A connection returned to the pool has no transaction open: SQLAlchemy rolls back an
    # unfinished one when its Connection or Session closes. The pool's own reset is a second,
    # empty ROLLBACK, and on aiosqlite every call is a thread hand-off (~0.1 ms, far more
    # when the event loop is busy), paid by every transaction in the hub.
    kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                 json_deserializer=json_loads, **kwargs)

    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    event.listen(engine.sync_engine, "begin", begin_immediate)
    return engine


def refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pool checkout listener: a connection its driver knows is closed is replaced (the pool
    invalidates it and checks out another on :class:`DisconnectionError`)."""
    is_closed = getattr(getattr(dbapi_connection, "driver_connection", None), "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the database server closed this connection")


READ_POOL_SIZE = 4
#: Of PostgreSQL's 20 pooled connections, how many ``Hub.read`` may hold (hub.db.readers); the
#: rest serve transactions and sessions.
PG_READERS = 8


def make_read_engine(url: str, engine: AsyncEngine) -> AsyncEngine:
    """An engine for read-only sessions: on SQLite, its own connections that never take the
    write lock; elsewhere, the same engine.

    In WAL mode readers see the last committed snapshot and neither wait for the writer nor make
    it wait, so API reads need not queue behind writes on the one write connection. Each read
    transaction is a deferred ``BEGIN`` (one consistent snapshot for a handler's several
    statements) on a connection with ``PRAGMA query_only``: a write through a read session fails
    at once instead of silently taking the lock.
    """
    if not is_sqlite(url):
        return engine
    reader = create_async_engine(
        url, json_deserializer=json_loads, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=READ_POOL_SIZE, max_overflow=0, pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        pool_reset_on_return=None,
    )
    event.listen(reader.sync_engine, "connect", _configure_sqlite_reader)
    event.listen(reader.sync_engine, "begin", begin_deferred)
    return reader


def _configure_sqlite_reader(dbapi_connection: Any, record: Any) -> None:
    _configure_sqlite(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_sync_sqlite_engine(url: str) -> Engine:
    """A synchronous engine with one connection of its own on the SQLite database at ``url``,
    configured as the hub's (WAL, foreign keys, busy timeout, BEGIN IMMEDIATE).

    For a thread that writes a hot path without the event loop (the DICOM receiver's group
    commit). It is a second writer beside the hub's pooled connection: the two meet on
    SQLite's write lock, and the one that waits sleeps in the busy handler, so use it only
    where the writes are frequent enough to be worth that.
    """
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(
        sync_url,
        poolclass=StaticPool,  # one connection, used by one thread at a time
        pool_reset_on_return=None, json_deserializer=json_loads,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", begin_immediate)
    return engine


def make_sync_sqlite_reader(url: str, pool_size: int) -> Engine:
    """A synchronous engine of ``pool_size`` read-only connections on the SQLite database at
    ``url``, configured as the hub's read engine (deferred ``BEGIN``, ``query_only``).

    For threads that must read without the event loop (a DICOM association's caller check): in
    WAL mode such a reader neither waits for the writer nor holds it up.
    """
    engine = create_engine(
        make_url(url).set(drivername="sqlite"), pool_size=pool_size, max_overflow=0,
        json_deserializer=json_loads, pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        pool_reset_on_return=None, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _configure_sqlite_reader)
    event.listen(engine, "begin", begin_deferred)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL with synchronous=NORMAL is durable across process crashes (the case we must
    # survive: SIGKILL); FULL only adds protection against power loss at a large cost.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
