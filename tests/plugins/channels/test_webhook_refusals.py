"""A refused provider webhook writes nothing: no status, no history, no suppression, no consent.

The channel tests check that forged, unsigned, tampered or stale callbacks get 403. Here each
refusal is made against a real communication the hub sent, with the one event that would
change the most (delivered, undelivered to a landline, returned to sender, STOP), and every
table is compared before and after. The same event, correctly signed, then does change them,
so the comparison can see a write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Practice
from hub.messaging.models import AddressSuppression, Communication, ConsentRecord, InboundMessage
from hub.messaging.outbound import queue_communication
from hub.pims.models import Client, Patient
from hub.testing.fake_lob import FakeLob, sign_event
from hub.testing.fake_twilio import FakeTwilio
from hub.testing.fixtures_channels import TWILIO_FROM
from hub.testing.fixtures_core import database_rows
from hub.web.app import create_app

DAYTIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 in New York: outside quiet hours
PUBLIC = "https://hub.example-vets.test"
MOBILE = "+12025550143"
REMINDER = {"patient_name": "Rex", "service": "rabies vaccine", "due_date": "2026-03-09"}


class Sent:
    """A hub whose one communication went out over ``channel``; its app on a loopback port."""

    def __init__(self, hub: Hub, client: TestClient, comm_id: int) -> None:
        self.hub, self.client, self.comm_id = hub, client, comm_id

    async def communication(self) -> Communication:
        async with self.hub.sessionmaker() as s:
            comm = await s.get(Communication, self.comm_id)
        assert comm is not None
        return comm

    async def rows(self, model: Any) -> list[Any]:
        async with self.hub.sessionmaker() as s:
            return list((await s.execute(select(model))).scalars())


async def _sent(hub: Hub, channel: str) -> AsyncIterator[Sent]:
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        async with hub.transaction() as s:
            practice = Practice(slug="parkside", name="Parkside Vets", country="US",
                                timezone="America/New_York", address={})
            s.add(practice)
            await s.flush()
            owner = Client(practice_id=practice.id, external_id="ann", first_name="Ann",
                           last_name="Smith", status="active", email=None, phone_mobile=MOBILE,
                           address_line1="210 King St", city="San Francisco", region="CA",
                           postcode="94107", country="US")
            s.add(owner)
            s.add(Patient(practice_id=practice.id, external_id="ann-p0",
                          client_external_id="ann", name="Rex", status="active"))
            await s.flush()
            comm = await queue_communication(s, hub, client_id=owner.id, template="reminder",
                                             category="reminder", channels=(channel,),
                                             context=REMINDER)
            comm_id = comm.id
        assert await hub.jobs.run_until_idle() == 1
        yield Sent(hub, client, comm_id)
    finally:
        await client.close()


@pytest_asyncio.fixture
async def sms_sent(hub_factory, fake_twilio: FakeTwilio, sms_config) -> AsyncIterator[Sent]:
    hub = await hub_factory({"sms": sms_config(fake_twilio, public_url=PUBLIC)},
                            clock=FrozenClock(DAYTIME))
    async for sent in _sent(hub, "sms"):
        fake_twilio.reverse_proxy(PUBLIC, str(sent.client.make_url("")).rstrip("/"))
        yield sent


@pytest_asyncio.fixture
async def card_sent(hub_factory, fake_lob: FakeLob, postcard_config) -> AsyncIterator[Sent]:
    clock = FrozenClock(DAYTIME)
    fake_lob.clock = lambda: clock.now().timestamp()
    hub = await hub_factory({"postcard": postcard_config(fake_lob)}, clock=clock)
    async for sent in _sent(hub, "postcard"):
        yield sent


async def test_refused_twilio_status_callbacks_write_nothing(sms_sent: Sent, fake_twilio) -> None:
    comm = await sms_sent.communication()
    assert comm.status == "queued" and comm.provider_id
    url = fake_twilio.status_callback_url(comm.provider_id)
    landline = fake_twilio.status_params(comm.provider_id, "undelivered", error_code=30006)
    delivered = fake_twilio.status_params(comm.provider_id, "delivered")
    before = await database_rows(sms_sent.hub)

    responses = [
        await fake_twilio.post_form(url, landline, signed=False),
        await fake_twilio.post_form(url, landline, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        await fake_twilio.post_form(url, landline,
                                    signature=FakeTwilio(auth_token="not-it").sign(url, landline)),
        # signed over "delivered", sent as "undelivered"
        await fake_twilio.post_form(url, landline, signature=fake_twilio.sign(url, delivered)),
    ]
    assert [r.status for r in responses] == [403] * 4
    assert await database_rows(sms_sent.hub) == before

    # The genuine callback is applied: the comparison above could see a write.
    assert (await fake_twilio.post_form(url, landline)).status == 200
    assert (await sms_sent.communication()).status == "undelivered"
    assert [(r.kind, r.reason) for r in await sms_sent.rows(AddressSuppression)] == [
        ("sms", "invalid")
    ]


async def test_refused_twilio_inbound_stop_writes_nothing(sms_sent: Sent, fake_twilio) -> None:
    url = f"{PUBLIC}/webhooks/twilio/inbound"
    stop = fake_twilio.inbound_params(MOBILE, TWILIO_FROM, "STOP")
    before = await database_rows(sms_sent.hub)
    responses = [
        await fake_twilio.post_form(url, stop, signed=False),
        await fake_twilio.post_form(url, stop, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        await fake_twilio.post_form(url, stop, sign_url=str(sms_sent.client.make_url(
            "/webhooks/twilio/inbound"))),
    ]
    assert [r.status for r in responses] == [403] * 3
    assert await database_rows(sms_sent.hub) == before

    assert (await fake_twilio.post_form(url, stop)).status == 200
    assert [m.body for m in await sms_sent.rows(InboundMessage)] == ["STOP"]
    assert [(r.kind, r.address, r.reason) for r in await sms_sent.rows(AddressSuppression)] == [
        ("sms", MOBILE, "opt_out")
    ]
    assert [(r.channel, r.allowed) for r in await sms_sent.rows(ConsentRecord)] == [("sms", False)]


async def test_refused_lob_events_write_nothing(card_sent: Sent, fake_lob: FakeLob) -> None:
    comm = await card_sent.communication()
    assert comm.status == "processed" and comm.provider_id
    url = str(card_sent.client.make_url("/webhooks/lob"))
    now = int(fake_lob.clock())
    event = fake_lob.event_body(comm.provider_id, "postcard.returned_to_sender")
    ts = fake_lob.timestamp()
    tampered = fake_lob.event_body(comm.provider_id, "postcard.delivered")
    tampered_signature = sign_event(fake_lob.webhook_secret, ts, _json(tampered))
    tampered["event_type"]["id"] = "postcard.returned_to_sender"
    before = await database_rows(card_sent.hub)

    responses = [
        await fake_lob.send_event(url, "", "", body=event, signed=False),
        await fake_lob.send_event(url, "", "", body=event, secret="not-the-secret"),
        await fake_lob.send_event(url, "", "", body=event, signature="00" * 32),
        await fake_lob.send_event(url, "", "", body=event, timestamp=str(now - 301)),
        await fake_lob.send_event(url, "", "", body=event, timestamp=str(now + 301)),
        await fake_lob.send_event(url, "", "", body=tampered, timestamp=ts,
                                  signature=tampered_signature),
    ]
    assert [r.status for r in responses] == [403] * 6
    assert await database_rows(card_sent.hub) == before

    assert (await fake_lob.send_event(url, "", "", body=event)).status == 200
    assert (await card_sent.communication()).status == "returned_to_sender"
    assert [(r.kind, r.reason) for r in await card_sent.rows(AddressSuppression)] == [
        ("postal", "invalid")
    ]


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()
