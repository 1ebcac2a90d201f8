"""The fake Lob server against docs/providers/lob.md."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.testing.fake_lob import FakeLob, sign_event

ADDRESS = {"name": "Jane Smith", "address_line1": "210 King St", "address_city": "San Francisco",
           "address_state": "CA", "address_zip": "94107"}


@pytest.fixture
async def lob():
    async with FakeLob() as server:
        yield server


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def card(**over):
    body = {"to": dict(ADDRESS), "front": "<html>front</html>", "back": "<html>back</html>",
            "use_type": "operational"}
    body.update(over)
    return body


async def post(http, lob, body, *, key=None, headers=None, **kw):
    headers = {**basic(lob.api_key if key is None else key), **(headers or {})}
    async with http.post(f"{lob.base_url}/postcards", json=body, headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_create_200_postcard_object(http, lob) -> None:
    status, body, headers = await post(http, lob, card())
    assert status == 200
    assert body["id"].startswith("psc_") and body["object"] == "postcard"
    assert body["to"]["address_country"] == "UNITED STATES"
    assert body["to"]["name"] == "JANE SMITH" and body["to"]["address_zip"].startswith("94107-")
    assert body["status"] == "processed" and body["use_type"] == "operational"
    assert body["size"] == "4x6" and body["carrier"] == "USPS" and body["tracking_events"] == []
    assert headers["X-Rate-Limit-Limit"] == "150" and headers["ratelimit-limit"] == "150"


async def test_form_encoded_body(http, lob) -> None:
    form = {"front": "<b>f</b>", "back": "<b>b</b>", "use_type": "marketing"}
    form.update({f"to[{k}]": v for k, v in ADDRESS.items()})
    async with http.post(f"{lob.base_url}/postcards", data=form,
                         headers=basic(lob.api_key)) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["to"]["address_city"] == "SAN FRANCISCO"


@pytest.mark.parametrize(("body", "status", "code"), [
    (card(to=None), 422, "invalid"),
    (card(use_type=None), 422, "mail_use_type_can_not_be_null"),
    (card(use_type="bulk"), 422, "invalid"),
    (card(to={**ADDRESS, "address_line1": "x" * 30, "address_line2": "y" * 21}), 422,
     "address_length_exceeds_limit"),
    (card(to={**ADDRESS, "address_zip": "9410"}), 422, "invalid"),
    (card(to={**ADDRESS, "address_state": "Cal"}), 422, "invalid"),
    (card(to={**ADDRESS, "name": "n" * 41}), 422, "invalid"),
    (card(size="5x7"), 422, "invalid"),
])
async def test_422(http, lob, body, status, code) -> None:
    got_status, got, _ = await post(http, lob, body)
    assert got_status == status
    assert set(got) == {"error"} and got["error"]["code"] == code
    assert got["error"]["status_code"] == status and got["error"]["message"]


async def test_auth(http, lob) -> None:
    status, body, _ = await post(http, lob, card(), key="test_wrong")
    assert status == 401 and body["error"]["status_code"] == 401


async def test_idempotency_replay(http, lob) -> None:
    s1, first, _ = await post(http, lob, card(), headers={"Idempotency-Key": "42"})
    s2, again, _ = await post(http, lob, card(description="changed"),
                              headers={"Idempotency-Key": "42"})
    s3, other, _ = await post(http, lob, card(), headers={"Idempotency-Key": "43"})
    assert (s1, s2, s3) == (200, 200, 200)
    assert again == first and other["id"] != first["id"]
    assert len(lob.postcards) == 2
    status, body, _ = await post(http, lob, card(), headers={"Idempotency-Key": "44"},
                                 params={"idempotency_key": "44"})
    assert status == 422


@pytest.mark.parametrize("style", ["x", "ietf", "both"])
async def test_429_with_rate_limit_headers(http, lob, style) -> None:
    lob.rate_limit_headers = style
    lob.rate_limit_next(1, reset_in=7)
    status, body, headers = await post(http, lob, card())
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    name = "X-Rate-Limit-Reset" if style != "ietf" else "ratelimit-reset"
    assert int(headers[name]) >= int(lob.clock()) + 6
    assert (await post(http, lob, card()))[0] == 200


async def test_real_rate_limit(http, lob) -> None:
    now = [1_000_000.0]
    lob.clock = lambda: now[0]
    lob._hits = [now[0]] * 150
    status, _, headers = await post(http, lob, card())
    assert status == 429 and headers["X-Rate-Limit-Remaining"] == "0"
    now[0] += 6
    assert (await post(http, lob, card()))[0] == 200


async def test_fail_next_5xx(http, lob) -> None:
    lob.fail_next(1, status=503)
    status, body, _ = await post(http, lob, card())
    assert status == 503 and body["error"]["code"] == "service_unavailable"


@pytest.mark.parametrize("unit", ["ms", "s"])
async def test_signed_events(http, lob, unit) -> None:
    lob.timestamp_unit = unit
    got = []

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers["Lob-Signature-Timestamp"]
        expected = hmac.new(lob.webhook_secret.encode(), f"{ts}.".encode() + raw,
                            hashlib.sha256).hexdigest()
        got.append((json.loads(raw), request.headers["Lob-Signature"] == expected, ts))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/lob", hook)
    _, pc, _ = await post(http, lob, card())
    async with TestServer(app, host="127.0.0.1") as server:
        await lob.send_event(str(server.make_url("/lob")), pc["id"], "postcard.in_transit")
        await lob.send_event(str(server.make_url("/lob")), pc["id"], "postcard.delivered",
                             secret="other")
    event, ok, ts = got[0]
    assert ok and event["object"] == "event" and event["reference_id"] == pc["id"]
    assert event["event_type"] == {"id": "postcard.in_transit", "enabled_for_test": True,
                                   "resource": "postcards", "object": "event_type"}
    assert event["body"]["tracking_events"][0]["name"] == "In Transit"
    assert len(ts) == (13 if unit == "ms" else 10)
    assert got[1][1] is False
    assert sign_event("k", "1", b"{}") == hmac.new(b"k", b"1.{}", hashlib.sha256).hexdigest()
