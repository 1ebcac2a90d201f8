"""The services channel webhooks call: forward-only statuses, inbound replies, opt-outs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from hub.hookspecs import hookimpl
from hub.messaging import service, statuses
from hub.messaging.models import Communication, CommunicationStatus, InboundMessage
from hub.messaging.outbound import queue_communication
from plugins.channels.maildir import MaildirEmailChannel


def test_rank_table_is_forward_only() -> None:
    assert statuses.ALL_STATUSES == {
        "queued", "deferred", "suppressed", "sending", "sent", "delivered", "opened", "clicked", "bounced",
        "failed", "undelivered", "processed", "mailed", "in_transit", "in_local_area",
        "processed_for_delivery", "re_routed", "returned_to_sender", "canceled", "read"}
    assert statuses.is_forward("sent", "delivered") and statuses.is_forward("delivered", "read")
    assert not statuses.is_forward("delivered", "sent")
    assert not statuses.is_forward("delivered", "delivered")
    assert not statuses.is_forward("undelivered", "delivered")  # terminal stays terminal
    assert statuses.is_forward("mailed", "in_transit") and not statuses.is_forward("in_transit", "mailed")
    assert statuses.is_forward("processed", "returned_to_sender")


async def test_record_status_out_of_order_and_event(world_factory, client_maker, reminder_context) -> None:
    seen: list[str] = []

    class Listener:
        @hookimpl
        def vethub_delivery_status(self, hub, communication, status):
            seen.append(status)

    world = await world_factory()
    hub = world.hub
    hub.pm.register(Listener(), name="listener")
    cid = await client_maker(hub, world.practice_id, "ann")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        comm_id = comm.id
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        provider_id = (await s.get(Communication, comm_id)).provider_id
    for status, expected in (("delivered", True), ("sent", False), ("delivered", False), ("opened", True)):
        async with hub.transaction() as s:
            moved = await service.record_status(s, hub, channel="email", provider_id=provider_id, status=status,
                                                provider_status=status)
        assert moved is expected, status
    async with hub.transaction() as s:
        assert not await service.record_status(s, hub, channel="email", provider_id="<nope>", status="delivered",
                                               provider_status="delivered")
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, comm_id)).status == "opened"
        rows = (await s.execute(select(CommunicationStatus.status, CommunicationStatus.applied)
                                .where(CommunicationStatus.communication_id == comm_id)
                                .order_by(CommunicationStatus.id))).all()
    assert [tuple(r) for r in rows] == [("queued", True), ("sending", True), ("sent", True), ("delivered", True),
                                        ("sent", False), ("delivered", False), ("opened", True)]
    assert seen == ["sent", "delivered", "opened"]


async def test_inbound_reply_matched_by_phone(world, client_maker, reminder_context) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "ann", mobile="+12025550143")  # synced as E.164
    async with hub.transaction() as s:
        msg = await service.record_inbound(s, hub, channel="sms", from_address="+12025550143",
                                           to_address="+15005550006", body="Yes please", provider_id="SM1",
                                           raw={"Body": "Yes please"})
        again = await service.record_inbound(s, hub, channel="sms", from_address="+12025550143",
                                             to_address="+15005550006", body="Yes please", provider_id="SM1",
                                             raw={})
        assert again.id == msg.id  # a retried webhook is stored once
    assert msg.client_id == cid and msg.practice_id == world.practice_id and msg.communication_id is None
    async with hub.sessionmaker() as s:
        assert len((await s.execute(select(InboundMessage))).scalars().all()) == 1


async def test_stop_then_start(world, client_maker, reminder_context) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "sam", mobile="+12025550177")
    async with hub.transaction() as s:
        await service.set_address_opt_out(s, hub, kind="sms", address="+12025550177", opted_out=True,
                                          source="sms_keyword", detail="STOP")
        stopped = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                            channels=("sms",), context=reminder_context)
        await service.set_address_opt_out(s, hub, kind="sms", address="+1 (202) 555-0177", opted_out=False,
                                          source="sms_keyword", detail="START")
        started = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                            channels=("sms",), context=reminder_context)
    assert stopped.status == "suppressed" and stopped.verdict_reasons[0]["code"] == "address_opted_out"
    assert started.status == "queued" and started.body_text.endswith("Reply STOP to opt out.")


async def test_maildir_is_the_default_without_an_email_section(hub_factory, tmp_path: Path) -> None:
    hub = await hub_factory()
    channel = hub.channels["email"]
    assert isinstance(channel, MaildirEmailChannel)
    assert channel.path == Path(hub.data_dir) / "maildir"
    assert "sms" not in hub.channels and "postcard" not in hub.channels


async def test_returned_postcard_marks_the_address_invalid(world, client_maker, reminder_context) -> None:
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "pam")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("postcard",), context=reminder_context)
        assert comm.status == "queued" and comm.postal_address["address_line1"] == "1 Main St"
        assert "Rex is due for rabies vaccine" in comm.postcard_front_html
        comm.provider_id = "psc_123"
    for status in ("mailed", "in_transit", "returned_to_sender"):
        async with hub.transaction() as s:
            assert await service.record_status(s, hub, channel="postcard", provider_id="psc_123", status=status,
                                               provider_status=f"postcard.{status}")
    async with hub.transaction() as s:
        again = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                          channels=("postcard", "email"), context=reminder_context)
    assert again.channel == "email"  # the postcard address is suppressed; email is next
    assert [r["code"] for r in again.verdict_reasons][:1] == ["address_invalid"]


async def test_mark_invalid_twice_raises_one_event(world) -> None:
    from hub.db.models import HubEvent

    hub = world.hub
    for _ in range(3):
        async with hub.transaction() as s:
            await service.mark_address_invalid(s, hub, kind="email", address="Gone@Example.org",
                                               reason="550 5.1.1", source="bounce")
    async with hub.sessionmaker() as s:
        events = (await s.execute(select(HubEvent).where(HubEvent.kind == "messaging.address_invalid"))).scalars().all()
    assert len(events) == 1
