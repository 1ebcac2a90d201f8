"""The SMS channel against the fake Twilio server (docs/providers/twilio.md), through
twilio-python."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Practice
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult
from hub.messaging.models import (
    AddressSuppression,
    Communication,
    CommunicationStatus,
    ConsentRecord,
    InboundMessage,
)
from hub.messaging.outbound import queue_communication
from hub.pims.models import Client, Patient
from hub.testing.fake_twilio import FakeTwilio
from hub.testing.fixtures_channels import TWILIO_FROM
from hub.web.app import create_app
from plugins.channels.sms import OPT_OUT_KEYWORDS, SmsChannel, SmsConfig

PUBLIC = "https://hub.example-vets.test"
CLIENT_PHONE = "+15551230001"


def sms(to: str = CLIENT_PHONE, text: str | None = "Rex is due his booster", *,
        communication_id: int = 1, category: str = "reminder") -> OutboundMessage:
    return OutboundMessage(
        communication_id=communication_id, channel="sms", category=category, to=to, cc=(),
        subject=None, text=text, html=None, postcard_front_html=None, postcard_back_html=None,
        postal_address=None, headers={}, practice_id=None,
        idempotency_key=str(communication_id))


class SmsHub:
    """A started hub with the SMS channel on the fake, its app on a loopback port, and the fake
    delivering webhooks for ``PUBLIC`` to that port (signed over ``PUBLIC``, as via a proxy)."""

    def __init__(self, hub: Hub, client: TestClient, fake: FakeTwilio) -> None:
        self.hub, self.client, self.fake = hub, client, fake

    @property
    def channel(self) -> SmsChannel:
        return self.hub.channels["sms"]


@pytest_asyncio.fixture
async def sms_hub(hub_factory, fake_twilio: FakeTwilio, sms_config) -> AsyncIterator[SmsHub]:
    hub = await hub_factory({"sms": sms_config(fake_twilio, public_url=PUBLIC)})
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    fake_twilio.reverse_proxy(PUBLIC, str(client.make_url("")).rstrip("/"))
    try:
        yield SmsHub(hub, client, fake_twilio)
    finally:
        await client.close()


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("section", [None, {}, {"account_sid": "", "auth_token": ""}])
async def test_off_without_credentials(hub_factory, caplog, section) -> None:
    caplog.set_level(logging.INFO, logger="plugins.channels.sms")
    hub = await hub_factory({"sms": section} if section is not None else None)
    assert "sms" not in hub.channels
    assert "sms channel off" in caplog.text


@pytest.mark.parametrize(("section", "problem"), [
    ({"account_sid": "AC1", "auth_token": "t"}, "from_number or messaging_service_sid"),
    ({"account_sid": "XX1", "auth_token": "t", "from_number": "+15005550006"}, "'AC'"),
    ({"account_sid": "AC1", "auth_token": "t", "from_number": "5550006"}, "E.164"),
])
def test_config_mistakes(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SmsConfig.model_validate(section)


def test_secret_is_redacted() -> None:
    config = SmsConfig.model_validate({"account_sid": "AC1", "auth_token": "hunter2",
                                       "from_number": "+15005550006"})
    assert "hunter2" not in str(config.model_dump(mode="json"))


# -- sending ---------------------------------------------------------------------------------

async def test_send_creates_message_with_status_callback(sms_hub: SmsHub) -> None:
    result = await sms_hub.channel.send(sms())
    assert isinstance(result, SendResult)
    assert result.provider_id in sms_hub.fake.messages
    assert result.status == "queued" and result.detail["num_segments"] == "1"
    request = sms_hub.fake.requests[-1]
    assert request.status == 201
    assert request.form == {"To": [CLIENT_PHONE], "From": [TWILIO_FROM],
                            "Body": ["Rex is due his booster"],
                            "StatusCallback": [f"{PUBLIC}/webhooks/twilio/status?c=1"]}
    assert (await sms_hub.channel.health())[0]


async def test_send_through_messaging_service(hub_factory, fake_twilio, sms_config) -> None:
    service_sid = "MG" + "a" * 32
    hub = await hub_factory({"sms": sms_config(fake_twilio, messaging_service_sid=service_sid)})
    result = await hub.channels["sms"].send(sms())
    assert result.status == "queued" and result.detail["twilio_status"] == "accepted"
    form = fake_twilio.requests[-1].form
    assert form["MessagingServiceSid"] == [service_sid] and "From" not in form
    # default public URL: [hub] public_url
    assert form["StatusCallback"] == ["http://127.0.0.1:8080/webhooks/twilio/status?c=1"]


@pytest.mark.parametrize(("fault", "retry_after"), [
    ({"status": 429, "retry_after": 7}, 7.0),
    ({"status": 429}, None),
    ({"status": 500}, None),
    ({"status": 503, "retry_after": 2}, 2.0),
])
async def test_429_and_5xx_are_transient(sms_hub: SmsHub, fault, retry_after) -> None:
    sms_hub.fake.fail_next(1, **fault)
    with pytest.raises(ChannelError) as info:
        await sms_hub.channel.send(sms())
    err = info.value
    assert (err.reason, err.permanent, err.retry_after) == ("transient", False, retry_after)
    assert not (await sms_hub.channel.health())[0]
    await sms_hub.channel.send(sms())  # the storm is over
    assert (await sms_hub.channel.health())[0]


async def test_storm_of_failures_then_success(sms_hub: SmsHub) -> None:
    sms_hub.fake.fail_next(3, status=503)
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append((await sms_hub.channel.send(sms())).status)
        except ChannelError as err:
            outcomes.append(err.reason)
    assert outcomes == ["transient", "transient", "transient", "queued"]


async def test_invalid_number_21211_is_permanent(sms_hub: SmsHub) -> None:
    with pytest.raises(ChannelError) as info:
        await sms_hub.channel.send(sms(to="+15005550001"))
    assert (info.value.reason, info.value.permanent, info.value.code) == (
        "invalid_address", True, 21211)


async def test_malformed_number_never_reaches_twilio(sms_hub: SmsHub) -> None:
    with pytest.raises(ChannelError) as info:
        await sms_hub.channel.send(sms(to="555-1234"))
    assert info.value.reason == "invalid_address" and info.value.permanent
    assert sms_hub.fake.requests == []


async def test_bad_credentials_wait_for_the_operator(hub_factory, fake_twilio, sms_config) -> None:
    hub = await hub_factory({"sms": sms_config(fake_twilio, auth_token="wrong")})
    with pytest.raises(ChannelError) as info:
        await hub.channels["sms"].send(sms())
    assert (info.value.reason, info.value.permanent, info.value.code) == ("transient", False, 20003)
    assert info.value.retry_after == 600


# -- webhooks: signatures --------------------------------------------------------------------

async def _status_params(sms_hub: SmsHub) -> tuple[str, dict[str, str]]:
    result = await sms_hub.channel.send(sms())
    return result.provider_id, sms_hub.fake.status_params(result.provider_id, "sent")


@pytest.mark.parametrize("path", ["/webhooks/twilio/status", "/webhooks/twilio/inbound"])
async def test_unsigned_and_forged_webhooks_are_refused(sms_hub: SmsHub, path: str) -> None:
    _, params = await _status_params(sms_hub)
    url = PUBLIC + path
    unsigned = await sms_hub.fake.post_form(url, params, signed=False)
    forged = await sms_hub.fake.post_form(url, params, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    wrong_key = FakeTwilio(auth_token="not-the-token").sign(url, params)
    other_key = await sms_hub.fake.post_form(url, params, signature=wrong_key)
    # signed over the local address the request reached, not the public URL Twilio was given
    local = await sms_hub.fake.post_form(url, params, sign_url=str(sms_hub.client.make_url(path)))
    tampered = dict(params, To="+15559999999")
    sig = sms_hub.fake.sign(url, params)
    altered = await sms_hub.fake.post_form(url, tampered, signature=sig)
    assert [r.status for r in (unsigned, forged, other_key, local, altered)] == [403] * 5


async def test_signed_status_callback_is_accepted(sms_hub: SmsHub) -> None:
    sid, _ = await _status_params(sms_hub)
    resp = await sms_hub.fake.send_status(sid, "sent")
    assert resp.status == 200


async def test_inbound_answers_empty_twiml(sms_hub: SmsHub) -> None:
    """Twilio texts back whatever TwiML the webhook answers: the body must be an empty
    <Response/>, read from the wire, not compared with the code's own constant."""
    for body in ("Thanks, see you Tuesday", "STOP", "HELP"):
        resp = await sms_hub.fake.send_inbound(f"{PUBLIC}/webhooks/twilio/inbound", CLIENT_PHONE,
                                               TWILIO_FROM, body)
        assert resp.status == 200
        assert resp.content_type == "text/xml"
        assert await resp.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    # a replayed message gets the same empty answer
    params = sms_hub.fake.inbound_params(CLIENT_PHONE, TWILIO_FROM, "Hello")
    for _ in range(2):
        resp = await sms_hub.fake.post_form(f"{PUBLIC}/webhooks/twilio/inbound", params)
        assert await resp.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'



async def test_21610_from_twilio_is_opted_out_and_permanent(sms_hub: SmsHub) -> None:
    sms_hub.fake.block(TWILIO_FROM, CLIENT_PHONE)
    with pytest.raises(ChannelError) as info:
        await sms_hub.channel.send(sms())
    assert (info.value.reason, info.value.permanent, info.value.code) == ("opted_out", True, 21610)


# -- end to end: verdict, outbox job, Twilio, callbacks --------------------------------------
# 15:00 UTC is 10:00 in New York: outside quiet hours.
DAYTIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
MOBILE = "+12025550143"
REMINDER = {"patient_name": "Rex", "service": "rabies vaccine", "due_date": "2026-03-09"}


@pytest_asyncio.fixture
async def world(hub_factory, fake_twilio: FakeTwilio, sms_config) -> AsyncIterator[SmsHub]:
    clock = FrozenClock(DAYTIME)
    hub = await hub_factory({"sms": sms_config(fake_twilio, public_url=PUBLIC)}, clock=clock)
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    fake_twilio.reverse_proxy(PUBLIC, str(client.make_url("")).rstrip("/"))
    async with hub.transaction() as s:
        practice = Practice(slug="parkside", name="Parkside Vets", country="US",
                            timezone="America/New_York", address={})
        s.add(practice)
        await s.flush()
        pet_owner = Client(practice_id=practice.id, external_id="ann", first_name="Ann",
                           last_name="Smith", status="active", email=None, phone_mobile=MOBILE,
                           country="US")
        s.add(pet_owner)
        s.add(Patient(practice_id=practice.id, external_id="ann-p0", client_external_id="ann",
                      name="Rex", status="active"))
        await s.flush()
    world = SmsHub(hub, client, fake_twilio)
    world.clock, world.client_id = clock, pet_owner.id  # type: ignore[attr-defined]
    try:
        yield world
    finally:
        await client.close()


async def queue_sms(world: SmsHub) -> int:
    async with world.hub.transaction() as s:
        comm = await queue_communication(s, world.hub, client_id=world.client_id,  # type: ignore[attr-defined]
                                         template="reminder", category="reminder",
                                         channels=("sms",), context=REMINDER)
        return comm.id


async def load(hub: Hub, comm_id: int) -> tuple[Communication, list[tuple[str, bool]]]:
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        history = (await s.execute(select(CommunicationStatus).where(
            CommunicationStatus.communication_id == comm_id).order_by(
            CommunicationStatus.id))).scalars().all()
    assert comm is not None
    return comm, [(h.status, h.applied) for h in history]


async def test_out_of_order_callbacks_end_forward_only(world: SmsHub) -> None:
    comm_id = await queue_sms(world)
    assert await world.hub.jobs.run_until_idle() == 1
    [message] = world.fake.sent_to(MOBILE)
    assert message["body"].startswith("Parkside Vets: Rex is due for rabies vaccine")
    assert world.fake.status_callback_url(message["sid"]) == f"{PUBLIC}/webhooks/twilio/status?c={comm_id}"
    comm, _ = await load(world.hub, comm_id)
    assert comm.provider_id == message["sid"] and comm.status == "queued"

    responses = await world.fake.send_statuses(
        message["sid"], ["sent", "delivered", "sending", "sent", "queued", "delivered"])
    assert [r.status for r in responses] == [200] * 6
    comm, history = await load(world.hub, comm_id)
    assert comm.status == "delivered"
    assert history[-6:] == [("sent", True), ("delivered", True), ("sending", False),
                            ("sent", False), ("queued", False), ("delivered", False)]


async def test_callback_that_outruns_the_send_job_is_kept(world: SmsHub) -> None:
    """Twilio may call back before the send job has stored the message's sid."""
    comm_id = await queue_sms(world)
    # the provider's message exists, the hub's row does not know its sid yet
    result = await world.hub.channels["sms"].send(sms(MOBILE, communication_id=comm_id))
    comm, _ = await load(world.hub, comm_id)
    assert comm.provider_id is None
    assert (await world.fake.send_status(result.provider_id, "sent")).status == 200
    comm, history = await load(world.hub, comm_id)
    assert comm.provider_id == result.provider_id and comm.status == "sent"
    assert history[-1] == ("sent", True)


async def test_undelivered_landline_marks_the_number_invalid(world: SmsHub) -> None:
    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    [message] = world.fake.sent_to(MOBILE)
    await world.fake.send_status(message["sid"], "undelivered", error_code=30006)
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "undelivered"
    async with world.hub.sessionmaker() as s:
        rows = (await s.execute(select(AddressSuppression))).scalars().all()
    assert [(r.kind, r.address, r.reason, r.active) for r in rows] == [
        ("sms", MOBILE, "invalid", True)]


async def test_stop_then_send_sends_nothing_and_start_sends_again(world: SmsHub) -> None:
    inbound = f"{PUBLIC}/webhooks/twilio/inbound"
    resp = await world.fake.send_inbound(inbound, MOBILE, TWILIO_FROM, "Stop")
    assert resp.status == 200 and resp.content_type == "text/xml"
    async with world.hub.sessionmaker() as s:
        [reply] = (await s.execute(select(InboundMessage))).scalars().all()
        ledger = (await s.execute(select(ConsentRecord))).scalars().all()
    assert (reply.body, reply.client_id, reply.from_address) == ("Stop", world.client_id, MOBILE)  # type: ignore[attr-defined]
    assert [(r.channel, r.allowed, r.source) for r in ledger] == [("sms", False, "sms_keyword")]

    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "suppressed" and comm.verdict == "veto"
    assert world.fake.sent_to(MOBILE) == [] and world.fake.requests == []

    await world.fake.send_inbound(inbound, MOBILE, TWILIO_FROM, "START")
    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "queued" and len(world.fake.sent_to(MOBILE)) == 1


@pytest.mark.parametrize("body", ["HELP", "info", "STOP PLEASE", "Thanks!"])
async def test_help_and_ordinary_replies_change_no_consent(world: SmsHub, body: str) -> None:
    await world.fake.send_inbound(f"{PUBLIC}/webhooks/twilio/inbound", MOBILE, TWILIO_FROM, body)
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(ConsentRecord))).scalars().all() == []
        assert len((await s.execute(select(InboundMessage))).scalars().all()) == 1


@pytest.mark.parametrize("keyword", sorted(OPT_OUT_KEYWORDS))
async def test_every_opt_out_keyword(world: SmsHub, keyword: str) -> None:
    await world.fake.send_inbound(f"{PUBLIC}/webhooks/twilio/inbound", MOBILE, TWILIO_FROM,
                                  f"  {keyword.lower()} ")
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.reason, row.active) == ("opt_out", True)


async def test_stop_known_only_to_twilio_21610(world: SmsHub) -> None:
    world.fake.block(TWILIO_FROM, MOBILE)  # e.g. the STOP reached another app
    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "failed" and "21610" in (comm.last_error or "")
    assert len(world.fake.requests) == 1  # not retried
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.address, row.reason, row.active) == ("sms", MOBILE, "opt_out", True)
    # and the next message is vetoed before reaching Twilio
    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    assert (await load(world.hub, comm_id))[0].status == "suppressed"
    assert len(world.fake.requests) == 1


async def test_429_storm_is_retried_after_retry_after(world: SmsHub) -> None:
    world.fake.fail_next(2, status=429, retry_after=30)
    comm_id = await queue_sms(world)
    assert await world.hub.jobs.run_until_idle() == 1  # first attempt, then not due yet
    assert (await load(world.hub, comm_id))[0].status == "sending"
    world.clock.advance(seconds=31)  # type: ignore[attr-defined]
    await world.hub.jobs.run_until_idle()
    world.clock.advance(seconds=31)  # type: ignore[attr-defined]
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "queued" and len(world.fake.requests) == 3
    assert len(world.fake.sent_to(MOBILE)) == 1


async def test_invalid_number_21211_fails_and_marks_invalid(world: SmsHub) -> None:
    async with world.hub.transaction() as s:
        pet_owner = await s.get(Client, world.client_id)  # type: ignore[attr-defined]
        pet_owner.phone_mobile = "+15005550001"  # Twilio's "invalid number" test value
    comm_id = await queue_sms(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status in ("bounced", "failed") and "21211" in (comm.last_error or "")
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.reason) == ("sms", "invalid")


async def test_public_url_with_a_path_prefix_behind_a_proxy(hub_factory, fake_twilio,
                                                            sms_config) -> None:
    public = "https://vets.example/hub"
    hub = await hub_factory({"sms": sms_config(fake_twilio, public_url=public + "/")})
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        # the proxy strips /hub: Twilio signs https://vets.example/hub/webhooks/..., the hub
        # receives /webhooks/... and must check against the configured public URL
        fake_twilio.reverse_proxy(public, str(client.make_url("")).rstrip("/"))
        result = await hub.channels["sms"].send(sms())
        assert fake_twilio.status_callback_url(result.provider_id) == (
            f"{public}/webhooks/twilio/status?c=1")
        assert (await fake_twilio.send_status(result.provider_id, "sent")).status == 200
        forged_host = await fake_twilio.send_status(
            result.provider_id, "sent", sign_url=str(client.make_url("/webhooks/twilio/status")))
        assert forged_host.status == 403
    finally:
        await client.close()


async def test_advanced_opt_out_type_is_trusted_for_custom_keywords(world: SmsHub) -> None:
    service_sid = "MG" + "b" * 32
    params = dict(world.fake.inbound_params(MOBILE, TWILIO_FROM, "ARRET",
                                            messaging_service_sid=service_sid))
    params["OptOutType"] = "STOP"  # a custom keyword configured in Advanced Opt-Out
    resp = await world.fake.post_form(f"{PUBLIC}/webhooks/twilio/inbound", params)
    assert resp.status == 200
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.address, row.reason, row.active) == ("sms", MOBILE, "opt_out", True)
