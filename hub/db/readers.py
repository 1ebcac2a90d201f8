"""``Hub.read``'s connections: a few kept ready, without the async engine's checkout per read.

A hot read route makes one hand-off to the database (:func:`hub.db.transactions.run_read`),
but taking a connection from SQLAlchemy's async pool and giving it back cost as much again on
the event loop: an :class:`~sqlalchemy.ext.asyncio.AsyncConnection`, a greenlet for the
checkout and for the return, the pool's listeners, and on PostgreSQL setting autocommit on
the way out and resetting it on the way back. Here a read takes an idle connection from a list
(or waits its turn for one), runs ``fn`` on it and puts it back: what a plain aiohttp server
with its driver's own pool would do.

- :class:`SqliteReaders`: aiosqlite connections configured as the read engine's
  (:func:`hub.db.engine.make_read_engine`): WAL, ``query_only``, a deferred ``BEGIN`` per
  read, so a read neither takes nor waits for the write lock; ``fn`` runs in the connection's
  thread on its synchronous shadow (:mod:`hub.db.transactions`).
- :class:`PgReaders`: connections of the hub's engine held in autocommit (READ COMMITTED gives
  each statement its own snapshot, as :func:`hub.db.transactions.run_read` relies on). A
  connection the server closed fails its first statement as a disconnect, which SQLAlchemy
  invalidates; the read runs once more, on a new connection (it changed nothing).

Either way ``fn`` gets a SQLAlchemy :class:`~sqlalchemy.engine.Connection`, so statements and
errors are SQLAlchemy's, and waiting longer than the pool timeout raises SQLAlchemy's
``TimeoutError``, which the API answers with 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import aiosqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.db.engine import SQLITE_BUSY_TIMEOUT_MS, _configure_sqlite_reader, begin_deferred
from hub.db.transactions import _Shadow

T = TypeVar("T")
C = TypeVar("C")


class Readers(Generic[C]):
    """Up to ``size`` connections, opened as needed; a read waits at most ``timeout`` seconds
    for one, first come, first served."""

    def __init__(self, size: int, timeout: float) -> None:
        self._size = size
        self._timeout = timeout
        self._idle: list[C] = []
        self._all: list[C] = []
        self._opening = 0
        self._waiters: deque[asyncio.Future[C]] = deque()
        self._closed = False

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` as one read on an idle connection."""
        conn = await self._acquire()
        try:
            return await self._read(conn, fn)
        finally:
            self._release(conn)

    async def _open(self) -> C:
        raise NotImplementedError

    async def _read(self, conn: C, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def _close(self, conn: C) -> None:
        raise NotImplementedError

    async def _acquire(self) -> C:
        if self._closed:
            raise RuntimeError("the hub's readers are closed")
        if self._idle and not self._waiters:
            return self._idle.pop()
        if len(self._all) + self._opening < self._size:
            self._opening += 1
            try:
                conn = await self._open()
            finally:
                self._opening -= 1
            self._all.append(conn)
            return conn
        # First come, first served: a released connection is handed to the longest waiter, not
        # left for whichever request the loop runs next (which starved waiters into the tail).
        waiter: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except BaseException as err:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed a connection, then gave up: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(err, TimeoutError):
                # what SQLAlchemy's pool raised: the API answers 503, a worker backs off
                raise PoolTimeout(f"no read connection was free within {self._timeout:g} s") from None
            raise

    def _release(self, conn: C) -> None:
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the hub's readers are closed"))
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await self._close(conn)


class SqliteReaders(Readers[tuple[aiosqlite.Connection, _Shadow]]):
    """Read-only aiosqlite connections on the SQLite database at ``path``."""

    def __init__(self, path: str, size: int, timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
        super().__init__(size, timeout)
        self._path = path

    async def _open(self) -> tuple[aiosqlite.Connection, _Shadow]:
        conn = await aiosqlite.connect(self._path, timeout=self._timeout, isolation_level=None)
        try:
            await conn._execute(_configure_sqlite_reader, conn._conn, None)
        except BaseException:
            await conn.close()
            raise
        return conn, _Shadow(conn._conn, begin_deferred)

    async def _read(self, slot: tuple[aiosqlite.Connection, _Shadow], fn: Callable[[Connection], T]) -> T:
        conn, shadow = slot
        # aiosqlite runs calls on its thread one at a time, in order: a read its caller
        # stopped waiting for (cancelled) still ends with its ROLLBACK before the next.
        return await conn._execute(shadow.read, fn)

    async def _close(self, slot: tuple[aiosqlite.Connection, _Shadow]) -> None:
        await slot[0].close()


class PgReaders(Readers[AsyncConnection]):
    """Connections of ``engine`` (PostgreSQL) held in autocommit for reads; they count against
    its pool, so ``size`` must leave room for the writers."""

    def __init__(self, engine: AsyncEngine, size: int, timeout: float = 30.0) -> None:
        super().__init__(size, timeout)
        self._engine = engine

    async def _open(self) -> AsyncConnection:
        conn = await self._engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _read(self, conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
        def read(sync: Connection) -> T:
            try:
                return fn(sync)
            finally:
                # ends SQLAlchemy's own (autobegun) transaction; in autocommit, no round trip
                sync.rollback()

        try:
            return await conn.run_sync(read)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
        # The server closed this connection (a restart, pg_terminate_backend, an idle timeout):
        # SQLAlchemy invalidated it, and its next use takes a new one from the pool.
        return await conn.run_sync(read)

    async def _close(self, conn: AsyncConnection) -> None:
        await conn.close()
