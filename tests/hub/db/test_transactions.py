"""run_transaction: a synchronous function as one transaction, on SQLite's thread or run_sync."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from hub.db.models import Job
from hub.db.transactions import run_transaction


async def _count(hub, kind: str) -> int:
    async with hub.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Job).where(Job.kind == kind))


def _enqueue(hub, kind: str, n: int = 1):
    def fn(conn: Connection) -> str:
        for i in range(n):
            hub.jobs.enqueue_sync(conn, kind, {"i": i}, idempotency_key=f"{kind}:{i}")
        return conn.dialect.name

    return fn


async def test_commits_what_the_function_wrote(hub):
    name = await run_transaction(hub.engine, _enqueue(hub, "t.commit", 3))
    assert name == hub.engine.dialect.name
    assert await _count(hub, "t.commit") == 3
    # idempotency keys hold across transactions
    await run_transaction(hub.engine, _enqueue(hub, "t.commit", 4))
    assert await _count(hub, "t.commit") == 4


async def test_a_failing_function_commits_nothing(hub):
    def fn(conn: Connection) -> None:
        _enqueue(hub, "t.fail")(conn)
        raise ValueError("half way")

    with pytest.raises(ValueError, match="half way"):
        await run_transaction(hub.engine, fn)
    assert await _count(hub, "t.fail") == 0
    await run_transaction(hub.engine, _enqueue(hub, "t.after"))  # the connection is usable
    assert await _count(hub, "t.after") == 1


async def test_before_commit_runs_after_the_writes_and_can_refuse(hub):
    seen: list[str] = []

    async def check() -> None:
        seen.append("before_commit")
        raise OSError("file not durable")

    def fn(conn: Connection) -> None:
        seen.append("fn")
        _enqueue(hub, "t.refused")(conn)

    with pytest.raises(OSError, match="not durable"):
        await run_transaction(hub.engine, fn, before_commit=check)
    assert seen == ["fn", "before_commit"]
    assert await _count(hub, "t.refused") == 0


async def test_other_writers_wait_for_the_commit_and_see_it(hub):
    gate = asyncio.Event()
    held = asyncio.create_task(
        run_transaction(hub.engine, _enqueue(hub, "t.held"), before_commit=gate.wait)
    )

    async def other() -> int:
        async with hub.transaction() as session:
            await hub.jobs.enqueue(session, "t.other", {}, idempotency_key="t.other")
        return await _count(hub, "t.held")

    writer = asyncio.create_task(other())
    await asyncio.sleep(0)  # both start; the gate keeps the first transaction open
    gate.set()
    await asyncio.wait_for(held, 30)
    await asyncio.wait_for(writer, 30)
    assert await _count(hub, "t.held") == 1 and await _count(hub, "t.other") == 1


async def test_cancelled_while_waiting_commits_nothing(hub):
    ran = threading.Event()  # fn runs in the database thread on SQLite

    def fn(conn: Connection) -> None:
        _enqueue(hub, "t.cancel")(conn)
        ran.set()

    task = asyncio.create_task(
        run_transaction(hub.engine, fn, before_commit=asyncio.Event().wait)
    )
    deadline = asyncio.get_running_loop().time() + 30
    while not ran.is_set():
        assert asyncio.get_running_loop().time() < deadline, "the function never ran"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _count(hub, "t.cancel") == 0
    await run_transaction(hub.engine, _enqueue(hub, "t.next"))
    assert await _count(hub, "t.next") == 1
