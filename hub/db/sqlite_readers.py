"""``Hub.read`` on SQLite: a few aiosqlite connections kept ready, without the async engine.

A hot read route makes one hand-off to SQLite's thread (:func:`hub.db.transactions.run_read`),
but taking a connection from SQLAlchemy's async pool and giving it back cost as much again on
the event loop: an :class:`~sqlalchemy.ext.asyncio.AsyncConnection`, a greenlet for the
checkout and for the return, the pool's listeners. Here a read takes an idle connection from a
list (or waits for one), hands ``fn`` to that connection's thread and puts it back: what a
plain aiohttp server with aiosqlite would do.

The connections are configured as the read engine's (:func:`hub.db.engine.make_read_engine`):
WAL, ``query_only``, a deferred ``BEGIN`` per read, so a read neither takes nor waits for the
write lock. ``fn`` still gets a SQLAlchemy :class:`~sqlalchemy.engine.Connection` (the
synchronous shadow of :mod:`hub.db.transactions`), so statements and errors are SQLAlchemy's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.exc import TimeoutError as PoolTimeout

from hub.db.engine import SQLITE_BUSY_TIMEOUT_MS, _configure_sqlite_reader, begin_deferred
from hub.db.transactions import _Shadow

T = TypeVar("T")


class SqliteReaders:
    """Up to ``size`` read-only connections on the SQLite database at ``path``, opened as
    needed; a read waits at most ``timeout`` seconds for one (as the engine's pool timeout)."""

    def __init__(self, path: str, size: int, timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
        self._path = path
        self._size = size
        self._timeout = timeout
        self._idle: list[tuple[aiosqlite.Connection, _Shadow]] = []
        self._all: list[aiosqlite.Connection] = []
        self._opening = 0
        self._waiters: deque[asyncio.Future[tuple[aiosqlite.Connection, _Shadow]]] = deque()
        self._closed = False

    async def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in a read transaction on an idle connection's thread."""
        conn, shadow = await self._acquire()
        try:
            # aiosqlite runs calls on its thread one at a time, in order: a read its caller
            # stopped waiting for (cancelled) still ends with its ROLLBACK before the next.
            return await conn._execute(shadow.read, fn)
        finally:
            self._release(conn, shadow)

    async def _acquire(self) -> tuple[aiosqlite.Connection, _Shadow]:
        if self._closed:
            raise RuntimeError("the hub's SQLite readers are closed")
        if self._idle and not self._waiters:
            return self._idle.pop()
        if len(self._all) + self._opening < self._size:
            return await self._open()
        # First come, first served: a released connection is handed to the longest waiter, not
        # left for whichever request the loop runs next (which starved waiters into the tail).
        waiter: asyncio.Future[tuple[aiosqlite.Connection, _Shadow]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except BaseException as err:
            if waiter.done() and not waiter.cancelled():
                self._release(*waiter.result())  # handed a connection, then gave up: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(err, TimeoutError):
                # what SQLAlchemy's pool raised: the API answers 503, a worker backs off
                raise PoolTimeout(f"no SQLite read connection was free within {self._timeout:g} s") from None
            raise

    async def _open(self) -> tuple[aiosqlite.Connection, _Shadow]:
        self._opening += 1
        try:
            conn = await aiosqlite.connect(self._path, timeout=self._timeout,
                                           isolation_level=None)
            try:
                await conn._execute(_configure_sqlite_reader, conn._conn, None)
            except BaseException:
                await conn.close()
                raise
        finally:
            self._opening -= 1
        self._all.append(conn)
        return conn, _Shadow(conn._conn, begin_deferred)

    def _release(self, conn: aiosqlite.Connection, shadow: _Shadow) -> None:
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result((conn, shadow))
                return
        self._idle.append((conn, shadow))

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the hub's SQLite readers are closed"))
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await conn.close()

