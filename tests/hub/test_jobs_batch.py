"""Batched claims run concurrently, and successes finishing together share one commit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, func, select

from hub.db.models import Job
from hub.hookspecs import hookimpl


class Recorder:
    def __init__(self) -> None:
        self.runs: list[int] = []
        self.active = 0
        self.peak = 0
        self.release = asyncio.Event()

    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        async def slow(hub: Any, job: Any) -> None:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await asyncio.wait_for(self.release.wait(), timeout=30)
                self.runs.append(job.payload["n"])
            finally:
                self.active -= 1

        return {"test.slow": slow}


async def test_claim_batch_runs_jobs_concurrently_and_each_once(hub_factory: Any) -> None:
    recorder = Recorder()
    hub = await hub_factory({"jobs": {"workers": 1, "claim_batch": 5}}, plugins=[("recorder", recorder)])
    async with hub.transaction() as session:
        for n in range(20):
            await hub.jobs.enqueue(session, "test.slow", {"n": n})
    hub.jobs.start()
    try:
        async with asyncio.timeout(30):
            while recorder.active < 5:  # one worker holds a batch of five at once
                await asyncio.sleep(0.01)
        assert recorder.peak == 5
        recorder.release.set()
        async with asyncio.timeout(60):
            while len(recorder.runs) < 20:
                await asyncio.sleep(0.02)
    finally:
        await hub.jobs.stop()
    assert sorted(recorder.runs) == list(range(20))
    async with hub.sessionmaker() as session:
        statuses = dict((await session.execute(select(Job.status, func.count()).group_by(Job.status))).all())
    assert statuses == {"succeeded": 20}


async def test_successes_finishing_together_share_a_commit(hub: Any) -> None:
    async with hub.transaction() as session:
        for n in range(6):
            await hub.jobs.enqueue(session, "test.noop", {"n": n})
    claimed = await hub.jobs.claim(6)
    assert len(claimed) == 6
    commits: list[int] = []

    def on_commit(_conn: Any) -> None:
        commits.append(1)

    event.listen(hub.engine.sync_engine, "commit", on_commit)
    try:
        outcomes = await asyncio.gather(*(hub.jobs._finisher.succeed(job.id, hub.jobs.worker_id) for job in claimed))
    finally:
        event.remove(hub.engine.sync_engine, "commit", on_commit)
    assert outcomes == ["succeeded"] * 6
    assert len(commits) == 1  # six successes, one transaction
    # a job whose lease another worker took is not marked done by the late one
    async with hub.transaction() as session:
        job = await hub.jobs.enqueue(session, "test.noop", {})
    [late] = await hub.jobs.claim(1)
    assert await hub.jobs._finisher.succeed(late.id, "someone-else") == "lost-lease"
    async with hub.sessionmaker() as session:
        assert (await session.get(Job, job.id)).status == "running"
