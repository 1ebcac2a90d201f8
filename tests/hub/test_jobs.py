"""The durable job queue (hub/jobs.py): outbox semantics, retries, dead letter, replay, leases
after a SIGKILL, schedules shared by replicas, two worker processes on PostgreSQL, graceful stop.

In-process tests drive the queue with a FrozenClock and ``hub.jobs.run_until_idle()`` (no
sleeps). Process tests run ``tests/hub/jobs_worker.py`` and poll the database with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Job, Schedule
from hub.db.transactions import run_transaction
from hub.hookspecs import hookimpl
from hub.jobs import JobContext, JobQueue, PermanentJobError, RetryAfter, retry_jobs

HERE = Path(__file__).parent
WORKER = HERE / "jobs_worker.py"
REPO = HERE.parent.parent
VETHUB = Path(sys.executable).with_name("vethub")

# Backoff: attempt n waits initial * 2**(n-1) plus a jitter in [0, initial], capped at max.
BACKOFF = {"backoff_initial": 10.0, "backoff_max": 1000.0, "max_attempts": 5}


class Handlers:
    """A test plugin: job handlers whose behaviour the payload chooses; every run is recorded."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, int]] = []  # (kind, job id, attempt)
        self.broken = True
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        return {
            "t.ok": self.ok, "t.flaky": self.flaky, "t.always": self.always, "t.permanent": self.permanent,
            "t.retry_after": self.retry_after, "t.until_fixed": self.until_fixed, "t.slow": self.slow,
            "t.stuck": self.stuck,
        }

    def _record(self, job: JobContext) -> None:
        self.runs.append((job.kind, job.id, job.attempts))

    async def ok(self, hub: Hub, job: JobContext) -> None:
        self._record(job)

    async def flaky(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        if job.attempts <= job.payload["fail"]:
            raise ConnectionError(f"peer down (attempt {job.attempts})")

    async def always(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        raise ConnectionError(f"peer down (attempt {job.attempts})")

    async def permanent(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        raise PermanentJobError("address rejected by the provider")

    async def retry_after(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        if job.attempts == 1:
            raise RetryAfter(120, "429 from the provider")

    async def until_fixed(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        if self.broken:
            raise PermanentJobError("destination not configured")

    async def slow(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        self.started.set()
        await asyncio.sleep(job.payload["seconds"])

    async def stuck(self, hub: Hub, job: JobContext) -> None:
        self._record(job)
        self.started.set()
        await self.release.wait()


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def jhub(hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers, frozen_clock: FrozenClock) -> Hub:
    return await hub_factory({"jobs": BACKOFF}, clock=frozen_clock, plugins=[("jobs_test", handlers)])


async def enqueue(hub: Hub, kind: str, payload: dict[str, Any] | None = None, **kw: Any) -> int:
    async with hub.transaction() as session:
        return (await hub.jobs.enqueue(session, kind, payload or {}, **kw)).id


async def get_job(hub: Hub, job_id: int) -> Job:
    async with hub.sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def count_jobs(hub: Hub, *where: Any) -> int:
    async with hub.sessionmaker() as session:
        return (await session.execute(select(func.count()).select_from(Job).where(*where))).scalar_one()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_for(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str,
                    interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def _claims_awaited() -> list[Any]:
    """The JobQueue.claim coroutines the hub's worker tasks are awaiting right now."""
    found = []
    for task in asyncio.all_tasks():
        if not task.get_name().startswith("vethub-worker-"):
            continue
        awaited: Any = task.get_coro()
        while awaited is not None:
            if getattr(awaited, "cr_code", None) is JobQueue.claim.__code__:
                found.append(awaited)
                break
            awaited = getattr(awaited, "cr_await", None)
    return found


async def claim_blocked(timeout: float, interval: float = 0.05) -> None:
    """Wait until one and the same claim call is still pending a poll later: a worker is
    blocked in claim (one that completes takes milliseconds, and the next is a new call)."""
    deadline = time.monotonic() + timeout
    before = _claims_awaited()
    while True:
        await asyncio.sleep(interval)
        now = _claims_awaited()
        if any(a is b for a in now for b in before):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for a worker to block in claim")
        before = now


# --- the outbox ----------------------------------------------------------------------------------


async def test_a_job_without_delay_is_due_now_not_earlier(jhub: Hub, frozen_clock: FrozenClock) -> None:
    """Claims go by run_at: a new job must not be dated before jobs queued a moment ago."""
    first = await get_job(jhub, await enqueue(jhub, "t.ok"))
    later = await get_job(jhub, await enqueue(jhub, "t.ok", delay=0))
    delayed = await get_job(jhub, await enqueue(jhub, "t.ok", delay=30))
    assert first.run_at == later.run_at == frozen_clock.now()
    assert delayed.run_at == frozen_clock.now() + timedelta(seconds=30)


async def test_enqueue_is_part_of_the_callers_transaction(jhub: Hub, handlers: Handlers) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with jhub.transaction() as session:
            await jhub.jobs.enqueue(session, "t.ok", {"n": 1})
            raise Abort
    assert await count_jobs(jhub) == 0
    assert await jhub.jobs.run_until_idle() == 0

    async with jhub.transaction() as session:
        job = await jhub.jobs.enqueue(session, "t.ok", {"n": 2})
        # Flushed in the caller's transaction, invisible to others until it commits.
        assert job.id is not None and job.status == "queued"
    stored = await get_job(jhub, job.id)
    assert (stored.kind, stored.payload, stored.attempts, stored.max_attempts) == ("t.ok", {"n": 2}, 0, 5)
    assert await jhub.jobs.run_until_idle() == 1
    assert handlers.runs == [("t.ok", job.id, 1)]
    assert (await get_job(jhub, job.id)).status == "succeeded"


async def test_idempotency_key_returns_the_existing_job(jhub: Hub, handlers: Handlers) -> None:
    first = await enqueue(jhub, "t.ok", {"n": 1}, idempotency_key="comm:42")
    async with jhub.transaction() as session:
        again = await jhub.jobs.enqueue(session, "t.ok", {"n": 2}, idempotency_key="comm:42")
        same_tx = await jhub.jobs.enqueue(session, "t.ok", {"n": 3}, idempotency_key="comm:42")
    assert again.id == same_tx.id == first
    assert again.payload == {"n": 1}
    assert await count_jobs(jhub) == 1
    # Still one job once it has run: the key guards the job's whole life, not only the queue.
    await jhub.jobs.run_until_idle()
    assert await enqueue(jhub, "t.ok", {}, idempotency_key="comm:42") == first
    assert await jhub.jobs.run_until_idle() == 0
    assert handlers.runs == [("t.ok", first, 1)]


async def test_delayed_job_runs_only_when_due(jhub: Hub, frozen_clock: FrozenClock, handlers: Handlers) -> None:
    job_id = await enqueue(jhub, "t.ok", delay=30)
    assert await jhub.jobs.run_until_idle() == 0
    frozen_clock.advance(seconds=29)
    assert await jhub.jobs.run_until_idle() == 0
    frozen_clock.advance(seconds=1)
    assert await jhub.jobs.run_until_idle() == 1
    assert handlers.runs == [("t.ok", job_id, 1)]


# --- retries and the dead letter -----------------------------------------------------------------


async def test_retry_with_exponential_backoff_then_success(jhub: Hub, frozen_clock: FrozenClock,
                                                           handlers: Handlers) -> None:
    job_id = await enqueue(jhub, "t.flaky", {"fail": 3})
    delays = []
    for attempt in (1, 2, 3):
        assert await jhub.jobs.run_until_idle() == 1
        job = await get_job(jhub, job_id)
        assert (job.status, job.attempts) == ("queued", attempt)
        assert job.last_error == f"ConnectionError: peer down (attempt {attempt})"
        assert job.lease_until is None
        delay = (job.run_at - frozen_clock.now()).total_seconds()
        # initial * 2**(attempt-1), plus jitter in [0, initial]
        low = BACKOFF["backoff_initial"] * 2 ** (attempt - 1)
        assert low <= delay <= low + BACKOFF["backoff_initial"], (attempt, delay)
        delays.append(delay)
        # Not due a moment before its time, due at it.
        frozen_clock.advance(seconds=delay - 0.001)
        assert await jhub.jobs.run_until_idle() == 0
        frozen_clock.advance(seconds=0.001)
    assert delays == sorted(delays) and len(set(delays)) == 3
    assert await jhub.jobs.run_until_idle() == 1
    job = await get_job(jhub, job_id)
    assert (job.status, job.attempts) == ("succeeded", 4)
    assert job.finished_at == frozen_clock.now()
    assert [r[2] for r in handlers.runs] == [1, 2, 3, 4]


async def test_backoff_is_capped_at_backoff_max(hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers,
                                                frozen_clock: FrozenClock) -> None:
    hub = await hub_factory({"jobs": {"backoff_initial": 10, "backoff_max": 25, "max_attempts": 10}},
                            clock=frozen_clock, plugins=[("jobs_test", handlers)])
    job_id = await enqueue(hub, "t.always")
    for _ in range(4):
        await hub.jobs.run_until_idle()
        job = await get_job(hub, job_id)
        assert (job.run_at - frozen_clock.now()).total_seconds() <= 25
        frozen_clock.set(job.run_at)
    assert (await get_job(hub, job_id)).attempts == 4


async def test_permanent_error_goes_dead_at_once(jhub: Hub, handlers: Handlers, frozen_clock: FrozenClock) -> None:
    job_id = await enqueue(jhub, "t.permanent")
    assert await jhub.jobs.run_until_idle() == 1
    job = await get_job(jhub, job_id)
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error == "PermanentJobError: address rejected by the provider"
    assert job.finished_at == frozen_clock.now()
    frozen_clock.advance(days=1)
    assert await jhub.jobs.run_until_idle() == 0
    assert len(handlers.runs) == 1


async def test_max_attempts_exhausted_goes_dead_with_last_error(jhub: Hub, frozen_clock: FrozenClock,
                                                                handlers: Handlers) -> None:
    job_id = await enqueue(jhub, "t.always", max_attempts=3)
    for _ in range(3):
        assert await jhub.jobs.run_until_idle() == 1
        frozen_clock.advance(hours=1)
    job = await get_job(jhub, job_id)
    assert (job.status, job.attempts, job.max_attempts) == ("dead", 3, 3)
    assert job.last_error == "ConnectionError: peer down (attempt 3)"
    frozen_clock.advance(days=1)
    assert await jhub.jobs.run_until_idle() == 0
    assert [r[2] for r in handlers.runs] == [1, 2, 3]


async def test_unknown_kind_goes_dead(jhub: Hub) -> None:
    job_id = await enqueue(jhub, "t.nobody_handles_this")
    assert await jhub.jobs.run_until_idle() == 1
    job = await get_job(jhub, job_id)
    assert job.status == "dead" and "no handler for job kind 't.nobody_handles_this'" in (job.last_error or "")


async def test_retry_after_is_honoured(jhub: Hub, frozen_clock: FrozenClock, handlers: Handlers) -> None:
    job_id = await enqueue(jhub, "t.retry_after")
    t0 = frozen_clock.now()
    assert await jhub.jobs.run_until_idle() == 1
    job = await get_job(jhub, job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    assert job.run_at == t0 + timedelta(seconds=120)
    assert job.last_error == "RetryAfter: 429 from the provider"
    frozen_clock.advance(seconds=119)
    assert await jhub.jobs.run_until_idle() == 0
    frozen_clock.advance(seconds=1)
    assert await jhub.jobs.run_until_idle() == 1
    assert (await get_job(jhub, job_id)).status == "succeeded"
    assert [r[2] for r in handlers.runs] == [1, 2]


async def test_replay_dead_jobs_with_retry_jobs(jhub: Hub, handlers: Handlers, frozen_clock: FrozenClock) -> None:
    a = await enqueue(jhub, "t.until_fixed", {"n": "a"})
    b = await enqueue(jhub, "t.until_fixed", {"n": "b"})
    c = await enqueue(jhub, "t.until_fixed", {"n": "c"})
    assert await jhub.jobs.run_until_idle() == 3
    assert await count_jobs(jhub, Job.status == "dead") == 3
    handlers.broken = False

    async with jhub.transaction() as session:
        assert await retry_jobs(session, frozen_clock.now(), [a]) == 1
    job = await get_job(jhub, a)
    assert (job.status, job.attempts, job.finished_at) == ("queued", 0, None)
    assert await jhub.jobs.run_until_idle() == 1
    assert (await get_job(jhub, a)).status == "succeeded"
    # A job that is not dead is not touched by a replay.
    async with jhub.transaction() as session:
        assert await retry_jobs(session, frozen_clock.now(), [a]) == 0
        assert await retry_jobs(session, frozen_clock.now(), all_dead=True) == 2
    assert await jhub.jobs.run_until_idle() == 2
    assert {(await get_job(jhub, i)).status for i in (a, b, c)} == {"succeeded"}
    assert sorted((r[1], r[2]) for r in handlers.runs) == [(a, 1), (a, 1), (b, 1), (b, 1), (c, 1), (c, 1)]


# --- leases (in process, with the frozen clock) ---------------------------------------------------


async def test_expired_lease_is_reclaimed_and_the_old_worker_cannot_overwrite(
        jhub: Hub, frozen_clock: FrozenClock, handlers: Handlers) -> None:
    job_id = await enqueue(jhub, "t.ok")
    [first] = await jhub.jobs.claim(1, worker_id="worker-a")
    assert (first.id, first.attempts) == (job_id, 1)
    lease = jhub.config.jobs.lease_seconds
    frozen_clock.advance(seconds=lease - 1)
    assert await jhub.jobs.claim(1, worker_id="worker-b") == []  # still leased
    frozen_clock.advance(seconds=2)
    [second] = await jhub.jobs.claim(1, worker_id="worker-b")
    assert (second.id, second.attempts) == (job_id, 2)
    # The first worker comes back late: its outcome is fenced off, the new holder's stands.
    assert await jhub.jobs.run_one(first, worker_id="worker-a") == "lost-lease"
    job = await get_job(jhub, job_id)
    assert (job.status, job.locked_by) == ("running", "worker-b")
    assert await jhub.jobs.run_one(second, worker_id="worker-b") == "succeeded"
    assert (await get_job(jhub, job_id)).status == "succeeded"
    assert [r[2] for r in handlers.runs] == [1, 2]


@pytest.mark.parametrize(("stale", "holder"), [("worker-a", "worker-b"), ("worker-b", "worker-a")])
@pytest.mark.parametrize("kind", ["t.always", "t.permanent"])  # back to the queue, or dead
async def test_a_failure_reported_after_the_lease_passed_on_changes_nothing(
        jhub: Hub, frozen_clock: FrozenClock, stale: str, holder: str, kind: str) -> None:
    """The fence on locked_by is equality, whichever way the worker ids sort."""
    job_id = await enqueue(jhub, kind)
    [first] = await jhub.jobs.claim(1, worker_id=stale)
    frozen_clock.advance(seconds=jhub.config.jobs.lease_seconds + 1)
    [second] = await jhub.jobs.claim(1, worker_id=holder)
    held = await get_job(jhub, job_id)
    assert await jhub.jobs.run_one(first, worker_id=stale) == "lost-lease"
    job = await get_job(jhub, job_id)
    assert (job.status, job.locked_by, job.lease_until, job.last_error, job.attempts) == (
        "running", holder, held.lease_until, None, 2)
    assert second.attempts == 2


async def test_an_expired_lease_is_not_starved_by_a_busy_queue(
        jhub: Hub, frozen_clock: FrozenClock, handlers: Handlers) -> None:
    stuck = await enqueue(jhub, "t.ok")
    assert [j.id for j in await jhub.jobs.claim(1, worker_id="dead-worker")] == [stuck]
    frozen_clock.advance(seconds=jhub.config.jobs.lease_seconds + 1)
    # Plenty of queued work is due, and older than the expired job's lease.
    busy = [await enqueue(jhub, "t.ok", run_at=frozen_clock.now() - timedelta(hours=1)) for _ in range(10)]
    claimed = [j.id for _ in range(3) for j in await jhub.jobs.claim(1, worker_id="live-worker")]
    assert stuck in claimed and len(claimed) == 3
    assert set(claimed) - {stuck} <= set(busy)
    job = await get_job(jhub, stuck)
    assert (job.locked_by, job.attempts) == ("live-worker", 2)


async def test_claim_takes_due_jobs_in_run_at_order(jhub: Hub, frozen_clock: FrozenClock) -> None:
    now = frozen_clock.now()
    later = await enqueue(jhub, "t.ok", run_at=now - timedelta(seconds=10))
    first = await enqueue(jhub, "t.ok", run_at=now - timedelta(seconds=30))
    second = await enqueue(jhub, "t.ok", run_at=now - timedelta(seconds=20))
    not_due = await enqueue(jhub, "t.ok", run_at=now + timedelta(seconds=1))
    assert [j.id for j in await jhub.jobs.claim(2)] == [first, second]
    assert [j.id for j in await jhub.jobs.claim(5)] == [later]
    assert not_due not in [j.id for j in await jhub.jobs.claim(5)]


async def test_a_job_abandoned_more_than_max_attempts_times_goes_dead(
        jhub: Hub, frozen_clock: FrozenClock, handlers: Handlers) -> None:
    """A job whose worker keeps dying (a poison job that kills the process) must not loop forever."""
    job_id = await enqueue(jhub, "t.ok", max_attempts=2)
    lease = jhub.config.jobs.lease_seconds
    for worker in ("a", "b"):
        assert [j.id for j in await jhub.jobs.claim(1, worker_id=worker)] == [job_id]
        frozen_clock.advance(seconds=lease + 1)  # that worker died holding it
    assert await jhub.jobs.run_until_idle() == 1
    job = await get_job(jhub, job_id)
    assert (job.status, job.attempts) == ("dead", 3)
    assert "abandoned 2 times" in (job.last_error or "")
    assert handlers.runs == []


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VETHUB_CONFIG": str(config)}
    command = [str(VETHUB)] if VETHUB.exists() else [sys.executable, "-c", "from hub.cli import main; main()"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_replay_dead_jobs_through_the_cli(jhub: Hub, handlers: Handlers,
                                                write_config: Callable[..., Path]) -> None:
    config = write_config()
    ok = await enqueue(jhub, "t.ok")
    dead = [await enqueue(jhub, "t.until_fixed", {"n": n}) for n in range(3)]
    await jhub.jobs.run_until_idle()

    listed = await asyncio.to_thread(run_cli, config, "jobs", "list", "--status", "dead")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == dead
    assert all("dead" in line and "t.until_fixed" in line and "destination not configured" in line for line in lines)
    assert str(ok) not in {line.split()[0] for line in lines}

    shown = await asyncio.to_thread(run_cli, config, "jobs", "show", str(dead[0]))
    assert shown.returncode == 0, shown.stderr
    assert "destination not configured" in shown.stdout

    missing = await asyncio.to_thread(run_cli, config, "jobs", "retry")
    assert missing.returncode == 2 and "--all-dead" in missing.stderr

    handlers.broken = False
    one = await asyncio.to_thread(run_cli, config, "jobs", "retry", str(dead[0]))
    assert one.returncode == 0, one.stderr
    assert "requeued 1 job(s)" in one.stdout
    assert [(await get_job(jhub, i)).status for i in dead] == ["queued", "dead", "dead"]
    # The CLI stamps run_at with the real time; the test hub's frozen clock is earlier than that.
    jhub.clock.set((await get_job(jhub, dead[0])).run_at)  # type: ignore[attr-defined]
    assert await jhub.jobs.run_until_idle() == 1

    rest = await asyncio.to_thread(run_cli, config, "jobs", "retry", "--all-dead")
    assert rest.returncode == 0, rest.stderr
    assert "requeued 2 job(s)" in rest.stdout
    jhub.clock.set(max([(await get_job(jhub, i)).run_at for i in dead]))  # type: ignore[attr-defined]
    assert await jhub.jobs.run_until_idle() == 2
    assert [(await get_job(jhub, i)).status for i in dead] == ["succeeded"] * 3

    none_dead = await asyncio.to_thread(run_cli, config, "jobs", "list", "--status", "dead")
    assert none_dead.returncode == 0 and none_dead.stdout.strip() == ""


# --- schedules -----------------------------------------------------------------------------------


async def test_two_hubs_ticking_one_schedule_make_one_job_per_tick(
        hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers, frozen_clock: FrozenClock) -> None:
    a = await hub_factory({"jobs": BACKOFF}, clock=frozen_clock, plugins=[("jobs_test", handlers)])
    b = await hub_factory({"jobs": BACKOFF}, clock=frozen_clock, plugins=[("jobs_test", handlers)])
    t0 = frozen_clock.now()
    for hub in (a, b):  # both replicas declare it at start-up
        async with hub.transaction() as session:
            await hub.jobs.ensure_schedule(session, "reminders.daily", "t.ok", {"what": "tick"}, 60)
    async with a.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(Schedule))).scalar_one() == 1

    ticks = 20
    for i in range(ticks):
        if i:
            frozen_clock.advance(seconds=60)
        # Both replicas tick at the same moment, several times each.
        fired = await asyncio.gather(*(h.jobs.tick_schedules() for h in (a, b, a, b)))
        assert sum(fired) == 1, (i, fired)
    assert await count_jobs(a, Job.kind == "t.ok") == ticks
    async with a.sessionmaker() as session:
        keys = (await session.execute(select(Job.idempotency_key).order_by(Job.id))).scalars().all()
    assert keys == [f"schedule:reminders.daily:{(t0 + timedelta(seconds=60 * i)).isoformat()}" for i in range(ticks)]

    # Both replicas run the queue: every tick's job runs once.
    done = await asyncio.gather(a.jobs.run_until_idle(), b.jobs.run_until_idle())
    assert sum(done) == ticks
    assert len(handlers.runs) == ticks and len({r[1] for r in handlers.runs}) == ticks


async def test_two_hubs_declaring_one_schedule_at_once(hub_factory: Callable[..., Awaitable[Hub]],
                                                     frozen_clock: FrozenClock) -> None:
    """Replicas started together both declare their schedules; neither start-up fails."""
    a = await hub_factory(clock=frozen_clock)
    b = await hub_factory(clock=frozen_clock)

    async def declare(hub: Hub, n: int) -> None:
        async with hub.transaction() as session:
            await hub.jobs.ensure_schedule(session, f"s{n}", "t.ok", {"n": n}, 60)

    for n in range(5):
        await asyncio.gather(declare(a, n), declare(b, n))
    async with a.sessionmaker() as session:
        rows = (await session.execute(select(Schedule).order_by(Schedule.name))).scalars().all()
    assert [(r.name, r.every_seconds) for r in rows] == [(f"s{i}", 60) for i in range(5)]


async def test_schedule_after_downtime_fires_once_not_per_missed_tick(jhub: Hub, frozen_clock: FrozenClock) -> None:
    async with jhub.transaction() as session:
        await jhub.jobs.ensure_schedule(session, "sync", "t.ok", {}, 60)
    assert await jhub.jobs.tick_schedules() == 1
    frozen_clock.advance(hours=5)
    assert await jhub.jobs.tick_schedules() == 1
    assert await jhub.jobs.tick_schedules() == 0
    async with jhub.sessionmaker() as session:
        schedule = await session.get(Schedule, "sync")
        assert schedule is not None and schedule.next_run_at == frozen_clock.now() + timedelta(seconds=60)
    assert await count_jobs(jhub) == 2


async def test_a_tick_with_nothing_due_only_reads(jhub: Hub, frozen_clock: FrozenClock) -> None:
    """The scheduler ticks every second; with nothing due a tick reads and writes nothing, so
    it does not wait for the write lock another writer holds (on SQLite it would take it, and
    hold up that writer next: the DICOM committer). A schedule come due still fires."""
    async with jhub.transaction() as session:
        await jhub.jobs.ensure_schedule(session, "sync", "t.ok", {}, 60)
    assert await jhub.jobs.tick_schedules() == 1
    async with jhub.transaction() as session:  # holds the write lock to the block's end
        await session.execute(text("UPDATE practices SET name = name WHERE 1 = 0"))
        assert await asyncio.wait_for(jhub.jobs.tick_schedules(), 5) == 0
    frozen_clock.advance(seconds=60)
    assert await jhub.jobs.tick_schedules() == 1
    assert await count_jobs(jhub) == 2


# --- graceful stop -------------------------------------------------------------------------------


async def test_stop_lets_an_in_flight_job_finish_within_the_grace(
        hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers) -> None:
    hub = await hub_factory({"jobs": {"workers": 1}}, plugins=[("jobs_test", handlers)])
    job_id = await enqueue(hub, "t.slow", {"seconds": 0.5})
    hub.jobs.start()
    await asyncio.wait_for(handlers.started.wait(), 10)
    t0 = time.monotonic()
    await hub.jobs.stop(grace=10)
    assert time.monotonic() - t0 < 5
    job = await get_job(hub, job_id)
    assert (job.status, job.attempts, job.last_error) == ("succeeded", 1, None)


async def test_stop_releases_a_job_still_running_after_the_grace(
        hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers) -> None:
    hub = await hub_factory({"jobs": {"workers": 1, "max_attempts": 1}}, plugins=[("jobs_test", handlers)])
    job_id = await enqueue(hub, "t.stuck")
    later = await enqueue(hub, "t.ok", delay=0)
    hub.jobs.start()
    await asyncio.wait_for(handlers.started.wait(), 10)
    t0 = time.monotonic()
    await hub.jobs.stop(grace=0.3)
    assert 0.3 <= time.monotonic() - t0 < 5
    job = await get_job(hub, job_id)
    # Back in the queue at once, the interrupted attempt not counted (max_attempts=1 still runs).
    assert (job.status, job.attempts, job.lease_until) == ("queued", 0, None)
    assert job.last_error == "released at shutdown"
    assert (await get_job(hub, later)).status == "queued"  # nothing claimed after the stop began
    handlers.release.set()
    assert await hub.jobs.run_until_idle() == 2
    job = await get_job(hub, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # relies on SQLite's single write lock
async def test_a_job_claimed_while_stopping_is_released_not_left_running(
        hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers, db_url: str) -> None:
    """A worker whose claim was under way when stop() began gives that job straight back.

    On SQLite an open write transaction holds the worker's claim at BEGIN IMMEDIATE, so the
    claim completes only after stop() has started: deterministic without touching the queue.
    """
    hub = await hub_factory({"jobs": {"workers": 2, "poll_interval": 0.01}}, plugins=[("jobs_test", handlers)])
    first = await enqueue(hub, "t.stuck")
    hub.jobs.start()
    await asyncio.wait_for(handlers.started.wait(), 10)
    async with hub.transaction() as session:  # takes the write lock; the idle worker's next claim waits
        late = (await hub.jobs.enqueue(session, "t.slow", {"seconds": 30})).id
        # An idle worker's timed poll only reads (and sees nothing uncommitted); a wake-up
        # sends it straight to the claim, which waits for the lock we hold.
        hub.jobs.wake()
        await claim_blocked(10)  # the idle worker now waits in claim for the lock we hold
        stopping = asyncio.create_task(hub.jobs.stop(grace=0.5))
        await asyncio.sleep(0)  # stop() has begun: flag set, in-flight jobs noted
    # The lock is free: the blocked claim now takes the late job, after stop() began.
    await asyncio.wait_for(stopping, 10)
    job = await get_job(hub, late)
    assert (job.status, job.attempts) == ("queued", 0), (job.status, job.attempts, job.locked_by)
    assert [r[0] for r in handlers.runs] == ["t.stuck"]
    assert (await get_job(hub, first)).status == "queued"  # released after the grace
    handlers.release.set()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's one write lock is the point
async def test_idle_workers_poll_by_reading_and_claim_only_what_is_there(
        hub_factory: Callable[..., Awaitable[Hub]], handlers: Handlers, db_url: str) -> None:
    """An idle worker's timed poll reads on the read engine: while another writer holds
    SQLite's write lock for many polls, no worker waits for it in a claim. A job committed
    without a wake-up (as by another process) is seen at a poll and then claimed and run."""
    hub = await hub_factory({"jobs": {"workers": 2, "poll_interval": 0.01}}, plugins=[("jobs_test", handlers)])
    polls = 0

    def count_polls(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal polls
        if statement.lstrip().startswith("SELECT jobs.id") and "jobs.status" in statement:
            polls += 1

    event.listen(Engine, "before_cursor_execute", count_polls)
    hub.jobs.start()
    try:
        await await_for(lambda: _after(polls, 2), 20, "the workers' first claims, then polls")
        async with hub.transaction() as session:  # holds the write lock from here to the block's end
            await session.execute(text("UPDATE practices SET name = name WHERE 0"))
            seen, deadline = polls, time.monotonic() + 20
            while polls < seen + 20:  # twenty polls while we hold the lock
                assert not _claims_awaited(), "an idle worker waited for the write lock in a claim"
                assert time.monotonic() < deadline, f"only {polls - seen} polls"
                await asyncio.sleep(0.005)

        def add(conn: Any) -> None:
            hub.jobs.enqueue_sync(conn, "t.ok")

        await run_transaction(hub.engine, add)  # committed, nobody woken
        await await_for(lambda: _has_run(handlers, "t.ok"), 20, "a poll to find the job")
    finally:
        event.remove(Engine, "before_cursor_execute", count_polls)
        await hub.jobs.stop(grace=1)


async def _after(count: int, at_least: int) -> bool:
    return count >= at_least


async def _has_run(handlers: Handlers, kind: str) -> bool:
    return any(run[0] == kind for run in handlers.runs)


async def test_stop_with_idle_workers_ends_them_cleanly(hub_factory: Callable[..., Awaitable[Hub]],
                                                       handlers: Handlers) -> None:
    hub = await hub_factory({"jobs": {"workers": 2}}, plugins=[("jobs_test", handlers)])
    hub.jobs.start()
    await asyncio.wait_for(hub.jobs.stop(grace=1), 10)  # returns, does not raise
    # the queue's own tasks (other plugins' background tasks live until the hub stops)
    assert not [t for t in asyncio.all_tasks()
                if t.get_name().startswith(("vethub-worker", "vethub-scheduler")) and not t.done()]


async def test_a_worker_outlives_a_failed_claim(hub_factory: Callable[..., Awaitable[Hub]],
                                                handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    """The database fails a claim (here: the jobs table is briefly gone); the worker logs it,
    waits, and goes on claiming once the database answers again."""
    hub = await hub_factory({"jobs": {"workers": 1, "poll_interval": 0.01}}, plugins=[("jobs_test", handlers)])
    async with hub.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE jobs RENAME TO jobs_away"))
    hub.jobs.start()
    try:
        deadline = time.monotonic() + 20
        while "could not claim jobs" not in caplog.text:
            assert time.monotonic() < deadline, "no claim failed"
            await asyncio.sleep(0.02)
        async with hub.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE jobs_away RENAME TO jobs"))
        job_id = await enqueue(hub, "t.ok")
        await await_for(lambda: _status_is(hub, job_id, "succeeded"), 20, "the job to run after the failure")
    finally:
        await hub.jobs.stop(grace=1)


async def _status_is(hub: Hub, job_id: int, status: str) -> bool:
    return (await get_job(hub, job_id)).status == status


async def test_stop_with_zero_grace_releases_at_once(hub_factory: Callable[..., Awaitable[Hub]],
                                                     handlers: Handlers) -> None:
    hub = await hub_factory({"jobs": {"workers": 1}}, plugins=[("jobs_test", handlers)])
    job_id = await enqueue(hub, "t.stuck")
    hub.jobs.start()
    await asyncio.wait_for(handlers.started.wait(), 10)
    await asyncio.wait_for(hub.jobs.stop(grace=0), 5)
    job = await get_job(hub, job_id)
    assert (job.status, job.attempts) == ("queued", 0)


# --- worker processes ----------------------------------------------------------------------------


class Workers:
    """Worker processes (tests/hub/jobs_worker.py), always killed at the end of the test."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, mode: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, str(WORKER), str(self.config), str(self.log), mode],
                                env=env, stderr=subprocess.PIPE)
        self.procs.append(proc)
        ready = Path(f"{self.log}.ready.{proc.pid}")
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "a worker to start")
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        return proc

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stderr:
                proc.stderr.close()


@pytest.fixture
def workers(write_config: Callable[..., Path], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    overrides = getattr(request, "param", {})
    config = write_config({"jobs": {"workers": 1, "lease_seconds": 1.5, **overrides}}, name="worker.toml")
    w = Workers(config, tmp_path / "worker.log")
    yield w
    w.close()


async def test_sigkilled_worker_job_is_reclaimed_after_the_lease_and_runs_once_more(
        hub_factory: Callable[..., Awaitable[Hub]], workers: Workers) -> None:
    hub = await hub_factory({"jobs": {"lease_seconds": 1.5}})  # creates the schema; runs no jobs
    job_id = await enqueue(hub, "t.crash", {"n": 1})

    first = await asyncio.to_thread(workers.start, "block")
    await asyncio.to_thread(wait_for, lambda: any(line.startswith("started") for line in workers.lines()),
                            30, "the job to start")
    claimed = await get_job(hub, job_id)
    assert (claimed.status, claimed.attempts) == ("running", 1)
    assert claimed.locked_by is not None and f":{first.pid}:" in claimed.locked_by
    assert claimed.lease_until is not None

    async def lease_extended() -> bool:  # the live worker's heartbeat keeps its lease
        job = await get_job(hub, job_id)
        return job.lease_until is not None and job.lease_until > claimed.lease_until

    await await_for(lease_extended, 30, "the heartbeat to extend the lease")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    still = await get_job(hub, job_id)
    assert still.status == "running" and still.lease_until is not None

    second = await asyncio.to_thread(workers.start, "finish")

    async def succeeded() -> bool:
        return (await get_job(hub, job_id)).status == "succeeded"

    await await_for(succeeded, 60, "the reclaimed job to succeed")
    job = await get_job(hub, job_id)
    assert job.attempts == 2 and job.last_error is None
    assert f":{second.pid}:" in (job.locked_by or "")
    assert job.finished_at is not None and job.finished_at.timestamp() >= still.lease_until.timestamp()
    assert workers.lines() == [
        f"started {job_id} {first.pid} attempt=1",
        f"started {job_id} {second.pid} attempt=2",
        f"done {job_id} {second.pid}",
    ]


@pytest.mark.parametrize("workers", [{"shutdown_grace": 0.5}], indirect=True)
async def test_sigterm_releases_a_stuck_job_after_the_grace_and_exits(
        hub_factory: Callable[..., Awaitable[Hub]], workers: Workers) -> None:
    hub = await hub_factory()
    job_id = await enqueue(hub, "t.crash")
    proc = await asyncio.to_thread(workers.start, "block")
    await asyncio.to_thread(wait_for, lambda: workers.lines(), 30, "the job to start")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    job = await get_job(hub, job_id)
    assert (job.status, job.attempts, job.last_error) == ("queued", 0, "released at shutdown")


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SKIP LOCKED across processes
@pytest.mark.parametrize("workers", [{"workers": 4, "lease_seconds": 30}], indirect=True)
async def test_two_worker_processes_run_2000_jobs_each_exactly_once(
        hub_factory: Callable[..., Awaitable[Hub]], workers: Workers, db_url: str) -> None:
    hub = await hub_factory()
    async with hub.transaction() as session:
        await session.execute(text("CREATE TABLE job_runs (job_id integer NOT NULL, pid integer NOT NULL)"))
    procs = [await asyncio.to_thread(workers.start, "finish") for _ in range(2)]
    n = 2000
    async with hub.transaction() as session:
        ids = [(await hub.jobs.enqueue(session, "t.record", {"i": i})).id for i in range(n)]

    async def all_done() -> bool:
        return await count_jobs(hub, Job.status == "succeeded") == n

    await await_for(all_done, 120, f"{n} jobs to succeed", interval=0.2)
    async with hub.sessionmaker() as session:
        rows = (await session.execute(text("SELECT job_id, pid FROM job_runs"))).all()
        attempts = (await session.execute(select(Job.attempts, func.count()).group_by(Job.attempts))).all()
    assert len(rows) == n
    assert sorted(r.job_id for r in rows) == sorted(ids)  # every job ran, none twice
    assert attempts == [(1, n)]
    per_pid = {p.pid: sum(1 for r in rows if r.pid == p.pid) for p in procs}
    assert all(count > 0 for count in per_pid.values()), per_pid
