"""The postcard channel against the fake Lob server (CONTRACTS.md §2)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from hub.clock import FrozenClock
from hub.core import Hub
from hub.messaging.channel import ChannelError, OutboundMessage
from hub.testing.fake_lob import FakeLob, sign_event
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
    assert body["metadata"] == {"communication_id": "41", "category": "reminder",
                                "practice_id": "3"}


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


@pytest.mark.parametrize("unit", ["s", "ms"])
async def test_fresh_signed_event_passes_the_check(lob_hub: LobHub, unit: str) -> None:
    lob_hub.fake.timestamp_unit = unit
    ts = lob_hub.fake.timestamp(lob_hub.clock.now().timestamp() - 290)
    assert lob_hub.channel.verify(ts, "x", b"{}") == "bad signature"  # fresh, wrong signature
    assert lob_hub.channel.verify(ts, sign_event(lob_hub.fake.webhook_secret, ts, b"{}"),
                                  b"{}") is None
