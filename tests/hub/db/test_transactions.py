"""run_transaction: a synchronous function as one transaction, on SQLite's thread or run_sync."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from hub.db.models import Job
from hub.db.transactions import run_transaction
from hub.testing.work import WatchedWork, until_set


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


async def test_commit_waits_for_the_work_and_a_failure_commits_nothing(hub):
    work = WatchedWork()
    task = asyncio.create_task(
        run_transaction(hub.engine, _enqueue(hub, "t.refused"), commit_after=[work])
    )
    await until_set(work.awaited, "a wait for the work")  # fn has run; the commit waits for the work
    assert not task.done()
    work.set_exception(OSError("file not durable"))
    with pytest.raises(OSError, match="not durable"):
        await asyncio.wait_for(task, 30)
    assert await _count(hub, "t.refused") == 0


async def test_other_writers_wait_for_the_commit_and_see_it(hub):
    work = WatchedWork()
    held = asyncio.create_task(
        run_transaction(hub.engine, _enqueue(hub, "t.held"), commit_after=[work])
    )

    async def other() -> int:
        async with hub.transaction() as session:
            await hub.jobs.enqueue(session, "t.other", {}, idempotency_key="t.other")
        return await _count(hub, "t.held")

    await until_set(work.awaited, "a wait for the work")
    writer = asyncio.create_task(other())
    work.set_result(None)
    await asyncio.wait_for(held, 30)
    assert await asyncio.wait_for(writer, 30) == 1
    assert await _count(hub, "t.other") == 1


async def test_a_cancelled_caller_leaves_the_connection_usable(hub):
    work = WatchedWork()
    task = asyncio.create_task(
        run_transaction(hub.engine, _enqueue(hub, "t.cancel"), commit_after=[work])
    )
    await until_set(work.awaited, "a wait for the work")
    task.cancel()
    # On SQLite the database thread still waits for the work; its failure rolls back.
    work.set_exception(OSError("gone"))
    with pytest.raises((asyncio.CancelledError, OSError)):
        await task
    await run_transaction(hub.engine, _enqueue(hub, "t.next"))
    assert await _count(hub, "t.cancel") == 0 and await _count(hub, "t.next") == 1


async def test_on_sqlite_the_function_runs_in_the_database_thread(hub):
    # The one-hand-off path relies on two aiosqlite internals; if an upgrade renamed them the
    # hub would silently fall back to run_sync (correct, ~3x the CPU). This notices.
    seen: list[int] = []
    await run_transaction(hub.engine, lambda conn: seen.append(threading.get_ident()))
    in_loop_thread = seen == [threading.get_ident()]
    assert in_loop_thread is (hub.engine.dialect.name != "sqlite")
