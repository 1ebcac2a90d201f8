"""A job killed in flight more than ``max_attempts`` times goes dead, and by one core rule its
domain object goes to a terminal failed state with the reason, in the same transaction; every
dead job is an operator event and a count in ``vethub_jobs_dead_total``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Company, HubEvent, Job, Practice
from hub.hookspecs import hookimpl
from hub.imaging.models import CASE_FAILED, CASE_ROUTED, Case, Study
from hub.jobs import JobKind
from hub.messaging.models import Communication
from hub.messaging.outbound import SEND_JOB, queue_email
from hub.pims.models import SyncRun
from hub.pims.plugin import JOB_KIND as SYNC_JOB
from plugins.dicom.plugin import FORWARD_JOB

MAX = 3
JOBS = {"max_attempts": MAX, "lease_seconds": 30}


def dead_count(kind: str, reason: str) -> float:
    return REGISTRY.get_sample_value("vethub_jobs_dead_total", {"kind": kind, "reason": reason}) or 0.0


async def job_of(hub: Hub, kind: str) -> Job:
    async with hub.sessionmaker() as s:
        return (await s.execute(select(Job).where(Job.kind == kind))).scalar_one()


async def dead_events(hub: Hub) -> list[HubEvent]:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(HubEvent).where(HubEvent.kind == "jobs.dead"))).scalars())


async def kill_past_max_attempts(hub: Hub, clock: FrozenClock, kind: str) -> None:
    """Claim the job ``max_attempts`` times with a worker that then dies (never finishes it);
    each time its lease expires. Then a live worker runs the queue."""
    for _ in range(MAX):
        claimed = await hub.jobs.claim(10, worker_id="doomed")
        assert [j.kind for j in claimed] == [kind]
        clock.advance(seconds=31)
    await hub.jobs.run_until_idle()


async def test_send_job_abandoned_leaves_communication_failed(hub_factory) -> None:
    """The defect of issue 19: the send job went dead, its communication stayed ``sending``."""
    hung: list[asyncio.StreamWriter] = []

    async def never_greets(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        hung.append(w)  # an SMTP server that accepts and says nothing: the send hangs

    server = await asyncio.start_server(never_greets, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = FrozenClock()
    try:
        hub = await hub_factory({"jobs": JOBS, "email": {
            "backend": "smtp", "host": "127.0.0.1", "port": port, "tls": "none",
            "from_address": "hub@vet.example", "timeout": 60}}, clock=clock)
        async with hub.transaction() as s:
            comm = await queue_email(s, hub, to="desk@parkside.example", template="message",
                                     context={"subject": "Hi", "body": "Hello"}, category="account")
        before = dead_count(SEND_JOB, "abandoned")
        # First attempt: the real handler marks the communication sending, then the worker dies.
        [job] = await hub.jobs.claim(1, worker_id="doomed")
        run = asyncio.create_task(hub.jobs.run_one(job, worker_id="doomed"))
        deadline = time.monotonic() + 10
        while (await status_of(hub, comm.id)) != "sending":
            assert time.monotonic() < deadline, "the send never started"
            await asyncio.sleep(0.02)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        clock.advance(seconds=31)
        for _ in range(MAX - 1):
            assert len(await hub.jobs.claim(1, worker_id="doomed")) == 1
            clock.advance(seconds=31)
        await hub.jobs.run_until_idle()
    finally:
        for w in hung:
            w.close()
        server.close()
        await server.wait_closed()
    job_row = await job_of(hub, SEND_JOB)
    assert job_row.status == "dead" and "abandoned" in job_row.last_error
    async with hub.sessionmaker() as s:
        row = await s.get(Communication, comm.id)
    assert row.status == "failed"
    assert "abandoned" in row.last_error
    assert dead_count(SEND_JOB, "abandoned") == before + 1
    [event] = await dead_events(hub)
    assert event.data["job_id"] == job_row.id and event.data["reason"] == "abandoned"
    async with hub.sessionmaker() as s:
        failed = (await s.execute(select(HubEvent).where(HubEvent.kind == "messaging.send_failed"))).scalar_one()
    assert failed.data["communication_id"] == comm.id


async def status_of(hub: Hub, comm_id: int) -> str:
    async with hub.sessionmaker() as s:
        return (await s.get(Communication, comm_id)).status


async def test_forward_job_abandoned_leaves_case_failed(hub_factory) -> None:
    clock = FrozenClock()
    hub = await hub_factory({"jobs": JOBS}, clock=clock)
    now = clock.now()
    async with hub.transaction() as s:
        practice = Practice(slug="p", name="P", country="US", timezone="UTC", address={})
        company = Company(slug="c", name="C", modalities=["DX"],
                          settings={"dicom_destination": {"host": "127.0.0.1", "port": 1, "ae_title": "X"}})
        s.add_all([practice, company])
        await s.flush()
        study = Study(practice_id=practice.id, study_instance_uid="1.2.3", first_received_at=now,
                      last_received_at=now, status="stable")
        s.add(study)
        await s.flush()
        # what a forward job's worker leaves when it dies mid-association
        case = Case(practice_id=practice.id, study_id=study.id, company_id=company.id,
                    status=CASE_ROUTED, submitted_by="test")
        s.add(case)
        await s.flush()
        await hub.jobs.enqueue(s, FORWARD_JOB, {"case_id": case.id})
    await kill_past_max_attempts(hub, clock, FORWARD_JOB)
    assert (await job_of(hub, FORWARD_JOB)).status == "dead"
    async with hub.sessionmaker() as s:
        row = await s.get(Case, case.id)
    assert row.status == CASE_FAILED


async def test_sync_job_abandoned_leaves_run_failed(hub_factory, tmp_path) -> None:
    clock = FrozenClock()
    drop = tmp_path / "drop"
    drop.mkdir()
    hub = await hub_factory({"jobs": JOBS, "practices": [{
        "slug": "p", "name": "P", "country": "US", "timezone": "UTC",
        "pims": [{"connector": "file_export", "name": "files", "drop_dir": str(drop),
                  "sync_every_seconds": 0}]}]}, clock=clock)
    async with hub.transaction() as s:
        practice_id = (await s.execute(select(Practice.id).where(Practice.slug == "p"))).scalar_one()
        # what a sync job's worker leaves when it dies mid-run: a run that stopped beating
        run = SyncRun(practice_id=practice_id, connector="files", full=False, trigger="schedule",
                      status="running", started_at=clock.now(), heartbeat_at=clock.now(), counts={})
        s.add(run)
        await hub.jobs.enqueue(s, SYNC_JOB, {"practice": "p", "connector": "files"})
    await kill_past_max_attempts(hub, clock, SYNC_JOB)
    assert (await job_of(hub, SYNC_JOB)).status == "dead"
    async with hub.sessionmaker() as s:
        row = await s.get(SyncRun, run.id)
        failed = (await s.execute(select(HubEvent).where(HubEvent.kind == "pims.sync_failed"))).scalars().all()
    assert row.status == "failed" and "abandoned" in row.error
    assert [e.data["reason"] for e in failed] == ["job_dead"]


@pytest.mark.parametrize("kind", ["accounts.switch_deadline", "accounts.account_changed",
                                  "imaging.study_stability"])
async def test_every_other_kind_goes_dead_with_an_event(hub_factory, kind: str) -> None:
    """Kinds whose job is not a domain object's only way forward still end dead, listed."""
    clock = FrozenClock()
    hub = await hub_factory({"jobs": JOBS}, clock=clock)
    assert kind in hub.jobs.handlers
    async with hub.transaction() as s:
        await hub.jobs.enqueue(s, kind, {"switch_request_id": 1, "history_id": 1, "study_id": 1})
    await kill_past_max_attempts(hub, clock, kind)
    assert (await job_of(hub, kind)).status == "dead"
    [event] = await dead_events(hub)
    assert event.data["job_kind"] == kind


async def test_a_failing_on_dead_still_leaves_the_job_dead(hub_factory) -> None:
    async def always_fails(_hub: Any, _job: Any) -> None:
        raise RuntimeError("provider down")

    async def broken_on_dead(_s: Any, _hub: Any, _job: Any, _reason: str) -> None:
        raise LookupError("domain row vanished")

    plugin = SimpleNamespace(vethub_job_handlers=hookimpl(
        lambda: {"test.fragile": JobKind(always_fails, on_dead=broken_on_dead)}))
    hub = await hub_factory({"jobs": {"max_attempts": 2}}, plugins=[("fragile", plugin)])
    async with hub.transaction() as s:
        await hub.jobs.enqueue(s, "test.fragile", {})
    deadline = time.monotonic() + 10
    while (await job_of(hub, "test.fragile")).status != "dead":
        assert time.monotonic() < deadline
        await hub.jobs.run_until_idle()
        async with hub.transaction() as s:  # skip the backoff wait
            job = (await s.execute(select(Job).where(Job.kind == "test.fragile"))).scalar_one()
            job.run_at = hub.clock.now() - timedelta(seconds=1)
    [event] = await dead_events(hub)
    assert event.data["reason"] == "max_attempts"
    assert "domain row vanished" in event.data["on_dead_error"]
