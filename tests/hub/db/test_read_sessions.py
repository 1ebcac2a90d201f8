"""Read sessions: on SQLite they neither wait for the writer nor can write."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from hub.core import Hub
from hub.db.models import Company


async def test_reads_do_not_wait_for_a_held_write_lock(hub: Hub) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with hub.transaction() as session:
            session.add(Company(slug="pending-co", name="Pending", email=None, modalities=[]))
            await session.flush()
            holding.set()
            await release.wait()

    task = asyncio.create_task(writer())
    try:
        await asyncio.wait_for(holding.wait(), 10)
        # The writer holds its transaction (and, on SQLite, the write lock) open; a read answers
        # at once, from the last committed snapshot.
        async with hub.read_session() as session:
            slugs = (await asyncio.wait_for(session.execute(select(Company.slug)), 5)).scalars().all()
        assert "pending-co" not in slugs
    finally:
        release.set()
        await task
    async with hub.read_session() as session:
        count = await session.scalar(select(func.count()).where(Company.slug == "pending-co"))
    assert count == 1  # committed writes are seen by the next read


# PostgreSQL reads share the pooled engine; query_only is SQLite's guard.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_read_session_cannot_write(db_url: str, hub: Hub) -> None:
    async with hub.read_session() as session:
        with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
            await session.execute(text("INSERT INTO companies (slug, name, modalities, settings, "
                                       "managed_by_config, created_at) VALUES ('x', 'x', '[]', '{}', 0, "
                                       "'2026-01-01')"))


async def test_hub_read_runs_a_synchronous_read(hub: Hub) -> None:
    async with hub.transaction() as session:
        session.add(Company(slug="read-co", name="Read", email=None, modalities=["CT"]))
    slugs = await hub.read(lambda conn: conn.execute(select(Company.slug)).scalars().all())
    assert "read-co" in slugs
    if hub.is_sqlite:  # a write through the read path fails loudly
        with pytest.raises(OperationalError):
            await hub.read(lambda conn: conn.execute(text("DELETE FROM companies")))
    async with hub.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(Company)) >= 1
