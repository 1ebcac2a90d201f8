"""A connection goes back to the pool with nothing open, though the pool does not reset it.

The SQLite engine runs with ``pool_reset_on_return=None`` (the reset was a second, empty
ROLLBACK through aiosqlite's thread on every checkin); SQLAlchemy itself must roll back what a
Connection or Session leaves unfinished, or the next user would inherit the write lock.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select

from hub.db.models import Job


def _job(key: str) -> dict:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return dict(kind="t.reset", payload={}, status="queued", run_at=now, attempts=0,
                max_attempts=1, idempotency_key=key, created_at=now)


async def _keys(hub) -> set[str]:
    async with hub.sessionmaker() as s:
        return set((await s.execute(select(Job.idempotency_key).where(Job.kind == "t.reset"))).scalars())


async def test_unfinished_work_is_rolled_back_and_releases_the_lock(hub):
    async with hub.engine.connect() as conn:  # autobegins; closed without commit
        await conn.execute(insert(Job).values(**_job("conn")))
    async with hub.sessionmaker() as session:  # the same through a session
        await session.execute(insert(Job).values(**_job("session")))
    with pytest.raises(RuntimeError):
        async with hub.transaction() as session:
            await session.execute(insert(Job).values(**_job("raised")))
            raise RuntimeError("rolled back")
    # the next writer gets the lock at once and nothing above was kept
    async with asyncio.timeout(10):
        async with hub.transaction() as session:
            await session.execute(insert(Job).values(**_job("kept")))
    assert await _keys(hub) == {"kept"}
    async with hub.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "t.reset")) == 1
