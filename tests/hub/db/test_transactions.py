"""run_transaction: a synchronous function as one transaction, on SQLite's thread or run_sync."""

from __future__ import annotations

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


async def test_on_sqlite_the_function_runs_in_the_database_thread(hub):
    # The one-hand-off path relies on two aiosqlite internals; if an upgrade renamed them the
    # hub would silently fall back to run_sync (correct, ~3x the CPU). This notices.
    seen: list[int] = []
    await run_transaction(hub.engine, lambda conn: seen.append(threading.get_ident()))
    in_loop_thread = seen == [threading.get_ident()]
    assert in_loop_thread is (hub.engine.dialect.name != "sqlite")
