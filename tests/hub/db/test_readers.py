"""``Hub.read`` through its own readers (hub.db.readers): at most the pool's
size at once, the rest wait in turn; a wait too long is "database unavailable"; a caller that
gives up leaves nothing wedged; reads never wait for the writer; and closing stops them."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from hub.db.models import Company
from hub.db.readers import SqliteReaders
from hub.ops.dbstate import is_unavailable

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    path = str(tmp_path / "readers.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    return path


def _blocking_read(started: threading.Semaphore, release: threading.Event):
    def fn(conn: Connection) -> int:
        value = conn.execute(text("SELECT n FROM t")).scalar_one()
        started.release()
        assert release.wait(10), "the test never released the read"
        return int(value)
    return fn


async def _acquired(sem: threading.Semaphore, n: int) -> None:
    for _ in range(n):
        async with asyncio.timeout(10):
            while not sem.acquire(blocking=False):
                await asyncio.sleep(0.005)


async def test_at_most_size_reads_at_once_and_the_rest_wait_their_turn(db_url: str, db_path: str) -> None:
    readers = SqliteReaders(db_path, size=2)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        busy = [asyncio.create_task(readers.run(_blocking_read(started, release))) for _ in range(2)]
        await _acquired(started, 2)  # both connections are inside a read
        third = asyncio.create_task(readers.run(lambda conn: conn.execute(text("SELECT n + 1 FROM t")).scalar_one()))
        await asyncio.sleep(0)  # the third is queued, not running: no third connection opened
        assert not third.done() and len(readers._all) == 2
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*busy), 10) == [1, 1]
        assert await asyncio.wait_for(third, 10) == 2
    finally:
        release.set()
        await readers.close()


async def test_a_released_connection_goes_to_the_longest_waiter(db_url: str, db_path: str) -> None:
    """First come, first served: a request that arrives as a connection is released does not
    take it from one already waiting (which pushed waiters into the latency's tail)."""
    readers = SqliteReaders(db_path, size=1)
    try:
        held = await readers._acquire()
        first = asyncio.create_task(readers._acquire())
        await asyncio.sleep(0)  # waiting
        # a request whose turn on the loop comes before the woken waiter's
        later = asyncio.create_task(readers._acquire())
        readers._release(held)
        assert await asyncio.wait_for(first, 5) == held
        await asyncio.sleep(0)
        assert not later.done()  # it waits its turn
        readers._release(held)
        assert await asyncio.wait_for(later, 5) == held
        readers._release(held)
    finally:
        await readers.close()


async def test_closing_fails_the_waiters(db_url: str, db_path: str) -> None:
    readers = SqliteReaders(db_path, size=1)
    await readers._acquire()
    waiter = asyncio.create_task(readers._acquire())
    await asyncio.sleep(0)
    await readers.close()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(waiter, 5)


async def test_a_wait_longer_than_the_timeout_is_the_database_being_unavailable(db_path: str, db_url: str) -> None:
    readers = SqliteReaders(db_path, size=1, timeout=0.2)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        busy = asyncio.create_task(readers.run(_blocking_read(started, release)))
        await _acquired(started, 1)
        with pytest.raises(PoolTimeout) as err:
            await readers.run(lambda conn: 1)
        assert is_unavailable(err.value)  # the API answers 503 with Retry-After, as the engine's pool did
        release.set()
        assert await asyncio.wait_for(busy, 10) == 1
        assert await readers.run(lambda conn: conn.execute(text("SELECT n FROM t")).scalar_one()) == 1
    finally:
        release.set()
        await readers.close()


async def test_callers_that_give_up_leave_the_readers_usable(db_path: str, db_url: str) -> None:
    readers = SqliteReaders(db_path, size=1)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        # one caller cancelled inside its read, two cancelled while waiting for a connection
        running = asyncio.create_task(readers.run(_blocking_read(started, release)))
        await _acquired(started, 1)
        waiting = [asyncio.create_task(readers.run(lambda conn: 1)) for _ in range(2)]
        await asyncio.sleep(0)
        for task in (running, *waiting):
            task.cancel()
        release.set()
        for task in (running, *waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        # the cancelled read still ended (with its rollback) before the next on that thread
        reads = [readers.run(lambda conn: conn.execute(text("SELECT n FROM t")).scalar_one()) for _ in range(5)]
        assert await asyncio.wait_for(asyncio.gather(*reads), 10) == [1] * 5
        assert len(readers._all) == 1
    finally:
        release.set()
        await readers.close()


async def test_a_read_neither_waits_for_the_writer_nor_writes(db_path: str, db_url: str) -> None:
    readers = SqliteReaders(db_path, size=1)
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the write lock, held across the read
        writer.execute("INSERT INTO t VALUES (2)")
        rows = await asyncio.wait_for(readers.run(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all()), 5)
        assert rows == [1]  # the last committed snapshot
        with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
            await readers.run(lambda conn: conn.execute(text("DELETE FROM t")))
        writer.execute("COMMIT")
        assert sorted(await readers.run(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all())) == [1, 2]
    finally:
        writer.close()
        await readers.close()


async def test_closing_stops_every_reader_thread(db_path: str, db_url: str) -> None:
    before = set(threading.enumerate())
    readers = SqliteReaders(db_path, size=3)
    await asyncio.gather(*(readers.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one()) for _ in range(3)))
    assert len(set(threading.enumerate()) - before) >= 1
    await readers.close()
    async with asyncio.timeout(10):
        while set(threading.enumerate()) - before:
            await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="closed"):
        await readers.run(lambda conn: 1)


async def test_the_hub_reads_through_them(hub_factory, db_url: str) -> None:  # type: ignore[no-untyped-def]
    hub = await hub_factory({"companies": [{"slug": "rads", "name": "Rads"}]})
    assert hub._readers is not None
    assert await hub.read(lambda conn: conn.execute(select(Company.slug)).scalars().all()) == ["rads"]
    assert hub._readers._all, "Hub.read took a connection of the readers"
