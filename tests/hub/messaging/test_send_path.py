"""The whole path: verdict, render, record, outbox job, SMTP into a real aiosmtpd sink."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from hub.db.models import HubEvent
from hub.messaging.models import (
    AddressSuppression,
    Communication,
    CommunicationStatus,
    ConsentRecord,
)
from hub.messaging.outbound import queue_communication, queue_email


async def test_reminder_email_goes_out_with_unsubscribe_headers(world, reminder_context, client_maker) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "ann")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         context=reminder_context)
        assert comm.status == "queued" and comm.channel == "email" and comm.verdict == "allow"
        comm_id = comm.id
    assert await hub.jobs.run_until_idle() == 1
    [mail] = world.sink.messages
    msg = mail.message
    assert mail.rcpt_tos == ["ann@example.org"]
    assert msg["Subject"] == "Parkside Vets: Rex is due for rabies vaccine"
    unsub = msg["List-Unsubscribe"]
    assert unsub.startswith("<http://127.0.0.1:8080/messaging/unsubscribe/") and "<mailto:hub@vet.example?subject=unsubscribe%20" in unsub
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = msg.iter_parts()
    assert "Dear Ann Smith" in text.get_content()
    assert "/messaging/preferences/" in text.get_content()
    assert "<strong>Rex</strong>" in html.get_content()
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        assert comm.status == "sent" and comm.provider_id == msg["Message-ID"]
        history = [h.status for h in (await s.execute(select(CommunicationStatus).where(
            CommunicationStatus.communication_id == comm_id).order_by(CommunicationStatus.id))).scalars()]
    assert history == ["queued", "sending", "sent"]
    # a replayed job sends nothing twice
    async with hub.transaction() as s:
        await hub.jobs.enqueue(s, "messaging.send", {"communication_id": comm_id})
    await hub.jobs.run_until_idle()
    assert len(world.sink.messages) == 1


async def test_account_email_to_a_practice_has_cc_and_no_unsubscribe(world) -> None:
    hub = world.hub
    async with hub.transaction() as s:
        comm = await queue_email(s, hub, to="desk@parkside.example", template="message",
                                 context={"subject": "Your account is approved", "body": "Welcome."},
                                 cc=["ops@company.example"], practice_id=world.practice_id)
        assert comm.status == "queued"
    await hub.jobs.run_until_idle()
    [mail] = world.sink.messages
    assert mail.rcpt_tos == ["desk@parkside.example", "ops@company.example"]
    assert mail.message["Cc"] == "ops@company.example"
    assert "List-Unsubscribe" not in mail.message
    assert mail.message.get_content_type() == "text/plain"


async def test_hard_bounce_marks_invalid_raises_event_and_falls_back_to_postcard(world, reminder_context,
                                                                                 client_maker) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "bob")
    world.sink.reject["bob@example.org"] = "550 5.1.1 No such user"
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email", "postcard"), context=reminder_context)
        first_id = comm.id
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        first = await s.get(Communication, first_id)
        assert first.status == "bounced" and "550" in first.last_error
        sup = (await s.execute(select(AddressSuppression))).scalars().all()
        assert [(x.kind, x.address, x.reason) for x in sup] == [("email", "bob@example.org", "invalid")]
        events = (await s.execute(select(HubEvent).where(HubEvent.kind == "messaging.address_invalid"))).scalars().all()
        assert len(events) == 1 and "bob@example.org" in events[0].message
        ledger = (await s.execute(select(ConsentRecord))).scalars().all()
        assert [(r.client_id, r.source, r.allowed) for r in ledger] == [(cid, "bounce", False)]
        fallback = (await s.execute(select(Communication).where(Communication.fallback_of_id == first_id))).scalar_one()
        # no postcard channel configured here: the fallback is recorded and fails, with its reason
        assert (fallback.channel, fallback.client_id, fallback.verdict) == ("postcard", cid, "allow")
        assert fallback.status == "failed" and fallback.last_error == "the postcard channel is not configured"
        history = (await s.execute(select(CommunicationStatus).where(
            CommunicationStatus.communication_id == fallback.id).order_by(CommunicationStatus.id))).scalars().all()
        assert [h.status for h in history] == ["queued", "sending", "failed"]
        assert history[-1].detail == {"reason": "rejected", "code": None, "permanent": True,
                                      "error": "the postcard channel is not configured"}
    # the next email to Bob is never attempted
    async with hub.transaction() as s:
        again = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                          channels=("email",), context=reminder_context)
        assert again.status == "suppressed"
        assert again.verdict_reasons[0]["code"] == "address_invalid"


async def test_transient_failure_retries_then_succeeds(world, reminder_context, client_maker) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "cat")
    world.sink.reject["cat@example.org"] = "451 4.3.0 Try later"
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        comm_id = comm.id
    await hub.jobs.run_until_idle()  # one attempt, then scheduled for later
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        assert comm.status == "sending" and "451" in comm.last_error
    del world.sink.reject["cat@example.org"]
    world.clock.advance(seconds=60)
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, comm_id)).status == "sent"
    assert len(world.sink.messages) == 1


async def test_opt_out_between_queue_and_send_stops_the_send(world, reminder_context, client_maker) -> None:
    from hub.messaging import service

    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "eve", email="Eve@Example.org")
    other = await client_maker(hub, world.practice_id, "fay")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        ok = await queue_communication(s, hub, client_id=other, template="reminder", category="reminder",
                                       channels=("email",), context=reminder_context)
        comm_id, ok_id = comm.id, ok.id
    async with hub.transaction() as s:  # a one-click from an earlier mail lands before the send
        await service.set_address_opt_out(s, hub, kind="email", address="eve@example.org", opted_out=True,
                                          source="one_click")
    await hub.jobs.run_until_idle()
    assert [m.rcpt_tos for m in world.sink.messages] == [["fay@example.org"]]
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        assert comm.status == "suppressed" and comm.verdict == "veto"
        assert comm.verdict_reasons[-1]["code"] == "address_opted_out"
        assert (await s.get(Communication, ok_id)).status == "sent"


async def test_provider_queued_is_never_resent(world, reminder_context, client_maker) -> None:
    """Twilio answers "queued": the communication is "queued" with the provider's id (the
    contract's status after the send), and a replayed job does not send it again."""
    from hub.messaging import service
    from hub.messaging.channel import SendResult

    calls: list[int] = []

    class FakeSms:
        name = "sms"

        async def send(self, message):
            calls.append(message.communication_id)
            return SendResult(provider_id=f"SM{message.communication_id:032d}", status="queued", detail={})

        def routes(self):
            return []

        async def health(self):
            return True, "fake"

        async def close(self):
            return None

    hub = world.hub
    hub.channels["sms"] = FakeSms()
    cid = await client_maker(hub, world.practice_id, "gus")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("sms",), context=reminder_context)
        comm_id = comm.id
    await hub.jobs.run_until_idle()
    async with hub.transaction() as s:
        await hub.jobs.enqueue(s, "messaging.send", {"communication_id": comm_id})
    await hub.jobs.run_until_idle()
    assert calls == [comm_id]
    async with hub.transaction() as s:
        comm = await s.get(Communication, comm_id)
        assert comm.status == "queued" and comm.provider_id.startswith("SM")
        assert await service.record_status(s, hub, channel="sms", provider_id=comm.provider_id, status="sent",
                                           provider_status="sent")
    async with hub.sessionmaker() as s:
        history = [(h.status, h.applied) for h in (await s.execute(select(CommunicationStatus).where(
            CommunicationStatus.communication_id == comm_id).order_by(CommunicationStatus.id))).scalars()]
    assert history == [("queued", True), ("sending", True), ("queued", True), ("sent", True)]


async def test_a_claimed_batch_starts_in_one_transaction_and_each_is_rechecked(world_factory, reminder_context,
                                                                              client_maker) -> None:
    """Jobs starting together share the transaction before their sends (the suppression
    re-check and ``sending``), and it still stops the one whose address opted out meanwhile;
    each of the others is sent once and recorded after its send."""
    from hub.messaging import service

    world = await world_factory({"jobs": {"workers": 1, "claim_batch": 6, "poll_interval": 60}})
    hub = world.hub
    keys = ["ann", "bea", "cy", "dot", "eve", "fin"]
    clients = {key: await client_maker(hub, world.practice_id, key) for key in keys}
    ids = {}
    async with hub.transaction() as s:
        for key in keys:
            comm = await queue_communication(s, hub, client_id=clients[key], template="reminder",
                                             category="reminder", channels=("email",), context=reminder_context)
            ids[key] = comm.id
    async with hub.transaction() as s:  # after queueing, before the send
        await service.set_address_opt_out(s, hub, kind="email", address="eve@example.org", opted_out=True,
                                          source="one_click")
    starts: list[int] = []

    def on_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE communications SET status") and "RETURNING" in statement:
            conn.info["send_start"] = True

    def on_commit(conn: Any) -> None:
        if conn.info.pop("send_start", False):
            starts.append(1)

    # every engine: on SQLite the write runs on run_transaction's engine in the database's thread
    listeners = [("before_cursor_execute", on_execute), ("commit", on_commit)]
    for name, fn in listeners:
        event.listen(Engine, name, fn)
    hub.jobs.start()
    try:
        async with asyncio.timeout(60):
            while True:
                async with hub.sessionmaker() as s:
                    done = (await s.execute(select(func.count()).select_from(Communication).where(
                        Communication.status.in_(["sent", "suppressed"])))).scalar_one()
                if done == len(keys):
                    break
                await asyncio.sleep(0.02)
    finally:
        await hub.jobs.stop()
        for name, fn in listeners:
            event.remove(Engine, name, fn)
    assert starts == [1]  # six jobs, one transaction before their sends
    assert sorted(m.rcpt_tos[0] for m in world.sink.messages) == [f"{k}@example.org" for k in keys if k != "eve"]
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, ids["eve"])).status == "suppressed"
        for key in keys:
            history = [h.status for h in (await s.execute(select(CommunicationStatus).where(
                CommunicationStatus.communication_id == ids[key]).order_by(CommunicationStatus.id))).scalars()]
            assert history == (["queued", "suppressed"] if key == "eve" else ["queued", "sending", "sent"])
