"""The fake Twilio server against twilio-python itself and docs/providers/twilio.md."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client

from hub.testing.fake_twilio import FakeTwilio, num_segments


def test_signature_test_vector() -> None:
    """A published signature test vector, through the validator the fake signs with."""
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    fake = FakeTwilio(auth_token="12345")
    assert fake.sign(url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert RequestValidator("12345").validate(url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


@pytest.mark.parametrize(("body", "segments"), [
    ("hello", 1), ("x" * 160, 1), ("x" * 161, 2), ("é" * 160, 1), ("ü" * 10 + "\u2603", 1),
    ("\u2603" * 71, 2),
])
def test_segments(body: str, segments: int) -> None:
    assert num_segments(body) == segments


@pytest.fixture
async def fake():
    async with FakeTwilio() as server:
        yield server


@pytest.fixture
async def client(fake: FakeTwilio):
    http = AsyncTwilioHttpClient()
    c = Client(fake.account_sid, fake.auth_token, http_client=http, environment={})
    c.api.base_url = fake.base_url
    yield c
    await http.close()


async def test_create_201_parsed_by_sdk(fake: FakeTwilio, client: Client) -> None:
    msg = await client.messages.create_async(
        to="+15551230001", from_="+15005550006", body="Rex is due",
        status_callback="https://hub.example/webhooks/twilio/status")
    assert re.fullmatch(r"SM[0-9a-f]{32}", msg.sid)
    assert msg.status == "queued"
    assert msg.num_segments == "1" and msg.num_media == "0"
    assert msg.api_version == "2010-04-01"
    assert msg.direction == "outbound-api"
    assert msg.to == "+15551230001" and msg.from_ == "+15005550006"
    assert msg.date_created is not None  # the SDK parsed the RFC 2822 date
    raw = fake.messages[msg.sid]
    assert parsedate_to_datetime(raw["date_created"]).utcoffset().total_seconds() == 0
    assert raw["uri"] == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{msg.sid}.json"
    req = fake.requests[-1]
    assert req.form == {"To": ["+15551230001"], "From": ["+15005550006"],
                        "Body": ["Rex is due"],
                        "StatusCallback": ["https://hub.example/webhooks/twilio/status"]}
    assert req.headers["Accept"] == "application/json"
    assert req.headers["User-Agent"].startswith("twilio-python/")
    assert fake.status_callback_url(msg.sid) == "https://hub.example/webhooks/twilio/status"


async def test_every_field_the_sdk_sends_is_known(fake: FakeTwilio, client: Client) -> None:
    await client.messages.create_async(
        to="+15551230001", from_="+15005550006", body="x", status_callback="https://h/s",
        validity_period=600, smart_encoded=True, shorten_urls=False, attempt=1,
        content_retention="discard", address_retention="retain", risk_check="enable",
        provide_feedback=True, force_delivery=False, media_url=["https://h/a.png"],
        persistent_action=["mailto:a@b.c"], max_price=0.5, application_sid="AP" + "0" * 32)
    req = fake.requests[-1]
    assert req.status == 201 and req.unknown_fields == set()
    assert req.form["SmartEncoded"] == ["true"] and req.form["ShortenUrls"] == ["false"]
    assert req.response["sid"].startswith("MM") and req.response["num_media"] == "1"


async def test_messaging_service_is_accepted(fake: FakeTwilio, client: Client) -> None:
    msg = await client.messages.create_async(to="+15551230001", messaging_service_sid="MG" + "1" * 32,
                                             body="hi")
    assert msg.status == "accepted" and msg.num_segments == "0"


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"to": "555-1234", "from_": "+15005550006", "body": "x"}, 400, 21211),
    ({"to": "", "from_": "+15005550006", "body": "x"}, 400, 21604),
    ({"to": "+15551230001", "body": "x"}, 400, 21603),
])
async def test_errors_are_twilio_rest_exceptions(fake, client, kwargs, status, code) -> None:
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(**kwargs)
    assert info.value.status == status and info.value.code == code
    body = fake.requests[-1].response
    assert set(body) == {"code", "message", "more_info", "status"}  # legacy: no type/title


async def test_bad_credentials_20003(fake: FakeTwilio) -> None:
    http = AsyncTwilioHttpClient()
    c = Client(fake.account_sid, "wrong", http_client=http, environment={})
    c.api.base_url = fake.base_url
    try:
        with pytest.raises(TwilioRestException) as info:
            await c.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    finally:
        await http.close()
    assert info.value.status == 401 and info.value.code == 20003


async def test_fault_injection(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next(1, status=429, retry_after=3)
    fake.fail_next(1, status=503)
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    assert (info.value.status, info.value.code) == (429, 20429)
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    assert info.value.status == 503
    await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")


async def test_stop_blocks_the_pair_and_start_unblocks(fake: FakeTwilio, client: Client) -> None:
    received: list[dict] = []

    async def inbound(request: web.Request) -> web.Response:
        form = await request.post()
        url = str(request.url)
        assert RequestValidator(fake.auth_token).validate(
            url, form, request.headers["X-Twilio-Signature"])
        received.append(dict(form))
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/in", inbound)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/in"))
        await fake.send_inbound(url, "+15551230001", "+15005550006", " stop ")
        with pytest.raises(TwilioRestException) as info:
            await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
        assert info.value.code == 21610
        # another sender is not blocked
        await client.messages.create_async(to="+15551230001", from_="+15005550007", body="x")
        await fake.send_inbound(url, "+15551230001", "+15005550006", "Start")
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
        # "STOP PLEASE" is not a keyword
        await fake.send_inbound(url, "+15551230001", "+15005550006", "STOP PLEASE")
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    assert [r["Body"] for r in received] == [" stop ", "Start", "STOP PLEASE"]
    assert received[0]["SmsStatus"] == "received" and received[0]["NumMedia"] == "0"
    for key in ("MessageSid", "SmsSid", "SmsMessageSid", "AccountSid", "ApiVersion",
                "FromCountry", "ToCity"):
        assert key in received[0]


async def test_status_callbacks_signed_any_order(fake: FakeTwilio, client: Client) -> None:
    got: list[tuple[str, bool]] = []

    async def status(request: web.Request) -> web.Response:
        form = await request.post()
        ok = RequestValidator(fake.auth_token).validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", ""))
        got.append((form["MessageStatus"], ok))
        return web.Response(status=200 if ok else 403)

    app = web.Application()
    app.router.add_post("/status", status)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/status"))
        msg = await client.messages.create_async(to="+15551230001", from_="+15005550006",
                                                 body="x", status_callback=url)
        await fake.send_statuses(msg.sid, ["delivered", "sending", "sent"])
        bad = await fake.send_status(msg.sid, "sent", signature="AAAA")
        unsigned = await fake.send_status(msg.sid, "sent", signed=False)
    assert got[:3] == [("delivered", True), ("sending", True), ("sent", True)]
    assert bad.status == 403 and unsigned.status == 403
    assert fake.messages[msg.sid]["status"] == "delivered"
    params = fake.status_params(msg.sid, "undelivered", error_code=30003)
    assert params["ErrorCode"] == "30003" and "RawDlrDoneDate" in params
    assert {"AccountSid", "From", "MessageSid", "MessageStatus", "SmsSid", "SmsStatus"} <= set(
        fake.status_params(msg.sid, "sent"))


def test_fake_signs_exactly_like_twilio_request_validator() -> None:
    from multidict import MultiDict

    from hub.testing.fake_twilio import twilio_signature

    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_signature("12345", url, params) == RequestValidator("12345").compute_signature(url, params)
    repeated = MultiDict([("MediaUrl", "b"), ("MediaUrl", "a"), ("Body", "hi")])
    assert twilio_signature("tok", url, repeated) == RequestValidator("tok").compute_signature(url, repeated)


def test_shared_key_signature_validates_with_the_sdk() -> None:
    params = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent"}
    url = "https://hub.example/webhooks/twilio/status?c=1"
    fake = FakeTwilio(auth_token="token")
    classic = fake.sign(url, params)
    fake.use_shared_key("webhooks_sharedkey_1", "secret")
    shared = fake.sign(url, params)
    assert shared != classic
    algorithm = get_signature_algorithm("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256")
    assert RequestValidator("secret").validate(url, params, shared, algorithm=algorithm)
    assert not RequestValidator("token").validate(url, params, shared, algorithm=algorithm)
    assert not RequestValidator("secret").validate(url, params, shared)  # not SHA-1


async def test_problem_details_raise_the_sdks_service_exception(fake: FakeTwilio,
                                                                client: Client) -> None:
    fake.problem_details = True
    fake.block("+15005550006", "+15551230001")
    with pytest.raises(TwilioServiceException) as info:
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    assert (info.value.status, info.value.code) == (400, 21610)
    fake.problem_details = False
    with pytest.raises(TwilioRestException) as classic:
        await client.messages.create_async(to="+15551230001", from_="+15005550006", body="x")
    assert (classic.value.status, classic.value.code) == (400, 21610)
