"""The SMS channel against Twilio's verified behaviour (docs/providers/twilio.md): problem-details
errors, shared-key webhook signatures, replayed inbound messages, keywords with punctuation, and
replies attributed to a practice only when that is unambiguous."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import HubEvent, Practice
from hub.messaging.channel import ChannelError
from hub.messaging.models import AddressSuppression, ConsentRecord, InboundMessage
from hub.messaging.outbound import queue_communication
from hub.pims.models import Client, Patient
from hub.testing.fake_twilio import FakeTwilio
from hub.testing.fixtures_channels import TWILIO_FROM
from hub.web.app import create_app
from plugins.channels.sms import SmsConfig, keyword_kind
from tests.plugins.channels.test_sms import DAYTIME, PUBLIC, REMINDER, sms

INBOUND = f"{PUBLIC}/webhooks/twilio/inbound"
MOBILE = "+12025550143"
OAK_NUMBER = "+15005550007"


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("setup", "to", "expected"), [
    (lambda f: f.block(TWILIO_FROM, "+15551230001"), "+15551230001", ("opted_out", True, 21610)),
    (lambda f: None, "+15005550001", ("invalid_address", True, 21211)),
    (lambda f: f.fail_next(1, status=429, retry_after=3), "+15551230001",
     ("transient", False, 20429)),
    (lambda f: f.fail_next(1, status=503), "+15551230001", ("transient", False, 20500)),
])
async def test_problem_details_errors_map_like_classic_ones(hub_factory, fake_twilio, sms_config,
                                                            setup, to, expected) -> None:
    hub = await hub_factory({"sms": sms_config(fake_twilio)})
    for problem in (False, True):
        fake_twilio.problem_details = problem
        setup(fake_twilio)
        with pytest.raises(ChannelError) as info:
            await hub.channels["sms"].send(sms(to=to))
        body = fake_twilio.requests[-1].response
        assert ("title" in body) is problem  # the SDK raised the other exception class
        assert (info.value.reason, info.value.permanent, info.value.code) == expected


# -- shared-key signatures -------------------------------------------------------------------

async def _hub_on(hub_factory, fake: FakeTwilio, sms_config, **section) -> tuple[Hub, TestClient]:
    hub = await hub_factory({"sms": sms_config(fake, public_url=PUBLIC, **section)})
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    fake.reverse_proxy(PUBLIC, str(client.make_url("")).rstrip("/"))
    return hub, client


async def test_shared_key_signatures(hub_factory, fake_twilio, sms_config, caplog) -> None:
    hub, client = await _hub_on(hub_factory, fake_twilio, sms_config,
                                webhook_key="shared-secret", webhook_key_id="webhooks_sharedkey_1")
    try:
        result = await hub.channels["sms"].send(sms())
        # classic Auth Token signatures still work beside the key
        assert (await fake_twilio.send_status(result.provider_id, "sent")).status == 200
        fake_twilio.use_shared_key("webhooks_sharedkey_1", "shared-secret")
        assert (await fake_twilio.send_status(result.provider_id, "delivered")).status == 200
        fake_twilio.use_shared_key("webhooks_sharedkey_1", "another-secret")
        assert (await fake_twilio.send_status(result.provider_id, "sent")).status == 403
        fake_twilio.use_shared_key("webhooks_sharedkey_2", "shared-secret")
        assert (await fake_twilio.send_status(result.provider_id, "sent")).status == 403
        assert "not the configured [sms] webhook_key_id" in caplog.text
    finally:
        await client.close()


async def test_shared_key_not_configured_is_refused_loudly(hub_factory, fake_twilio, sms_config,
                                                           caplog) -> None:
    caplog.set_level(logging.WARNING, logger="plugins.channels.sms")
    hub, client = await _hub_on(hub_factory, fake_twilio, sms_config)
    try:
        result = await hub.channels["sms"].send(sms())
        fake_twilio.use_shared_key("webhooks_sharedkey_1", "shared-secret")
        assert (await fake_twilio.send_status(result.provider_id, "sent")).status == 403
        [record] = [r for r in caplog.records if "refused" in r.getMessage()]
        assert record.levelno == logging.ERROR
        assert "webhook_key is not set" in record.getMessage()
    finally:
        await client.close()


# -- inbound replays and keywords ------------------------------------------------------------

@dataclass
class Two:
    """Practices oak and elm; a client of each with the same mobile number (a shared family
    phone, or one owner at two practices)."""

    hub: Hub
    client: TestClient
    fake: FakeTwilio
    practices: dict[str, int]
    clients: dict[str, int]

    async def text(self, practice: str) -> None:
        async with self.hub.transaction() as s:
            await queue_communication(s, self.hub, client_id=self.clients[practice],
                                      template="reminder", category="reminder",
                                      channels=("sms",), context=REMINDER)
        await self.hub.jobs.run_until_idle()

    async def inbound(self) -> list[InboundMessage]:
        async with self.hub.sessionmaker() as s:
            return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id)))
                        .scalars())

    async def ledger(self) -> list[ConsentRecord]:
        async with self.hub.sessionmaker() as s:
            return list((await s.execute(select(ConsentRecord).order_by(ConsentRecord.id)))
                        .scalars())


async def _two(hub_factory, fake: FakeTwilio, sms_config, **section) -> Two:
    hub = await hub_factory({"sms": sms_config(fake, public_url=PUBLIC, **section)},
                            clock=FrozenClock(DAYTIME))
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    fake.reverse_proxy(PUBLIC, str(client.make_url("")).rstrip("/"))
    practices, clients = {}, {}
    async with hub.transaction() as s:
        for slug in ("oak", "elm"):
            practice = Practice(slug=slug, name=f"{slug.title()} Vets", country="US",
                                timezone="America/New_York", address={})
            s.add(practice)
            await s.flush()
            owner = Client(practice_id=practice.id, external_id="ann", first_name="Ann",
                           last_name="Smith", status="active", phone_mobile=MOBILE, country="US")
            s.add(owner)
            s.add(Patient(practice_id=practice.id, external_id="p", client_external_id="ann",
                          name="Rex", status="active"))
            await s.flush()
            practices[slug], clients[slug] = practice.id, owner.id
    return Two(hub, client, fake, practices, clients)


@pytest_asyncio.fixture
async def two(hub_factory, fake_twilio, sms_config) -> AsyncIterator[Two]:
    world = await _two(hub_factory, fake_twilio, sms_config)
    try:
        yield world
    finally:
        await world.client.close()


async def test_replayed_start_after_stop_changes_nothing(two: Two) -> None:
    await two.text("oak")
    start = two.fake.inbound_params(MOBILE, TWILIO_FROM, "START")
    stop = two.fake.inbound_params(MOBILE, TWILIO_FROM, "STOP")
    for params in (start, stop):
        assert (await two.fake.post_form(INBOUND, params)).status == 200
    ledger = await two.ledger()
    # an old START, then the STOP, replayed (Twilio retrying, or a captured request)
    for params in (start, stop, stop):
        resp = await two.fake.post_form(INBOUND, params)
        assert resp.status == 200
    async with two.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.reason, row.active) == ("opt_out", True)
    assert [r.id for r in await two.ledger()] == [r.id for r in ledger]  # no new rows
    assert len(await two.inbound()) == 2


@pytest.mark.parametrize(("body", "kind"), [
    ("Stop.", "STOP"), ("stop!", "STOP"), (" STOP!! ", "STOP"), ("unsubscribe?", "STOP"),
    ("Start!", ""), ("start", "START"), ("help?", "HELP"), ("STOP PLEASE", ""),
    ("Stop the reminders.", ""),
])
def test_keywords_after_trailing_punctuation(body: str, kind: str) -> None:
    assert keyword_kind(body)[0] == kind


async def test_stop_with_punctuation_opts_out(two: Two) -> None:
    await two.text("oak")
    await two.fake.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "Stop.")
    async with two.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.address, row.reason, row.active) == (MOBILE, "opt_out", True)
    # and an enthusiastic "Start!" is not an opt-in (Twilio would still block the pair)
    await two.fake.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "Start!")
    async with two.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert row.active


# -- attribution -----------------------------------------------------------------------------

async def test_reply_to_a_shared_sender_two_practices_texted_stays_unassigned(two: Two) -> None:
    await two.text("oak")
    await two.text("elm")
    assert [m["from"] for m in two.fake.sent_to(MOBILE)] == [TWILIO_FROM, TWILIO_FROM]
    await two.fake.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "Is Rex due?")
    [reply] = await two.inbound()
    assert (reply.practice_id, reply.client_id, reply.communication_id) == (None, None, None)
    async with two.hub.sessionmaker() as s:
        [event] = (await s.execute(select(HubEvent).where(
            HubEvent.kind == "messaging.inbound_unassigned"))).scalars().all()
    assert event.practice_id is None and event.data["inbound_id"] == reply.id
    # a STOP from that number is kept for everyone, credited to no one practice
    await two.fake.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "STOP")
    [row] = [r for r in await two.ledger() if r.source == "sms_keyword"]
    assert (row.allowed, row.practice_id, row.client_id) == (False, None, None)


async def test_reply_to_a_shared_sender_one_practice_texted_is_theirs(two: Two) -> None:
    await two.text("elm")
    await two.fake.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "Thanks")
    [reply] = await two.inbound()
    assert (reply.practice_id, reply.client_id) == (two.practices["elm"], two.clients["elm"])


async def test_practice_with_its_own_sender(hub_factory, fake_twilio, sms_config) -> None:
    world = await _two(hub_factory, fake_twilio, sms_config, senders={"oak": OAK_NUMBER})
    try:
        await world.text("oak")
        await world.text("elm")
        assert [m["from"] for m in fake_twilio.sent_to(MOBILE)] == [OAK_NUMBER, TWILIO_FROM]
        await fake_twilio.send_inbound(INBOUND, MOBILE, OAK_NUMBER, "See you at Oak")
        await fake_twilio.send_inbound(INBOUND, MOBILE, TWILIO_FROM, "See you at Elm")
        oak, elm = await world.inbound()
        assert (oak.practice_id, oak.client_id) == (world.practices["oak"], world.clients["oak"])
        assert (elm.practice_id, elm.client_id) == (world.practices["elm"], world.clients["elm"])
        health = await world.hub.channels["sms"].health()
        assert health[0] and "1 practices with their own sender" in health[1]
    finally:
        await world.client.close()


@pytest.mark.parametrize(("senders", "problem"), [
    ({"oak": "555"}, "neither an E.164 number"),
    ({"oak": OAK_NUMBER, "elm": OAK_NUMBER}, "several practices"),
    ({"oak": TWILIO_FROM}, "cannot also be the shared"),
])
def test_sender_config_mistakes(senders, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        SmsConfig.model_validate({"account_sid": "AC1", "auth_token": "t",
                                  "from_number": TWILIO_FROM, "senders": senders})
