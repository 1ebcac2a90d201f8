"""Run a synchronous function as one transaction, with as few hand-offs as the driver allows.

A hot path of many small statements (the DICOM receiver files a row per instance) pays, on
SQLite, for every statement several round trips between the event loop and aiosqlite's thread
(open a cursor, execute, fetch, close), each a thread wake-up and a GIL hand-off: two short
statements cost ~2 ms of CPU that way, ~0.1 ms run directly. :func:`run_transaction` runs the
whole function inside aiosqlite's own thread, on the same ``sqlite3`` connection, through a
synchronous SQLAlchemy engine bound to it: one hand-off for the whole transaction.

Other drivers (asyncpg has no thread) take SQLAlchemy's ``run_sync``. Either way the function
gets a :class:`~sqlalchemy.engine.Connection` in an open transaction and must not commit it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from hub.db.engine import begin_deferred, begin_immediate, json_loads

T = TypeVar("T")

_SHADOW = "vethub_sync_shadow"


async def run_transaction(engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn(connection)`` in a transaction and commit; returns what ``fn`` returned.

    If ``fn`` raises, the transaction rolls back and the exception propagates. Cancelling the
    caller does not stop a function already handed to SQLite's thread: it commits or rolls
    back as it would have.
    """
    async with engine.connect() as conn:
        hop = await _thread_hop(conn)
        if hop is None:
            async with conn.begin():
                return await conn.run_sync(fn)
        run, shadow = hop
        return await run(shadow.transaction, fn)


async def run_read(engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn(connection)`` in a read-only transaction on ``engine`` (the hub's read engine),
    in one hand-off on SQLite; returns what ``fn`` returned. ``fn`` must not write.

    A read that met a connection the server had closed (see :func:`hub.db.engine.refuse_closed`)
    runs once more on a fresh one: it changed nothing, and its caller should not see an error
    for a connection the pool could replace. A second failure is the database's state."""
    try:
        return await _read_once(engine, fn)
    except DBAPIError as err:
        if not err.connection_invalidated:
            raise
    return await _read_once(engine, fn)


async def _read_once(engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
    async with engine.connect() as conn:
        hop = await _thread_hop(conn, begin=begin_deferred)
        if hop is None:
            # PostgreSQL: no BEGIN and COMMIT round trips around a read. Its default isolation
            # (READ COMMITTED) gives each statement its own snapshot inside a transaction too,
            # and autocommit lasts only while this connection is checked out.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await conn.run_sync(fn)
        run, shadow = hop
        return await run(shadow.read, fn)


def row_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """A result's rows as dicts keyed by their column labels (the items of a list route's
    :class:`hub.web.contract.Prebuilt` answer).

    ``dict(row_mapping)`` builds a view of the keys for every row: a tenth of a short list
    route's CPU. The keys are read once here, and the rows fetched in one call."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


async def _thread_hop(conn: AsyncConnection, begin: Callable[[Any], None] = begin_immediate,
                      ) -> tuple[Callable[..., Awaitable[Any]], _Shadow] | None:
    """aiosqlite's "run this in the connection's thread", and the sync engine on it; or None.

    ``_execute`` and ``_conn`` are aiosqlite internals (stable since 0.17); without them the
    caller falls back to ``run_sync``, which is correct, only slower.
    """
    if conn.dialect.name != "sqlite":
        return None
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    run = getattr(driver, "_execute", None)
    sqlite_conn = getattr(driver, "_conn", None)
    if run is None or sqlite_conn is None:
        return None
    shadow: _Shadow | None = conn.info.get(_SHADOW)
    if shadow is None or shadow.sqlite_conn is not sqlite_conn:
        shadow = conn.info[_SHADOW] = _Shadow(sqlite_conn, begin)
    return run, shadow


class _Shadow:
    """A synchronous engine and connection on ``sqlite_conn`` (already configured: WAL,
    foreign keys, busy timeout, isolation_level=None; see :mod:`hub.db.engine`), used only in
    aiosqlite's thread. The connection stays open between transactions: a checkout and a
    reset per transaction cost as much as a short statement."""

    def __init__(self, sqlite_conn: Any, begin: Callable[[Any], None] = begin_immediate) -> None:
        self.sqlite_conn = sqlite_conn
        # The async pool owns sqlite_conn: this engine never resets or closes it.
        self.engine = create_engine(
            "sqlite://", creator=lambda: sqlite_conn, poolclass=StaticPool,
            pool_reset_on_return=None, json_deserializer=json_loads,
        )
        event.listen(self.engine, "begin", begin)  # as the async engine
        self.conn: Connection | None = None

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        if self.conn is None:
            self.conn = self.engine.connect()
        self.conn.begin()
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        return result

    def read(self, fn: Callable[[Connection], T]) -> T:
        if self.conn is None:
            self.conn = self.engine.connect()
        self.conn.begin()
        try:
            return fn(self.conn)
        finally:
            self.conn.rollback()
