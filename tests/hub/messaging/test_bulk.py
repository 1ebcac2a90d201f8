"""Queueing a campaign in bulk: a handful of statements whatever its size, and every row the
right client's (ids, history rows and send jobs matched to their own message)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select

from hub.db.models import Job
from hub.messaging import service
from hub.messaging.models import Communication, CommunicationStatus
from hub.messaging.outbound import SEND_JOB, queue_bulk, queue_many

from .conftest import World, add_client


async def _clients(world: World, n: int) -> dict[int, str]:
    """n clients: most reachable by email, every 5th with a bounced email (falls back to
    SMS), every 7th comms-disabled in the PIMS (suppressed); id -> key."""
    out = {}
    for i in range(n):
        key = f"c{i:03d}"
        cid = await add_client(world.hub, world.practice_id, key, comms_disabled=i % 7 == 3,
                               mobile=f"+1202555{i:04d}")
        if i % 5 == 1:
            async with world.hub.transaction() as s:
                await service.mark_address_invalid(s, world.hub, kind="email",
                                                   address=f"{key}@example.org", reason="550",
                                                   source="bounce")
        out[cid] = key
    return out


def _contexts(keys: dict[int, str]) -> dict[int, dict[str, Any]]:
    return {cid: {"patient_name": f"Pet of {key}", "service": "rabies vaccine",
                  "due_date": "2026-03-09"} for cid, key in keys.items()}


class Statements:
    def __init__(self, world: World) -> None:
        self.count = 0
        self.engine = world.hub.engine.sync_engine

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def _check_rows(world: World, keys: dict[int, str], ids: dict[int, int]) -> None:
    """Each stored message, history row and job belongs to the client it was queued for."""
    async with world.hub.sessionmaker() as s:
        comms = {c.id: c for c in (await s.execute(select(Communication).where(
            Communication.id.in_(list(ids.values()))))).scalars()}
        history = (await s.execute(select(CommunicationStatus.communication_id,
                                          CommunicationStatus.status).where(
            CommunicationStatus.communication_id.in_(list(ids.values()))))).all()
        jobs = (await s.execute(select(Job).where(Job.kind == SEND_JOB))).scalars().all()
    assert len(comms) == len(keys)
    assert sorted(h[0] for h in history) == sorted(ids.values())  # one first row each
    assert all(h[1] == comms[h[0]].status for h in history)
    job_of = {j.payload["communication_id"]: j for j in jobs}
    for cid, key in keys.items():
        comm = comms[ids[cid]]
        assert comm.client_id == cid
        assert comm.context["patient_name"] == f"Pet of {key}"
        if comm.status == "suppressed":
            assert comm.body_text is None and comm.id not in job_of
            continue
        assert f"Pet of {key} is due" in (comm.body_text or "")
        assert comm.address in (f"{key}@example.org", f"+1202555{int(key[1:]):04d}")
        assert job_of[comm.id].idempotency_key == f"communication:{comm.id}"
    statuses = {c.status for c in comms.values()}
    channels = {c.channel for c in comms.values() if c.status == "queued"}
    assert statuses == {"queued", "suppressed"} and channels == {"email", "sms"}


async def test_queue_many_in_a_few_statements(world: World) -> None:
    hub = world.hub
    keys = await _clients(world, 40)
    with Statements(world) as seen:
        async with hub.transaction() as s:
            comms = await queue_many(s, hub, client_ids=list(keys), template="reminder",
                                     category="reminder", channels=("email", "sms"),
                                     per_client_context=_contexts(keys), created_by="test")
            # the objects handed back are the stored rows, tracked like any loaded object:
            # nothing pending until one is changed
            assert not s.new and not s.dirty
            assert all(c in s for c in comms)
            comms[0].created_by = "changed"
            assert list(s.dirty) == [comms[0]]
    # facts (clients, patients, consent, practices), suppressions per channel tried, the
    # communications, their history and their jobs: not one statement per message
    assert seen.count <= 14, seen.count
    assert [c.client_id for c in comms] == list(keys)
    await _check_rows(world, keys, {c.client_id: c.id for c in comms if c.client_id})
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, comms[0].id)).created_by == "changed"


async def test_queue_bulk_matches_each_message_to_its_client(world: World) -> None:
    hub = world.hub
    keys = await _clients(world, 30)
    async with hub.transaction() as s:
        queued = await queue_bulk(s, hub, client_ids=list(keys), template="reminder",
                                  category="reminder", channels=("email", "sms"),
                                  per_client_context=_contexts(keys))
    assert [q.client_id for q in queued] == list(keys)
    await _check_rows(world, keys, {q.client_id: q.id for q in queued})
    async with hub.sessionmaker() as s:
        stored = {c.id: c for c in (await s.execute(select(Communication))).scalars()}
    for q in queued:
        row = stored[q.id]
        assert (row.status, row.channel, row.verdict_reasons) == (q.status, q.channel,
                                                                   q.verdict_reasons)
