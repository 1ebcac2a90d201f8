"""Batched claims run concurrently, and successes finishing together share one commit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

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

    # every engine: on SQLite the queue's transactions run on run_transaction's own engine,
    # in the database's thread
    event.listen(Engine, "commit", on_commit)
    try:
        outcomes = await asyncio.gather(*(hub.jobs._finisher.succeed(job.id, hub.jobs.worker_id) for job in claimed))
    finally:
        event.remove(Engine, "commit", on_commit)
    assert outcomes == ["succeeded"] * 6
    assert len(commits) == 1  # six successes, one transaction
    # a job whose lease another worker took is not marked done by the late one
    async with hub.transaction() as session:
        job = await hub.jobs.enqueue(session, "test.noop", {})
    [late] = await hub.jobs.claim(1)
    assert await hub.jobs._finisher.succeed(late.id, "someone-else") == "lost-lease"
    async with hub.sessionmaker() as session:
        assert (await session.get(Job, job.id)).status == "running"


class Quick:
    def __init__(self) -> None:
        self.runs: list[int] = []

    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        async def quick(hub: Any, job: Any) -> None:
            self.runs.append(job.id)

        return {"test.quick": quick}


async def test_a_worker_records_each_success_with_its_next_claim(hub_factory: Any) -> None:
    # One job after another: each claim also records the previous job's success, so the queue
    # commits once per job (plus the enqueue), not twice.
    quick = Quick()
    hub = await hub_factory({"jobs": {"workers": 1, "poll_interval": 60}}, plugins=[("quick", quick)])
    async with hub.transaction() as session:
        ids = [(await hub.jobs.enqueue(session, "test.quick", {"n": n})).id for n in range(8)]
    job_commits: list[int] = []

    def on_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            conn.info["touched_jobs"] = True

    def on_commit(conn: Any) -> None:
        if conn.info.pop("touched_jobs", False):
            job_commits.append(1)

    def on_rollback(conn: Any) -> None:
        conn.info.pop("touched_jobs", None)

    engine = Engine  # every engine, as above
    listeners = [("before_cursor_execute", on_execute), ("commit", on_commit), ("rollback", on_rollback)]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    hub.jobs.start()
    try:
        async with asyncio.timeout(60):
            while True:
                async with hub.sessionmaker() as session:
                    done = (await session.execute(select(func.count()).select_from(Job)
                                                  .where(Job.status == "succeeded"))).scalar_one()
                if done == len(ids):
                    break
                await asyncio.sleep(0.02)
    finally:
        await hub.jobs.stop()
        for name, fn in listeners:
            event.remove(engine, name, fn)
    assert sorted(quick.runs) == ids
    # eight claims, each after the first recording the job before, and one that records the last
    assert len(job_commits) == len(ids) + 1


async def test_a_success_recorded_with_a_claim_is_fenced(hub: Any, caplog: Any) -> None:
    async with hub.transaction() as session:
        first = (await hub.jobs.enqueue(session, "test.noop", {})).id
        second = (await hub.jobs.enqueue(session, "test.noop", {})).id
    [job] = await hub.jobs.claim(1, "worker-a")
    assert job.id == first
    async with hub.engine.begin() as conn:  # its lease expired and another worker took it
        await conn.execute(Job.__table__.update().where(Job.id == first).values(locked_by="worker-b"))
    succeeded = [job]
    [nxt] = await hub.jobs.claim(1, "worker-a", succeeded=succeeded)
    assert nxt.id == second
    assert succeeded == []  # written (as nothing) in the claim's transaction
    assert "after its lease passed to another worker" in caplog.text
    async with hub.sessionmaker() as session:
        stolen = await session.get(Job, first)
        assert (stolen.status, stolen.locked_by, stolen.finished_at) == ("running", "worker-b", None)
    # and the worker that holds it does record it with its next claim
    assert await hub.jobs.claim(1, "worker-b", succeeded=[job]) == []
    async with hub.sessionmaker() as session:
        assert (await session.get(Job, first)).status == "succeeded"


async def test_stop_records_the_success_a_worker_had_left_for_its_next_claim(hub_factory: Any) -> None:
    stopping: list[asyncio.Task[None]] = []

    class StopsTheHub:
        @hookimpl
        def vethub_job_handlers(self) -> dict[str, Any]:
            async def last(hub: Any, job: Any) -> None:
                # stop() begins while this job runs: its success is the worker's to record
                # on the way out, since no claim follows
                stopping.append(asyncio.create_task(hub.jobs.stop(grace=10)))
                await asyncio.sleep(0)
                assert hub.jobs._stopping.is_set()

            return {"test.last": last}

    hub = await hub_factory({"jobs": {"workers": 1, "poll_interval": 60}}, plugins=[("last", StopsTheHub())])
    async with hub.transaction() as session:
        job_id = (await hub.jobs.enqueue(session, "test.last", {})).id
    hub.jobs.start()
    async with asyncio.timeout(30):
        while not stopping:
            await asyncio.sleep(0.01)
        await stopping[0]
    async with hub.sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert (job.status, job.attempts, job.locked_by) == ("succeeded", 1, hub.jobs.worker_id)


async def test_a_committed_enqueue_wakes_an_idle_worker_and_a_rolled_back_one_adds_nothing(
        hub_factory: Any) -> None:
    quick = Quick()
    hub = await hub_factory({"jobs": {"workers": 1, "poll_interval": 600}}, plugins=[("quick", quick)])
    async with hub.transaction() as session:
        first = (await hub.jobs.enqueue(session, "test.quick", {})).id
    hub.jobs.start()
    try:
        # Idle: the first job is recorded (by the claim that found nothing more) and that claim
        # has returned, after which the worker clears its wake-up before it waits.
        async with asyncio.timeout(30):
            while True:
                async with hub.sessionmaker() as session:
                    recorded = (await session.get(Job, first)).status == "succeeded"
                if recorded and not hub.jobs._unrecorded[0]:
                    break
                await asyncio.sleep(0.01)

        class Abort(Exception):
            pass

        with contextlib.suppress(Abort):
            async with hub.transaction() as session:
                await hub.jobs.enqueue(session, "test.quick", {})
                raise Abort
        assert not hub.jobs._wake.is_set()
        async with hub.transaction() as session:
            job_id = (await hub.jobs.enqueue(session, "test.quick", {})).id
        # polled at 600 s, so only the wake-up can run it within the deadline
        async with asyncio.timeout(30):
            while quick.runs != [first, job_id]:
                await asyncio.sleep(0.01)
    finally:
        await hub.jobs.stop()
