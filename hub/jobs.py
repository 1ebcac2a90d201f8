"""Durable jobs (the outbox): written in the caller's transaction, claimed by leased workers.

A claim is a lease: ``running`` with ``lease_until``. A worker that dies leaves its lease to
expire, after which any worker reclaims the job (at least once). On PostgreSQL claims use
``FOR UPDATE SKIP LOCKED`` so replicas never take the same job; on SQLite every transaction
holds the single write lock (see :mod:`hub.db.engine`), which serialises claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import Counter
from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from tenacity import wait_exponential_jitter

from hub.db.models import Job, Schedule
from hub.db.transactions import run_transaction
from hub.ops.dbstate import is_unavailable
from hub.ops.metrics import DB_UNAVAILABLE

if TYPE_CHECKING:
    from sqlalchemy import CursorResult
    from tenacity import RetryCallState

    from hub.config import JobsSection
    from hub.core import Hub

log = logging.getLogger(__name__)

JOBS_DONE = Counter("vethub_jobs_total", "Jobs finished by a worker", ["kind", "outcome"])
JOBS_DEAD = Counter("vethub_jobs_dead_total", "Jobs that went dead", ["kind", "reason"])
DEAD_EVENT = "jobs.dead"


class JobStatus(StrEnum):
    """A job's place in its life; DEAD: the queue gave up (attempts used up, or permanent)."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


STATUSES = tuple(s.value for s in JobStatus)


class Outcome(StrEnum):
    """What became of one run of a job (the ``outcome`` label of ``vethub_jobs_total``)."""

    SUCCEEDED = "succeeded"
    RETRY = "queued"  # failed, queued again after a backoff
    DEAD = "dead"
    LOST_LEASE = "lost-lease"  # finished after its lease passed to another worker: nothing written
    UNRECORDED = "unrecorded"  # the outcome could not be written: the lease expires, it runs again


#: ``run_one``'s answer when the caller records the success itself, in its next claim.
_DEFERRED = "deferred"


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help; the job goes dead at once."""


class RetryAfter(Exception):
    """Raised by a handler to retry after a given delay (a provider's Retry-After)."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:.1f}s")
        self.seconds = seconds


@dataclass(frozen=True)
class QueuedJob:
    """A job as :meth:`JobQueue.enqueue` wrote it (for an existing idempotency key: as it was)."""

    id: int
    kind: str
    payload: dict[str, Any]
    status: str
    run_at: datetime
    max_attempts: int
    idempotency_key: str | None


@dataclass(frozen=True)
class JobContext:
    """What a job handler is told about the job it runs, including which attempt this is."""
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


JobHandler = Callable[["Hub", JobContext], Awaitable[None]]
#: ``on_dead(session, hub, job, reason)``: take the job's domain object to its terminal failed
#: state. Runs in the transaction that marks the job dead, so the two are never seen apart.
DeadHandler = Callable[[AsyncSession, "Hub", JobContext, str], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    """A job kind's handler and, when its job stands for a domain object (a communication, a
    case, a sync run), what a dead job does to that object.

    The one rule: no object is left in a moving state (``sending``, ``forwarding``,
    ``running``) behind a dead job. ``vethub_job_handlers`` may return a ``JobKind`` where it
    returns a bare handler.
    """

    handler: JobHandler
    on_dead: DeadHandler | None = None


class DeathReason(StrEnum):
    """Why a job went dead (the ``reason`` label of ``vethub_jobs_dead_total``)."""

    PERMANENT = "permanent"  # the handler said retrying cannot help
    EXHAUSTED = "max_attempts"  # it failed max_attempts times
    ABANDONED = "abandoned"  # its workers died with it more than max_attempts times
    NO_HANDLER = "no_handler"


class _Abandoned(PermanentJobError):
    pass


class _NoHandler(PermanentJobError):
    pass


class _SuccessBatcher:
    """Group commit for job successes: jobs finishing together share one transaction.

    A commit costs a disk flush on PostgreSQL and the single write lock on SQLite; with many
    short jobs (emails) one transaction per success was a third of the queue's cost. Each caller
    still waits for its own row to be written before it returns, so nothing is reported done
    that is not.
    """

    MAX_BATCH = 500

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._pending: list[tuple[int, str, asyncio.Future[Outcome]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def succeed(self, job_id: int, worker_id: str) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((job_id, worker_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let jobs finishing in the same loop turn join this batch
            batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            try:
                held = await self.queue._mark_succeeded([(job_id, worker) for job_id, worker, _ in batch])
            except Exception as err:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for job_id, worker_id, future in batch:
                outcome = _fenced_outcome(job_id, worker_id, held)
                if not future.done():
                    future.set_result(outcome)


class JobQueue:
    """The durable job queue: handlers by kind, and workers that claim jobs under a lease."""
    def __init__(self, hub: Hub, handlers: Mapping[str, JobHandler] | None = None) -> None:
        self.hub = hub
        self.handlers: dict[str, JobHandler] = {}
        self.dead_handlers: dict[str, DeadHandler] = {}
        for kind, handler in (handlers or {}).items():
            self.register(kind, handler)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[int, asyncio.Task[str]] = {}
        self._unrecorded: dict[int, list[JobContext]] = {}  # per worker, see _worker
        self._finisher = _SuccessBatcher(self)
        self._expired_checked_at: datetime | None = None
        self._claim_failures = 0
        self._outage_logged = False
        settings = hub.config.jobs
        self._wait = wait_exponential_jitter(
            multiplier=settings.backoff_initial, max=settings.backoff_max, jitter=settings.backoff_initial
        )

    @property
    def settings(self) -> JobsSection:
        return self.hub.config.jobs

    def register(self, kind: str, handler: JobHandler | JobKind) -> None:
        if kind in self.handlers:
            raise ValueError(f"job kind {kind!r} has two handlers")
        if isinstance(handler, JobKind):
            if handler.on_dead is not None:
                self.dead_handlers[kind] = handler.on_dead
            handler = handler.handler
        self.handlers[kind] = handler

    # --- writing ------------------------------------------------------------------------------

    async def enqueue(
        self,
        session: AsyncSession,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> QueuedJob:
        """Write a job in the caller's transaction; an existing idempotency key returns that job.

        A Core ``INSERT … RETURNING`` on the session's connection: no caller needs the ORM
        object, and the unit of work (``add`` + ``flush``) cost more CPU than the insert.
        """
        values = self._row(kind, payload, run_at, delay, max_attempts, idempotency_key)
        self.wake_after_commit(session)
        conn = await session.connection()
        if idempotency_key is None:
            job_id = (await conn.execute(_INSERT_JOB, values)).scalar_one()
            return QueuedJob(job_id, kind, values["payload"], values["status"], values["run_at"],
                             values["max_attempts"], None)
        await conn.execute(_INSERT_ONCE[conn.dialect.name], values)
        row = (await conn.execute(
            select(Job.id, Job.kind, Job.payload, Job.status, Job.run_at, Job.max_attempts, Job.idempotency_key)
            .where(Job.idempotency_key == idempotency_key))).one()
        return QueuedJob(*row)

    def enqueue_sync(
        self,
        conn: Connection,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """:meth:`enqueue` for synchronous code on a Core connection (e.g. a function run by
        :func:`hub.db.transactions.run_transaction`), in the caller's transaction.

        It cannot see the commit, so it does not wake this process's idle workers: call
        :meth:`wake` after the transaction commits (without it the job still runs, at the
        workers' next poll).
        """
        values = self._row(kind, payload, run_at, None, None, idempotency_key)
        if idempotency_key is None:
            conn.execute(insert(Job).values(**values))
        else:
            conn.execute(_INSERT_ONCE[conn.dialect.name], values)

    def enqueue_many_sync(
        self, conn: Connection, kind: str, jobs: list[tuple[Mapping[str, Any], str, datetime]],
    ) -> None:
        """:meth:`enqueue_sync` of several jobs of one kind, each ``(payload, idempotency key,
        run at)``, in one ``executemany`` (a key already there is skipped): a batch of received
        instances arms a stability check for each new study in it."""
        rows = [self._row(kind, payload, run_at, None, None, key) for payload, key, run_at in jobs]
        conn.execute(_INSERT_ONCE[conn.dialect.name], rows)

    def wake(self) -> None:
        """Wake this process's idle workers: a job was committed that may be due."""
        self._wake.set()

    def _row(
        self,
        kind: str,
        payload: Mapping[str, Any] | None,
        run_at: datetime | None,
        delay: float | None,
        max_attempts: int | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        return dict(
            kind=kind,
            payload=dict(payload or {}),
            status=JobStatus.QUEUED.value,
            run_at=run_at or self.hub.clock.now() + timedelta(seconds=delay or 0),
            attempts=0,
            max_attempts=max_attempts or self.settings.max_attempts,
            idempotency_key=idempotency_key,
            created_at=self.hub.clock.now(),
        )

    def wake_after_commit(self, session: AsyncSession) -> None:
        """Wake this process's idle workers when ``session``'s transaction commits."""
        # Read by the one listener on every Session (_wake_after_commit): listening on each
        # session instead cost ~0.5 ms of CPU per enqueue, half the enqueue.
        session.sync_session.info[_WAKE] = self._wake

    async def ensure_schedule(
        self, session: AsyncSession, name: str, kind: str, payload: Mapping[str, Any],
        every_seconds: int, *, first_run_at: datetime | None = None,
    ) -> Schedule:
        """Create or update a periodic schedule; its ticks become jobs exactly once each.

        Replicas starting together all declare their schedules: the row is inserted with ON
        CONFLICT DO NOTHING (a plain get-then-add raised IntegrityError in the later replica).
        """
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(Schedule)
            .values(name=name, kind=kind, payload=dict(payload), every_seconds=every_seconds,
                    next_run_at=first_run_at or self.hub.clock.now(), enabled=True)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        stmt = select(Schedule).where(Schedule.name == name).execution_options(populate_existing=True)
        schedule = (await session.execute(stmt)).scalar_one()
        schedule.kind, schedule.payload, schedule.every_seconds = kind, dict(payload), every_seconds
        await session.flush()
        return schedule

    # --- claiming and running -----------------------------------------------------------------

    async def claim(self, limit: int = 1, worker_id: str | None = None, *,
                    succeeded: list[JobContext] | None = None) -> list[JobContext]:
        """Lease up to ``limit`` due jobs: jobs whose lease expired, then queued jobs by run_at.

        ``succeeded``: jobs this worker ran to success and has not recorded yet. Their success
        is written in the same transaction, fenced like every outcome, so a worker running one
        job after another commits once per job rather than twice; the list is emptied once that
        transaction has committed (on an error it is left as it was, for the next claim).

        Each kind is its own statement over an ordered range of ix_jobs_status_run_at. One query
        for ``queued OR lease expired`` cannot use the index's order, so it sorted the whole due
        backlog on every claim (260 ms a claim with 100,000 due jobs on PostgreSQL). Expired
        leases are looked for whenever nothing queued is due, and otherwise at least every
        quarter lease, so a busy queue cannot starve them.
        """
        now = self.hub.clock.now()
        worker_id = worker_id or self.worker_id
        last = self._expired_checked_at
        check_expired = last is None or (now - last).total_seconds() >= self.settings.lease_seconds / 4
        until = now + timedelta(seconds=self.settings.lease_seconds)
        done = [(job.id, worker_id) for job in succeeded or ()]

        def claim_in(conn: Connection) -> tuple[set[int], list[Any]]:
            held = _record_successes(conn, done, now) if done else set()
            rows: list[Any] = []
            for expired in ([True] if check_expired else []) + [False]:
                if len(rows) < limit:
                    rows += _lease(conn, expired, limit - len(rows), now, worker_id, until)
            if not rows and not check_expired and limit > 0:
                rows += _lease(conn, True, limit, now, worker_id, until)
            return held, rows

        # Core statements in one hand-off to the database (see run_transaction): an ORM
        # session, or a statement at a time, added CPU to every claim.
        held, rows = await run_transaction(self.hub.engine, claim_in)
        if succeeded:
            for job in succeeded:
                JOBS_DONE.labels(job.kind, _fenced_outcome(job.id, worker_id, held)).inc()
            succeeded.clear()
        if limit > 0 and (check_expired or not rows):
            self._expired_checked_at = now
        return [JobContext(r.id, r.kind, r.payload, r.attempts, r.max_attempts) for r in rows]

    async def run_one(self, job: JobContext, worker_id: str | None = None, *,
                      defer_success: Callable[[], bool] | None = None) -> str:
        """Run one claimed job and record its outcome: succeeded, queued (retry) or dead.

        When the handler succeeds and ``defer_success()`` says so, nothing is written and the
        answer is ``_DEFERRED``: the caller records the success with its next :meth:`claim`.
        """
        worker_id = worker_id or self.worker_id
        handler = self.handlers.get(job.kind)
        # The heartbeat task starts only once the job has run a third of its lease: most jobs
        # (a send) finish long before, and a task per job cost more than a timer.
        heartbeat: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self.settings.lease_seconds / 3,
            lambda: heartbeat.append(asyncio.create_task(self._heartbeat(job.id, worker_id))))
        try:
            try:
                if job.attempts > job.max_attempts:
                    raise _Abandoned(f"abandoned {job.attempts - 1} times (its worker died; lease expired)")
                if handler is None:
                    raise _NoHandler(f"no handler for job kind {job.kind!r}")
                await handler(self.hub, job)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # every failure is recorded, none escapes the worker
                outcome = await self._failed(job, err, worker_id)
            else:
                if defer_success is not None and defer_success():
                    return _DEFERRED  # counted in JOBS_DONE when the claim records it
                outcome = await self._finisher.succeed(job.id, worker_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The outcome could not be written (database gone): the lease expires and the job
            # runs again — at least once — rather than this worker dying with it.
            log.exception("job %s (%s): recording its outcome failed; it will be retried", job.id, job.kind)
            outcome = Outcome.UNRECORDED
        finally:
            timer.cancel()
            for beating in heartbeat:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
        JOBS_DONE.labels(job.kind, outcome).inc()
        return outcome

    async def _heartbeat(self, job_id: int, worker_id: str) -> None:
        """Extend the lease of a long job so no other worker reclaims it while it runs: at once
        (started a third of a lease into the job, see run_one), then every third of a lease."""
        period = self.settings.lease_seconds / 3
        while True:
            with contextlib.suppress(Exception):
                async with self.hub.transaction() as session:
                    await session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == JobStatus.RUNNING)
                        .values(lease_until=self.hub.clock.now() + timedelta(seconds=self.settings.lease_seconds))
                    )
            await asyncio.sleep(period)

    async def _failed(self, job: JobContext, err: Exception, worker_id: str) -> Outcome:
        message = f"{type(err).__name__}: {err}"
        if isinstance(err, PermanentJobError) or job.attempts >= job.max_attempts:
            if not isinstance(err, PermanentJobError):
                log.debug("%s", "".join(traceback.format_exception(err)))
            return await self._dead(job, worker_id, message, _death_reason(err))
        if isinstance(err, RetryAfter):
            delay = err.seconds
        else:
            # The wait strategy reads only attempt_number of tenacity's retry state.
            delay = self._wait(cast("RetryCallState", SimpleNamespace(attempt_number=job.attempts)))
        log.info("job %s (%s) attempt %d failed, retry in %.1fs: %s", job.id, job.kind, job.attempts, delay, message)
        run_at = self.hub.clock.now() + timedelta(seconds=delay)
        return await self._retry_at(job.id, worker_id, message, run_at)

    async def _retry_at(self, job_id: int, worker_id: str, last_error: str, run_at: datetime) -> Outcome:
        async with self.hub.engine.begin() as conn:
            # Fenced by locked_by: a worker whose lease was taken over does not overwrite.
            result = await conn.execute(
                update(Job).where(Job.id == job_id, Job.locked_by == worker_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, lease_until=None, last_error=last_error, run_at=run_at)
            )
        return _fenced_outcome(job_id, worker_id, {job_id} if result.rowcount else set(), Outcome.RETRY)

    async def _dead(self, job: JobContext, worker_id: str, message: str, reason: DeathReason) -> Outcome:
        """Mark the job dead, its domain object failed (``on_dead``) and record an operator
        event, in one transaction. Should ``on_dead`` itself fail, the job still goes dead
        (a second transaction), and the event says its object could not be updated."""
        on_dead = self.dead_handlers.get(job.kind)
        try:
            outcome = await self._dead_in_one(job, worker_id, message, reason, on_dead)
        except Exception as err:
            if on_dead is None:
                raise
            log.exception("job %s (%s): its on_dead handler failed", job.id, job.kind)
            outcome = await self._dead_in_one(
                job, worker_id, message, reason, None,
                handler_error=f"on_dead failed: {type(err).__name__}: {err}")
        if outcome == Outcome.DEAD:
            JOBS_DEAD.labels(job.kind, reason.value).inc()
        return outcome

    async def _dead_in_one(self, job: JobContext, worker_id: str, message: str, reason: DeathReason,
                           on_dead: DeadHandler | None, *, handler_error: str | None = None) -> Outcome:
        from hub import events

        now = self.hub.clock.now()
        async with self.hub.transaction() as session:
            result = await session.execute(
                update(Job).where(Job.id == job.id, Job.locked_by == worker_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.DEAD, lease_until=None, last_error=message, finished_at=now))
            if cast("CursorResult[Any]", result).rowcount == 0:
                return _fenced_outcome(job.id, worker_id, set())
            if on_dead is not None:
                await on_dead(session, self.hub, job, message)
            data = {"job_id": job.id, "job_kind": job.kind, "attempts": job.attempts,
                    "error": message, "on_dead_error": handler_error}
            await events.record(
                session, DEAD_EVENT, f"job {job.id} ({job.kind}) is dead after {job.attempts} attempt(s): "
                f"{message}" + (f"; {handler_error}" if handler_error else ""),
                practice_id=job.payload.get("practice_id") if isinstance(job.payload.get("practice_id"), int) else None,
                data=data, reason=reason.value, level=logging.WARNING)
        return Outcome.DEAD

    async def _mark_succeeded(self, batch: list[tuple[int, str]]) -> set[int]:
        """Record many successes in one transaction; returns the ids this process still held."""
        now = self.hub.clock.now()
        return await run_transaction(self.hub.engine, lambda conn: _record_successes(conn, batch, now))

    async def tick_schedules(self) -> int:
        """Turn due schedule rows into jobs; safe with several replicas.

        A read comes first and the write transaction only when a schedule is due: the
        scheduler ticks every second, and on SQLite a transaction takes the database's one
        write lock even when it finds nothing, which held the DICOM committer up in SQLite's
        busy handler (up to 100 ms a sleep) once a second (docs/performance.md).
        """
        now = self.hub.clock.now()
        if not await self._schedule_due(now):
            return 0
        fired = 0
        async with self.hub.transaction() as session:
            stmt = select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            for schedule in (await session.execute(stmt)).scalars():
                key = f"schedule:{schedule.name}:{schedule.next_run_at.isoformat()}"
                await self.enqueue(session, schedule.kind, schedule.payload, idempotency_key=key)
                step = timedelta(seconds=schedule.every_seconds)
                nxt = schedule.next_run_at + step
                if nxt <= now:  # the hub was down for several ticks: fire once, not for each
                    nxt = now + step
                schedule.next_run_at = nxt
                fired += 1
        return fired

    async def _schedule_due(self, now: datetime) -> bool:
        """Whether an enabled schedule is due, read without a lock."""
        return await self._any_row((_SCHEDULE_DUE,), now)

    async def _any_row(self, statements: tuple[Any, ...], now: datetime) -> bool:
        """Whether any of ``statements`` finds a row at ``now``, read without a lock; True on
        error (the write that follows meets it again and reports it, or backs off)."""
        try:
            return await self.hub.read(lambda conn: any(
                conn.execute(stmt, {"now": now}).first() is not None for stmt in statements))
        except Exception:  # noqa: BLE001 - see above
            return True

    async def run_until_idle(self, max_jobs: int = 100_000) -> int:
        """Run every due job in this task until none is due (tests, one-shot commands)."""
        done = 0
        while done < max_jobs:
            await self.tick_schedules()
            jobs = await self.claim(1, worker_id=f"{self.worker_id}:inline")
            if not jobs:
                return done
            await self.run_one(jobs[0], worker_id=f"{self.worker_id}:inline")
            done += 1
        return done

    # --- workers ------------------------------------------------------------------------------

    def start(self, workers: int | None = None) -> None:
        count = self.settings.workers if workers is None else workers
        self._stopping.clear()
        for i in range(count):
            self._tasks.append(asyncio.create_task(self._worker(i), name=f"vethub-worker-{i}"))
        if count:
            self._tasks.append(asyncio.create_task(self._scheduler(), name="vethub-scheduler"))

    async def _worker(self, index: int) -> None:
        # The batch's last success is recorded by the next claim (one commit per job fewer);
        # what a stopping worker could not record, stop() records.
        done = self._unrecorded.setdefault(index, [])
        while True:
            stopping = self._stopping.is_set()
            if stopping and not done:
                return
            try:
                jobs = await self.claim(0 if stopping else self.settings.claim_batch, succeeded=done)
            except Exception as err:
                if stopping:
                    return
                await self._idle(self._claim_failed(index, err))
                continue
            self._claim_recovered()
            if stopping:
                return
            if not jobs:
                await self._wait_for_work(done)
                continue
            if self._stopping.is_set():  # claimed while stop() began: not one of its in-flight jobs
                for job in jobs:
                    await self._release(job.id)
                continue  # record the successes still unrecorded, then return
            done += await self._run_batch(jobs)

    async def _run_batch(self, jobs: list[JobContext]) -> list[JobContext]:
        """Run a claimed batch concurrently; returns the successes left for the next claim.

        Only the job finishing last defers its success: the others are recorded as they finish
        (group commit), so no finished job waits on a slow one with its lease running down.
        """
        running = len(jobs)

        async def run(job: JobContext) -> str:
            nonlocal running
            try:
                return await self.run_one(job, defer_success=lambda: running == 1)
            finally:
                running -= 1

        tasks = {job.id: asyncio.create_task(run(job)) for job in jobs}
        self._in_flight.update(tasks)
        try:
            await asyncio.shield(asyncio.gather(*tasks.values(), return_exceptions=True))
        except asyncio.CancelledError:
            if not all(task.done() for task in tasks.values()):
                raise
        finally:
            for job_id in tasks:
                self._in_flight.pop(job_id, None)
        return [job for job in jobs
                if not tasks[job.id].cancelled() and tasks[job.id].exception() is None
                and tasks[job.id].result() == _DEFERRED]

    def _claim_failed(self, index: int, err: Exception) -> float:
        """Back off exponentially (to ``backoff_max``, at least 30 s) while claims fail; an
        unreachable database is logged once when it goes and once when it comes back."""
        self._claim_failures += 1
        if is_unavailable(err):
            DB_UNAVAILABLE.labels("jobs").inc()
            if not self._outage_logged:
                self._outage_logged = True
                log.error("database unreachable, job workers back off until it is back: %s", err)
        else:
            log.exception("worker %d could not claim jobs; retrying", index)
        cap = max(30.0, self.settings.backoff_max)
        return min(cap, self.settings.poll_interval * 4 * 2.0 ** min(self._claim_failures - 1, 16))

    def _claim_recovered(self) -> None:
        if self._claim_failures:
            self._claim_failures = 0
            if self._outage_logged:
                self._outage_logged = False
                log.warning("database reachable again; job workers resume")

    async def _idle(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if woken or stopping; True when woken or stopping."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                stop = asyncio.create_task(self._stopping.wait())
                wake = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    wake.cancel()
                return True
        return False

    async def _wait_for_work(self, unrecorded: list[JobContext]) -> None:
        """Idle until woken, or until a poll on the read engine sees a job to claim.

        A claim is a write transaction: on SQLite it takes the database's one write lock even
        when it finds nothing, and every idle worker polling that way held the lock often
        enough to keep the DICOM committer waiting in SQLite's busy handler, which sleeps up to
        100 ms at a time (docs/performance.md). A poll that only reads takes no lock; the
        claim that follows it is still the fenced, leased one. A wake-up (a job committed in
        this process, a schedule come due) goes straight to the claim, as do successes still
        to be recorded.
        """
        while not await self._idle(self.settings.poll_interval) and not unrecorded:
            if await self._claimable():
                return

    async def _claimable(self) -> bool:
        """Whether a job is due or a lease has expired, read without a lock."""
        return await self._any_row(_CLAIMABLE, self.hub.clock.now())

    async def _scheduler(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.tick_schedules():
                    self._wake.set()
            except Exception as err:
                if not is_unavailable(err):  # an outage is logged once, by the workers
                    log.exception("schedule tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stopping.wait()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let in-flight jobs finish within the grace period; release the rest."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._stopping.set()
        in_flight = list(self._in_flight.items())
        if in_flight:
            log.info("waiting up to %.0fs for %d in-flight job(s)", grace, len(in_flight))
            _done, pending = await asyncio.wait([t for _, t in in_flight], timeout=grace)
            for job_id, task in in_flight:
                if task in pending:
                    task.cancel()
                    await self._release(job_id)
        # Workers return by themselves once their last successes are recorded; one stuck on
        # an unreachable database is cancelled, and its successes are tried once more here.
        workers = [t for t in self._tasks if t.get_name().startswith("vethub-worker-")]
        if workers:
            await asyncio.wait(workers, timeout=max(grace, self.settings.poll_interval))
        for background in self._tasks:
            background.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for done in self._unrecorded.values():
            with contextlib.suppress(Exception):
                await self.claim(0, succeeded=done)
            if done:
                log.warning("%d job success(es) could not be recorded; their leases expire and they run again",
                            len(done))
                done.clear()

    async def _release(self, job_id: int) -> None:
        """Give an interrupted job back at once, without counting the interrupted attempt."""
        with contextlib.suppress(Exception):
            async with self.hub.transaction() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.locked_by == self.worker_id, Job.status == JobStatus.RUNNING)
                    .values(status=JobStatus.QUEUED, lease_until=None, run_at=self.hub.clock.now(),
                            attempts=Job.attempts - 1, last_error="released at shutdown")
                )


# --- operator functions (CLI, API) -------------------------------------------------------------


async def list_jobs(session: AsyncSession, status: str | None = None, kind: str | None = None,
                    limit: int = 100) -> list[Job]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    return list((await session.execute(stmt)).scalars())


async def retry_jobs(session: AsyncSession, now: datetime, ids: list[int] | None = None,
                     all_dead: bool = False) -> int:
    """Replay dead jobs: back to queued with a fresh set of attempts."""
    stmt = update(Job).where(Job.status == JobStatus.DEAD)
    if not all_dead:
        stmt = stmt.where(Job.id.in_(ids or []))
    result = await session.execute(
        stmt.values(status=JobStatus.QUEUED, attempts=0, run_at=now, finished_at=None, lease_until=None, locked_by=None)
    )
    return cast("CursorResult[Any]", result).rowcount or 0


def _record_successes(conn: Connection, batch: list[tuple[int, str]], now: datetime) -> set[int]:
    """Mark jobs succeeded, each fenced by its worker's lease; returns the ids still held."""
    by_worker: dict[str, list[int]] = {}
    for job_id, worker_id in batch:
        by_worker.setdefault(worker_id, []).append(job_id)
    held: set[int] = set()
    for worker_id, ids in by_worker.items():
        result = conn.execute(_SUCCEEDED, {"ids": ids, "worker": worker_id, "now": now})
        held |= {row[0] for row in result}
    return held


def _lease(conn: Connection, expired: bool, limit: int, now: datetime, worker_id: str,
           until: datetime) -> list[Any]:
    stmt = _lease_statement(conn.dialect.name, expired)
    return list(conn.execute(stmt, {"now": now, "limit": limit, "worker": worker_id, "until": until}).all())


# Statements built once: building them per claim cost ~0.4 ms of CPU, about as much as running
# them (their compiled form is cached either way).
_SUCCEEDED = (
    update(Job)
    .where(Job.id.in_(bindparam("ids", expanding=True)), Job.locked_by == bindparam("worker"),
           Job.status == JobStatus.RUNNING)
    .values(status=JobStatus.SUCCEEDED, lease_until=None, last_error=None, finished_at=bindparam("now"))
    .returning(Job.id)
)


@functools.cache
def _lease_statement(dialect: str, expired: bool) -> Any:
    """Lease up to ``:limit`` jobs: with an expired lease, or queued and due, oldest first."""
    if expired:
        due, order = and_(Job.status == JobStatus.RUNNING, Job.lease_until < bindparam("now")), Job.lease_until
    else:
        due, order = and_(Job.status == JobStatus.QUEUED, Job.run_at <= bindparam("now")), Job.run_at
    pick = select(Job.id).where(due).order_by(order, Job.id).limit(bindparam("limit"))
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(Job)
        .where(Job.id.in_(pick.scalar_subquery()))
        .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, locked_by=bindparam("worker"),
                lease_until=bindparam("until"))
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
    )


#: Whether anything is claimable: the two ranges of ix_jobs_status_run_at a claim leases from.
_CLAIMABLE = (
    select(Job.id).where(Job.status == JobStatus.QUEUED, Job.run_at <= bindparam("now")).limit(1),
    select(Job.id).where(Job.status == JobStatus.RUNNING, Job.lease_until < bindparam("now")).limit(1),
)


#: Whether a schedule is due (the scheduler's tick reads this before it writes).
_SCHEDULE_DUE = (
    select(Schedule.name)
    .where(Schedule.enabled.is_(True), Schedule.next_run_at <= bindparam("now"))
    .limit(1)
)


def _fenced_outcome(job_id: int, worker_id: str, held: set[int], written: Outcome = Outcome.SUCCEEDED) -> Outcome:
    """``written`` when the fenced update found the job still this worker's, else lost-lease
    (reported: another worker holds the job now and may run it again)."""
    if job_id in held:
        return written
    log.warning("job %s finished by %s after its lease passed to another worker", job_id, worker_id)
    return Outcome.LOST_LEASE


def _death_reason(err: Exception) -> DeathReason:
    if isinstance(err, _Abandoned):
        return DeathReason.ABANDONED
    if isinstance(err, _NoHandler):
        return DeathReason.NO_HANDLER
    if isinstance(err, PermanentJobError):
        return DeathReason.PERMANENT
    return DeathReason.EXHAUSTED


#: Built once: constructing the statement per job cost more than running it.
_INSERT_JOB = insert(Job).returning(Job.id)


_WAKE = "vethub_wake"


@sa_event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    wake = session.info.pop(_WAKE, None)
    if wake is not None:
        wake.set()


def _insert_once(dialect: str) -> Any:
    """INSERT of a job row that does nothing when its idempotency key exists."""
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert_(Job).on_conflict_do_nothing(index_elements=["idempotency_key"])


#: Built once, the values bound at execution: a statement built per job with ``.values()``
#: cost more CPU than its insert (0.3 ms to build, as much again to key the compiled cache),
#: paid by the DICOM commit thread for every new study's stability check.
_INSERT_ONCE = {name: _insert_once(name) for name in ("sqlite", "postgresql")}
