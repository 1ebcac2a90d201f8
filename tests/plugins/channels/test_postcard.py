"""The postcard channel against the fake Lob server (docs/providers/lob.md): sending, errors,
Lob's 24-hour idempotency keys, webhooks, and the fake's own fidelity."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Practice
from hub.messaging.channel import ChannelError, OutboundMessage
from hub.messaging.models import AddressSuppression, Communication, CommunicationStatus
from hub.messaging.outbound import queue_communication
from hub.messaging.sending import outbound_message
from hub.pims.models import Client, Patient
from hub.testing.fake_lob import FakeLob, metadata_problem, sign_event
from hub.web.app import create_app
from plugins.channels.postcard import (
    PostcardChannel,
    PostcardConfig,
    address_problem,
    event_timestamp,
    reset_delay,
)

ADDRESS = {"name": "Jane Smith", "address_line1": "210 King St", "address_line2": "Apt 4",
           "address_city": "San Francisco", "address_state": "CA", "address_zip": "94107",
           "address_country": "US"}


def card(address: dict[str, Any] | None = None, *, communication_id: int = 1,
         category: str = "reminder") -> OutboundMessage:
    return OutboundMessage(
        communication_id=communication_id, channel="postcard", category=category, to="", cc=(),
        subject=None, text=None, html=None, postcard_front_html="<h1>Rex is due</h1>",
        postcard_back_html="<p>Call us</p>",
        postal_address=dict(ADDRESS) if address is None else address, headers={},
        practice_id=3, idempotency_key=str(communication_id))


class LobHub:
    def __init__(self, hub: Hub, client: TestClient, fake: FakeLob, clock: FrozenClock) -> None:
        self.hub, self.client, self.fake, self.clock = hub, client, fake, clock

    @property
    def channel(self) -> PostcardChannel:
        return self.hub.channels["postcard"]

    @property
    def webhook(self) -> str:
        return str(self.client.make_url("/webhooks/lob"))


@pytest_asyncio.fixture
async def lob_hub(hub_factory, fake_lob: FakeLob, postcard_config,
                  frozen_clock: FrozenClock) -> AsyncIterator[LobHub]:
    fake_lob.clock = lambda: frozen_clock.now().timestamp()
    hub = await hub_factory({"postcard": postcard_config(fake_lob)}, clock=frozen_clock)
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield LobHub(hub, client, fake_lob, frozen_clock)
    finally:
        await client.close()


# -- rules (table-driven) --------------------------------------------------------------------

@pytest.mark.parametrize(("change", "problem"), [
    ({}, None),
    ({"address_zip": "94107-1234"}, None),
    ({"address_state": "ca"}, None),
    ({"name": "", "company": "Acme Kennels"}, None),
    ({"name": ""}, "name (or company) is required"),
    ({"name": "N" * 41}, "longer than 40"),
    ({"address_line1": ""}, "address_line1 is required"),
    ({"address_line1": "x" * 45, "address_line2": "y" * 6}, "exceed 50"),
    ({"address_line1": "x" * 45, "address_line2": "y" * 5}, None),
    ({"address_city": ""}, "address_city is required"),
    ({"address_state": "Calif"}, "2-letter"),
    ({"address_state": "C1"}, "2-letter"),
    ({"address_zip": "9410"}, "12345 or 12345-1234"),
    ({"address_zip": "94107-12"}, "12345 or 12345-1234"),
    ({"address_zip": "941071234"}, "12345 or 12345-1234"),
    ({"address_country": "CA"}, "only US"),
])
def test_address_rules(change: dict[str, str], problem: str | None) -> None:
    found = address_problem({**ADDRESS, **change})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(("value", "seconds"), [
    ("1764150000", 1764150000.0), ("1764150000123", 1764150000.123), ("x", None),
])
def test_timestamp_seconds_or_milliseconds(value: str, seconds: float | None) -> None:
    assert event_timestamp(value) == (pytest.approx(seconds) if seconds else None)


@pytest.mark.parametrize(("headers", "delay"), [
    ({"X-Rate-Limit-Reset": "1764150007"}, 7.0),
    ({"ratelimit-reset": "1764150003"}, 3.0),
    ({"ratelimit-reset": "4"}, 4.0),  # a delay, not an epoch
    ({"Retry-After": "9"}, 9.0),
    ({"X-Rate-Limit-Reset": "1764149990"}, 1.0),  # already past: retry soon, not at once
    ({}, None),
])
def test_reset_delay(headers: dict[str, str], delay: float | None) -> None:
    assert reset_delay(headers, 1_764_150_000.0) == delay


@pytest.mark.parametrize(("section", "problem"), [
    ({"api_key": "test_pub"}, "publishable"),
    ({"api_key": "test_x", "size": "4x6", "mail_type": "usps_standard"}, "usps_standard"),
    ({"api_key": "test_x", "from_address": "123 Main"}, "adr_"),
    ({"api_key": "test_x", "from_address": {**ADDRESS, "address_zip": "1"}}, "from_address"),
])
def test_config_mistakes(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PostcardConfig.model_validate(section)


@pytest.mark.parametrize("section", [None, {}, {"api_key": ""}])
async def test_off_without_credentials(hub_factory, caplog, section) -> None:
    caplog.set_level(logging.INFO, logger="plugins.channels.postcard")
    hub = await hub_factory({"postcard": section} if section is not None else None)
    assert "postcard" not in hub.channels
    assert "postcard channel off" in caplog.text


# -- sending ---------------------------------------------------------------------------------

async def test_send_creates_postcard(lob_hub: LobHub) -> None:
    result = await lob_hub.channel.send(card(communication_id=41))
    assert result.status == "processed" and result.provider_id in lob_hub.fake.postcards
    request = lob_hub.fake.requests[-1]
    assert request.headers["Idempotency-Key"] == "41"
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.body
    assert body["use_type"] == "operational" and body["size"] == "4x6"
    assert body["front"] == "<h1>Rex is due</h1>" and body["back"] == "<p>Call us</p>"
    assert body["to"]["address_line2"] == "Apt 4" and body["to"]["address_country"] == "US"
    assert body["from"]["name"] == "Riverside Vets"
    assert body["metadata"]["communication_id"] == "41"
    assert body["metadata"]["practice_id"] == "3" and body["metadata"]["category"] == "reminder"
    assert body["metadata"]["postal_key"].startswith("postal:")


@pytest.mark.parametrize(("category", "use_type"), [
    ("marketing", "marketing"), ("loyalty", "marketing"), ("survey", "marketing"),
    ("reminder", "operational"), ("appointment", "operational"), ("account", "operational"),
])
async def test_use_type_from_category(lob_hub: LobHub, category: str, use_type: str) -> None:
    await lob_hub.channel.send(card(category=category))
    assert lob_hub.fake.requests[-1].body["use_type"] == use_type


async def test_retry_replays_the_same_postcard(lob_hub: LobHub) -> None:
    first = await lob_hub.channel.send(card(communication_id=7))
    again = await lob_hub.channel.send(card(communication_id=7))
    other = await lob_hub.channel.send(card(communication_id=8))
    assert again.provider_id == first.provider_id != other.provider_id
    assert len(lob_hub.fake.postcards) == 2


async def test_bad_address_is_refused_before_spending(lob_hub: LobHub) -> None:
    with pytest.raises(ChannelError) as info:
        await lob_hub.channel.send(card({**ADDRESS, "address_line1": "x" * 50}))
    assert (info.value.reason, info.value.permanent) == ("invalid_address", True)
    with pytest.raises(ChannelError):
        await lob_hub.channel.send(card({}))
    assert lob_hub.fake.requests == []


@pytest.mark.parametrize(("code", "reason"), [
    ("invalid", "rejected"),
    ("address_length_exceeds_limit", "invalid_address"),
    ("mail_use_type_can_not_be_null", "rejected"),
])
async def test_422_is_permanent(lob_hub: LobHub, code: str, reason: str) -> None:
    lob_hub.fake.fail_next(1, status=422, code=code, message="refused")
    with pytest.raises(ChannelError) as info:
        await lob_hub.channel.send(card())
    assert (info.value.permanent, info.value.reason, info.value.code) == (True, reason, code)


@pytest.mark.parametrize("style", ["x", "ietf", "both"])
async def test_429_honours_rate_limit_headers(lob_hub: LobHub, style: str) -> None:
    lob_hub.fake.rate_limit_headers = style
    lob_hub.fake.rate_limit_next(1, reset_in=4)
    with pytest.raises(ChannelError) as info:
        await lob_hub.channel.send(card())
    assert (info.value.reason, info.value.permanent) == ("transient", False)
    assert info.value.retry_after == pytest.approx(4, abs=1)
    assert info.value.code == "rate_limit_exceeded"
    assert (await lob_hub.channel.send(card())).status == "processed"


async def test_5xx_is_transient(lob_hub: LobHub) -> None:
    lob_hub.fake.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(ChannelError) as info:
            await lob_hub.channel.send(card())
        assert info.value.reason == "transient" and not info.value.permanent
    assert not (await lob_hub.channel.health())[0]
    await lob_hub.channel.send(card())
    assert (await lob_hub.channel.health())[0]


async def test_bad_key_waits_for_the_operator(hub_factory, fake_lob, postcard_config) -> None:
    hub = await hub_factory({"postcard": postcard_config(fake_lob, api_key="test_wrong")})
    with pytest.raises(ChannelError) as info:
        await hub.channels["postcard"].send(card())
    assert (info.value.reason, info.value.permanent, info.value.retry_after) == (
        "transient", False, 600)


# -- webhook ---------------------------------------------------------------------------------

async def test_unsigned_forged_and_stale_events_are_refused(lob_hub: LobHub) -> None:
    sent = await lob_hub.channel.send(card())
    fake, url, now = lob_hub.fake, lob_hub.webhook, lob_hub.clock.now().timestamp()
    pid = sent.provider_id
    responses = [
        await fake.send_event(url, pid, "postcard.delivered", signed=False),
        await fake.send_event(url, pid, "postcard.delivered", secret="not-the-secret"),
        await fake.send_event(url, pid, "postcard.delivered", signature="00" * 32),
        await fake.send_event(url, pid, "postcard.delivered", timestamp=str(int(now) - 301)),
        await fake.send_event(url, pid, "postcard.delivered",
                              timestamp=str(int((now - 301) * 1000))),
        await fake.send_event(url, pid, "postcard.delivered", timestamp=str(int(now) + 301)),
    ]
    assert [r.status for r in responses] == [403] * 6


async def test_event_with_tampered_body_is_refused(lob_hub: LobHub) -> None:
    sent = await lob_hub.channel.send(card())
    event = lob_hub.fake.event_body(sent.provider_id, "postcard.delivered")
    ts = lob_hub.fake.timestamp()

    signature = sign_event(lob_hub.fake.webhook_secret, ts, json.dumps(event).encode())
    event["event_type"]["id"] = "postcard.returned_to_sender"
    resp = await lob_hub.fake.send_event(lob_hub.webhook, "", "", body=event, timestamp=ts,
                                         signature=signature)
    assert resp.status == 403


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999", "0x10", ""])
async def test_a_timestamp_that_is_not_a_finite_number_is_refused(lob_hub: LobHub, stamp: str) -> None:
    # correctly signed over the odd timestamp: only the timestamp's form can refuse it
    signature = sign_event(lob_hub.fake.webhook_secret, stamp, b"{}")
    assert lob_hub.channel.verify(stamp, signature, b"{}") in ("bad timestamp", "unsigned")


@pytest.mark.parametrize("unit", ["s", "ms"])
async def test_fresh_signed_event_passes_the_check(lob_hub: LobHub, unit: str) -> None:
    lob_hub.fake.timestamp_unit = unit
    ts = lob_hub.fake.timestamp(lob_hub.clock.now().timestamp() - 290)
    assert lob_hub.channel.verify(ts, "x", b"{}") == "bad signature"  # fresh, wrong signature
    assert lob_hub.channel.verify(ts, sign_event(lob_hub.fake.webhook_secret, ts, b"{}"),
                                  b"{}") is None


# -- end to end: verdict, outbox job, Lob, events --------------------------------------------
DAYTIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
REMINDER = {"patient_name": "Rex", "service": "rabies vaccine", "due_date": "2026-03-09"}


@pytest_asyncio.fixture
async def world(lob_hub: LobHub) -> LobHub:
    lob_hub.clock.set(DAYTIME)
    async with lob_hub.hub.transaction() as s:
        practice = Practice(slug="parkside", name="Parkside Vets", country="US",
                            timezone="America/New_York", address={})
        s.add(practice)
        await s.flush()
        owner = Client(practice_id=practice.id, external_id="ann", first_name="Ann",
                       last_name="Smith", status="active", email=None, phone_mobile=None,
                       address_line1="210 King St", address_line2="Apt 4",
                       city="San Francisco", region="CA", postcode="94107", country="US")
        s.add(owner)
        s.add(Patient(practice_id=practice.id, external_id="ann-p0", client_external_id="ann",
                      name="Rex", status="active"))
        await s.flush()
    lob_hub.client_id = owner.id  # type: ignore[attr-defined]
    return lob_hub


async def queue_card(world: LobHub, category: str = "reminder") -> int:
    async with world.hub.transaction() as s:
        comm = await queue_communication(s, world.hub, client_id=world.client_id,  # type: ignore[attr-defined]
                                         template="reminder", category=category,
                                         channels=("postcard",), context=REMINDER)
        return comm.id


async def load(hub: Hub, comm_id: int) -> tuple[Communication, list[tuple[str, bool]]]:
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        history = (await s.execute(select(CommunicationStatus).where(
            CommunicationStatus.communication_id == comm_id).order_by(
            CommunicationStatus.id))).scalars().all()
    assert comm is not None
    return comm, [(h.status, h.applied) for h in history]


async def test_postcard_end_to_end_with_tracking_events(world: LobHub) -> None:
    comm_id = await queue_card(world)
    assert await world.hub.jobs.run_until_idle() == 1
    [request] = world.fake.requests
    assert request.headers["Idempotency-Key"] == str(comm_id)
    assert "Rex is due for rabies vaccine" in request.body["front"]
    assert request.body["to"]["name"] == "Ann Smith" and request.body["use_type"] == "operational"
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "processed" and comm.provider_id in world.fake.postcards

    for event in ("postcard.in_transit", "postcard.mailed", "postcard.rendered_pdf",
                  "postcard.delivered", "postcard.in_local_area"):
        resp = await world.fake.send_event(world.webhook, comm.provider_id, event)
        assert resp.status == 200
    comm, history = await load(world.hub, comm_id)
    assert comm.status == "delivered"
    assert history[-4:] == [("in_transit", True), ("mailed", False), ("delivered", True),
                            ("in_local_area", False)]


async def test_a_replayed_send_gets_the_same_postcard(world: LobHub) -> None:
    comm_id = await queue_card(world)
    async with world.hub.sessionmaker() as s:
        comm = await s.get(Communication, comm_id)
        message = outbound_message(world.hub, comm)
    # the first attempt reached Lob, then the worker died before recording it
    first = await world.channel.send(message)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.provider_id == first.provider_id and comm.status == "processed"
    assert len(world.fake.postcards) == 1 and len(world.fake.requests) == 2


async def test_marketing_category_is_marketing_mail(world: LobHub) -> None:
    await queue_card(world, category="loyalty")
    await world.hub.jobs.run_until_idle()
    assert world.fake.requests[-1].body["use_type"] == "marketing"


async def test_returned_to_sender_suppresses_the_address(world: LobHub) -> None:
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    for event in ("postcard.mailed", "postcard.returned_to_sender"):
        await world.fake.send_event(world.webhook, comm.provider_id, event)
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "returned_to_sender"
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.reason, row.active) == ("postal", "invalid", True)
    again = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    assert (await load(world.hub, again))[0].status == "suppressed"
    assert len(world.fake.postcards) == 1


async def test_unmailable_address_fails_without_calling_lob(world: LobHub) -> None:
    async with world.hub.transaction() as s:
        owner = await s.get(Client, world.client_id)  # type: ignore[attr-defined]
        owner.postcode = "9410"
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "bounced" and "address_zip" in (comm.last_error or "")
    assert world.fake.requests == []
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.reason) == ("postal", "invalid")


async def test_rate_limited_send_waits_for_the_reset(world: LobHub) -> None:
    world.fake.rate_limit_next(1, reset_in=20)
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    assert (await load(world.hub, comm_id))[0].status == "sending"
    world.clock.advance(seconds=10)
    assert await world.hub.jobs.run_until_idle() == 0  # not before the reset
    world.clock.advance(seconds=11)
    await world.hub.jobs.run_until_idle()
    assert (await load(world.hub, comm_id))[0].status == "processed"
    assert len(world.fake.postcards) == 1


async def test_422_fails_the_communication_for_good(world: LobHub) -> None:
    world.fake.fail_next(1, status=422, code="invalid", message="front is not valid HTML")
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "failed" and "422" in (comm.last_error or "")
    assert len(world.fake.requests) == 1


# -- error codes -----------------------------------------------------------------------------


async def test_undeliverable_recipient_is_the_clients_address(world: LobHub) -> None:
    async with world.hub.transaction() as s:
        owner = await s.get(Client, world.client_id)  # type: ignore[attr-defined]
        owner.address_line1, owner.address_line2 = "1 Nowhere Ln", None
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert world.fake.requests[-1].response["error"]["code"] == "failed_deliverability_strictness"
    assert comm.status == "bounced" and "failed_deliverability_strictness" in comm.last_error
    async with world.hub.sessionmaker() as s:
        [row] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (row.kind, row.reason) == ("postal", "invalid")


@pytest.mark.parametrize("code", ["invalid_address", "undeliverable_address"])
async def test_codes_lob_does_not_have_are_not_address_codes(lob_hub: LobHub, code: str) -> None:
    lob_hub.fake.fail_next(1, status=422, code=code, message="address refused")
    with pytest.raises(ChannelError) as info:
        await lob_hub.channel.send(card())
    assert (info.value.reason, info.value.permanent) == ("rejected", True)


async def test_foreign_return_address_is_the_practices_configuration(world: LobHub) -> None:
    world.fake.fail_next(1, status=422, code="foreign_return_address",
                         message="The return address must be a US address.")
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    # waits for the operator; the client's address is not blamed
    assert comm.status == "sending" and "foreign_return_address" in comm.last_error
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(AddressSuppression))).scalars().all() == []
    ok, detail = await world.channel.health()
    assert not ok and "foreign_return_address" in detail
    world.clock.advance(seconds=601)
    await world.hub.jobs.run_until_idle()
    assert (await load(world.hub, comm_id))[0].status == "processed"


async def test_request_timeout_408_is_transient(lob_hub: LobHub) -> None:
    lob_hub.fake.fail_next(1, status=408)
    with pytest.raises(ChannelError) as info:
        await lob_hub.channel.send(card())
    assert (info.value.reason, info.value.permanent, info.value.code) == (
        "transient", False, "request_timeout")
    assert (await lob_hub.channel.send(card())).status == "processed"


# -- idempotency keys last 24 hours ----------------------------------------------------------

async def test_retry_after_24_hours_finds_the_card_instead_of_mailing_another(
        world: LobHub) -> None:
    comm_id = await queue_card(world)
    async with world.hub.sessionmaker() as s:
        message = outbound_message(world.hub, await s.get(Communication, comm_id))
    # the first attempt reached Lob, then the worker died before recording it; the job is
    # retried a day later, when Lob no longer remembers the idempotency key
    first = await world.channel.send(message)
    assert world.fake.list_requests == []  # a fresh key needs no lookup
    world.clock.advance(hours=25)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.provider_id == first.provider_id and comm.status == "processed"
    assert len(world.fake.postcards) == 1
    assert world.fake.list_requests == [{"metadata[communication_id]": str(comm_id),
                                         "limit": "10"}]
    async with world.hub.sessionmaker() as s:
        rows = (await s.execute(select(CommunicationStatus.detail).where(
            CommunicationStatus.communication_id == comm_id,
            CommunicationStatus.status == "processed"))).scalars().all()
    assert rows[-1]["recovered_by_metadata"] is True


async def test_the_fake_forgets_keys_after_24_hours(lob_hub: LobHub) -> None:
    """Without the lookup a day-late retry would mail a second card: the fake does what Lob
    does."""
    first = await lob_hub.channel.send(card(communication_id=5))
    lob_hub.clock.advance(hours=25)
    again = await lob_hub.channel.send(card(communication_id=5))  # no such communication row
    assert again.provider_id != first.provider_id and len(lob_hub.fake.postcards) == 2


async def test_retry_after_24_hours_with_no_card_mails_one(world: LobHub) -> None:
    world.fake.fail_next(1, status=503)
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()  # fails, will retry
    world.clock.advance(hours=25)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "processed" and len(world.fake.postcards) == 1
    assert len(world.fake.list_requests) == 1


async def test_a_card_of_another_hub_is_not_taken_for_ours(world: LobHub) -> None:
    """Another hub on the same Lob account numbers its communications the same way."""
    comm_id = await queue_card(world)
    body = world.channel.body(card(communication_id=comm_id))
    body["metadata"]["sender"] = "https://another-hub.example"
    world.fake.postcards["psc_other"] = {**world.fake._validate_and_build(body), "id": "psc_other"}
    world.clock.advance(hours=25)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    assert comm.status == "processed" and comm.provider_id not in (None, "psc_other")
    assert len(world.fake.postcards) == 2 and len(world.fake.list_requests) == 1


# -- fake fidelity ---------------------------------------------------------------------------

def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


BODY: dict[str, Any] = {"to": dict(ADDRESS), "front": "<p>f</p>", "back": "<p>b</p>",
                        "use_type": "operational"}


async def test_publishable_key_is_refused(fake_lob: FakeLob) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(fake_lob.base_url + "/postcards", json=BODY,
                             headers=_basic(fake_lob.publishable_key)) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "publishable_key_not_allowed"
    assert fake_lob.postcards == {}


@pytest.mark.parametrize(("metadata", "problem"), [
    ({"communication_id": "1"}, None),
    ({f"k{i}": "v" for i in range(21)}, "at most 20"),
    ({"k" * 41: "v"}, "longer than 40"),
    ({"k": "v" * 501}, "longer than 500"),
    ({"k": 'say "hi"'}, "double quote"),
    ({"k": "a\\b"}, "backslash"),
    ({'k"': "v"}, "double quote"),
    ({"k": 1}, "must be a string"),
    ({"k": {"nested": "v"}}, "must be a string"),
])
async def test_metadata_rules(fake_lob: FakeLob, metadata, problem) -> None:
    found = metadata_problem(metadata)
    assert (found is None) if problem is None else (problem in (found or ""))
    async with aiohttp.ClientSession() as http:
        async with http.post(fake_lob.base_url + "/postcards", json={**BODY, "metadata": metadata},
                             headers=_basic(fake_lob.api_key)) as resp:
            assert resp.status == (200 if problem is None else 422)


async def test_foreign_return_address_from_the_fake(fake_lob: FakeLob) -> None:
    sender = {**ADDRESS, "address_country": "CA", "address_state": "BC", "address_zip": "V5K0A1"}
    async with aiohttp.ClientSession() as http:
        async with http.post(fake_lob.base_url + "/postcards", json={**BODY, "from": sender},
                             headers=_basic(fake_lob.api_key)) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"]["code"] == "foreign_return_address"


async def test_tracking_events_and_failure_reason(world: LobHub) -> None:
    comm_id = await queue_card(world)
    await world.hub.jobs.run_until_idle()
    comm, _ = await load(world.hub, comm_id)
    event = world.fake.event_body(comm.provider_id, "postcard.mailed")
    assert [t["type"] for t in event["body"]["tracking_events"]] == ["normal"]
    world.fake.fail_render(comm.provider_id)
    resp = await world.fake.send_event(world.webhook, comm.provider_id, "postcard.failed")
    assert resp.status == 200
    async with world.hub.sessionmaker() as s:
        detail = (await s.execute(select(CommunicationStatus.detail).where(
            CommunicationStatus.communication_id == comm_id,
            CommunicationStatus.status == "failed"))).scalar_one()
    assert detail["failure_reason"] == (
        "asset_render_error: The front HTML could not be rendered.")


async def test_the_api_description_names_the_webhook_signature(lob_hub: LobHub) -> None:
    spec = await (await lob_hub.client.get("/api/openapi.json")).json()
    scheme = spec["components"]["securitySchemes"]["lobSignature"]
    assert scheme["in"] == "header" and scheme["name"] == "Lob-Signature"
