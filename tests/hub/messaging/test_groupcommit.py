"""Group commit: writes of the same moment share a transaction; each caller gets its own result
once committed, and one bad item fails only its own caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from hub.db.models import Job
from hub.messaging.groupcommit import GroupCommit


class Writer:
    """Writes one job row per item, in whatever batches the group commit hands it."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.batches: list[list[str]] = []

    def __call__(self, conn: Connection, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        for item in items:
            self.hub.jobs.enqueue_sync(conn, "t.group", {"item": item})
            if item.startswith("bad"):
                raise ValueError(f"cannot write {item}")
        return [item.upper() for item in items]


async def _written(hub: Any) -> list[str]:
    async with hub.sessionmaker() as session:
        rows = (await session.execute(select(Job.payload).where(Job.kind == "t.group"))).scalars()
        return sorted(payload["item"] for payload in rows)


async def test_writes_of_the_same_moment_share_one_transaction(hub: Any) -> None:
    writer = Writer(hub)
    group = GroupCommit(hub, writer)
    results = await asyncio.gather(*(group.write(f"m{i}") for i in range(8)))
    assert results == [f"M{i}" for i in range(8)]
    assert writer.batches == [[f"m{i}" for i in range(8)]]
    assert await _written(hub) == sorted(f"m{i}" for i in range(8))
    # later writes make a batch of their own
    assert await group.write("late") == "LATE"
    assert len(writer.batches) == 2


async def test_one_bad_item_fails_only_its_caller(hub: Any) -> None:
    writer = Writer(hub)
    group = GroupCommit(hub, writer)
    results = await asyncio.gather(group.write("a"), group.write("bad"), group.write("b"),
                                   return_exceptions=True)
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], ValueError)
    # the shared transaction rolled back whole; then each was written alone
    assert writer.batches == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert await _written(hub) == ["a", "b"]
    with pytest.raises(ValueError, match="cannot write bad2"):
        await group.write("bad2")


async def test_a_cancelled_caller_leaves_the_others_their_results(hub: Any) -> None:
    writer = Writer(hub)
    group = GroupCommit(hub, writer)
    first = asyncio.ensure_future(group.write("x"))
    second = asyncio.ensure_future(group.write("y"))
    await asyncio.sleep(0)  # one loop turn: both are in the batch
    first.cancel()
    assert await second == "Y"
    assert first.cancelled()
    # one transaction: "x" was written with "y" (as run_transaction, a cancelled caller does
    # not take back a write already on its way)
    assert writer.batches == [["x", "y"]]
    assert await _written(hub) == ["x", "y"]
