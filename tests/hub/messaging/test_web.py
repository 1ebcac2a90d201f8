"""The API (scoped to the caller), the preference page, one-click unsubscribe and tracking."""

from __future__ import annotations

import re

import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.messaging.models import Communication, ConsentRecord
from hub.messaging.outbound import queue_communication, queue_email
from hub.testing.fixtures_core import ApiClient, database_rows
from hub.web.app import create_app


@pytest_asyncio.fixture
async def wapi(world):
    app = create_app(world.hub, start_hub=False, run_workers=False)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield ApiClient(client, world.hub)
    finally:
        await client.close()


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def _sent_unsubscribe_url(world, client_maker, reminder_context, key="ann"):
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, key)
    async with hub.transaction() as s:
        await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                  channels=("email",), context=reminder_context)
    await hub.jobs.run_until_idle()
    msg = world.sink.messages[-1].message
    https = re.search(r"<(http[^>]+)>", msg["List-Unsubscribe"]).group(1)
    prefs = re.search(r"(http\S+/messaging/preferences/\S+)", msg.get_body(("plain",)).get_content()).group(1)
    return cid, _path(https), _path(prefs)


async def _consent(hub, cid):
    async with hub.sessionmaker() as s:
        return [(r.category, r.channel, r.allowed, r.source) for r in
                (await s.execute(select(ConsentRecord).where(ConsentRecord.client_id == cid))).scalars()]


async def test_one_click_urlencoded_and_get_changes_nothing(world, wapi, client_maker, reminder_context) -> None:
    cid, url, _ = await _sent_unsubscribe_url(world, client_maker, reminder_context)
    before = await database_rows(world.hub)
    # link scanners and prefetchers GET every URL: nothing may change
    resp = await wapi.client.get(url)
    assert resp.status == 200 and "<form method='post'>" in await resp.text()
    # a POST without the RFC 8058 body is refused
    resp = await wapi.client.post(url, data={"foo": "bar"})
    assert resp.status == 400
    assert await database_rows(world.hub) == before  # no consent, suppression, status or job
    resp = await wapi.client.post(url, data="List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    assert await _consent(world.hub, cid) == [("reminder", "email", False, "one_click")]
    # the next reminder by email is suppressed; a survey is not (one category only)
    async with world.hub.transaction() as s:
        again = await queue_communication(s, world.hub, client_id=cid, template="reminder", category="reminder",
                                          channels=("email",), context=reminder_context)
    assert again.status == "suppressed" and again.verdict_reasons[0]["code"] == "preference_opt_out"


async def test_one_click_multipart(world, wapi, client_maker, reminder_context) -> None:
    cid, url, _ = await _sent_unsubscribe_url(world, client_maker, reminder_context, "bea")
    form = aiohttp.FormData()
    form.add_field("List-Unsubscribe", "One-Click")
    with aiohttp.MultipartWriter("form-data") as mp:
        part = mp.append("One-Click")
        part.set_content_disposition("form-data", name="List-Unsubscribe")
    resp = await wapi.client.post(url, data=mp)
    assert resp.status == 200, await resp.text()
    assert await _consent(world.hub, cid) == [("reminder", "email", False, "one_click")]


async def test_forged_or_tampered_tokens_are_refused(world, wapi, client_maker, reminder_context) -> None:
    cid, url, prefs = await _sent_unsubscribe_url(world, client_maker, reminder_context, "cy")
    before = await database_rows(world.hub)
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    resp = await wapi.client.post(tampered, data={"List-Unsubscribe": "One-Click"})
    assert resp.status == 404
    # a preference token cannot be used as an unsubscribe token
    token = prefs.rsplit("/", 1)[1]
    resp = await wapi.client.post(f"/messaging/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert resp.status == 404
    # nor can an unsubscribe token be used on the preference page
    resp = await wapi.client.post(f"/messaging/preferences/{url.rsplit('/', 1)[1]}", data=[("keep", "reminder")])
    assert resp.status == 404
    assert await _consent(world.hub, cid) == []
    assert await database_rows(world.hub) == before


async def test_preference_page(world, wapi, client_maker, reminder_context) -> None:
    cid, _, prefs = await _sent_unsubscribe_url(world, client_maker, reminder_context, "dee")
    page = await wapi.client.get(prefs)
    text = await page.text()
    assert page.status == 200 and "Dee Smith" in text and "value='survey' checked" in text
    assert await _consent(world.hub, cid) == []
    resp = await wapi.client.post(prefs, data=[("keep", "reminder"), ("keep", "appointment")], allow_redirects=False)
    assert resp.status == 303
    ledger = await _consent(world.hub, cid)
    assert sorted(ledger) == sorted((c, "*", False, "preference_page") for c in ("survey", "loyalty", "marketing"))
    page = await wapi.client.get(prefs + "?saved=1")
    text = await page.text()
    assert "saved" in text and "value='survey'>" in text and "value='reminder' checked" in text
    # expired link: neither shown nor saved
    world.clock.advance(days=31)
    before = await database_rows(world.hub)
    assert (await wapi.client.get(prefs)).status == 404
    assert (await wapi.client.post(prefs, data=[("keep", "reminder")], allow_redirects=False)).status == 404
    assert await database_rows(world.hub) == before


async def test_api_send_preview_and_list_scoped(world, wapi, client_maker, reminder_context) -> None:
    hub = world.hub
    ann = await client_maker(hub, world.practice_id, "ann")
    gone = await client_maker(hub, world.practice_id, "gone", status="inactive")
    other = await client_maker(hub, world.other_practice_id, "zed")
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id)
    resp = await staff.post("/api/communications", json={
        "client_id": ann, "template": "reminder", "category": "reminder", "channels": ["email", "sms"],
        "context": reminder_context})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and body["channel"] == "email" and body["verdict"] == "allow"
    # another practice's client is invisible, and nothing is recorded for it or a bad request
    before = await database_rows(hub)
    resp = await staff.post("/api/communications", json={
        "client_id": other, "template": "reminder", "category": "reminder", "context": reminder_context})
    assert resp.status == 404
    resp = await staff.post("/api/communications", json={
        "client_id": ann, "template": "reminder", "category": "gossip", "context": reminder_context})
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "category"
    resp = await staff.post("/api/communications", json={
        "client_id": ann, "template": "nope", "category": "reminder", "channels": ["email"]})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "template_error"
    assert await database_rows(hub) == before  # no communication, verdict, status or job

    resp = await staff.post("/api/communications/preview", json={
        "client_ids": [ann, gone, other], "category": "reminder", "channels": ["email"]})
    items = (await resp.json())["items"]
    assert [(i["client_id"], i["decision"]) for i in items] == [(ann, "allow"), (gone, "veto"), (other, "veto")]
    assert items[1]["reasons"][0]["code"] == "client_inactive"
    assert items[2]["reasons"][0]["code"] == "unknown_client"
    async with hub.sessionmaker() as s:
        assert len((await s.execute(select(Communication))).scalars().all()) == 1  # preview wrote nothing

    await hub.jobs.run_until_idle()
    resp = await staff.get(f"/api/clients/{ann}/communications")
    [item] = (await resp.json())["items"]
    assert item["status"] == "sent" and [h["status"] for h in item["history"]] == ["queued", "sending", "sent"]
    assert (await staff.get(f"/api/clients/{other}/communications")).status == 404
    op = await wapi.as_role("operator")
    assert (await op.get(f"/api/clients/{other}/communications")).status == 200
    assert (await wapi.client.get(f"/api/clients/{ann}/communications")).status == 401


async def test_staff_consent_edit(world, wapi, client_maker) -> None:
    ann = await client_maker(world.hub, world.practice_id, "ann")
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id, name="front desk")
    resp = await staff.post(f"/api/clients/{ann}/consent", json={"category": "marketing", "channel": "sms",
                                                                  "allowed": False})
    assert resp.status == 201
    assert await _consent(world.hub, ann) == [("marketing", "sms", False, "staff")]
    other = await wapi.as_role("practice_staff", practice_id=world.other_practice_id)
    before = await database_rows(world.hub)
    assert (await other.post(f"/api/clients/{ann}/consent", json={"allowed": True})).status == 404
    assert (await other.post(f"/api/clients/{ann}/consent", json={"category": "marketing", "channel": "sms",
                                                                   "allowed": True})).status == 404
    assert await database_rows(world.hub) == before  # the ledger still says no, and only that
    assert await _consent(world.hub, ann) == [("marketing", "sms", False, "staff")]


async def test_tracking_pixel_and_click(world_factory, client_maker, reminder_context) -> None:
    world = await world_factory({"messaging": {"tracking": True}})
    hub = world.hub
    app = create_app(hub, start_hub=False, run_workers=False)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        async with hub.transaction() as s:
            comm = await queue_email(s, hub, to="x@example.org", template="message", category="account",
                                     context={"subject": "Hi", "body": "see https://vet.example/book"})
            comm.body_html = '<html><body><a href="https://vet.example/book">book</a></body></html>'
            cid = comm.id
        await hub.jobs.run_until_idle()
        html = world.sink.messages[-1].message.get_body(("html",)).get_content()
        pixel = re.search(r'src="(http[^"]+\.gif)"', html).group(1)
        link = re.search(r'href="(http[^"]+/messaging/t/c/[^"]+)"', html).group(1)
        resp = await client.get(_path(pixel))
        assert resp.status == 200 and resp.content_type == "image/gif"
        resp = await client.get(_path(link), allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "https://vet.example/book"
        async with hub.sessionmaker() as s:
            assert (await s.get(Communication, cid)).status == "clicked"
    finally:
        await client.close()


async def test_one_click_for_an_address_without_a_client(world, wapi) -> None:
    """Mail to a bare address (no PIMS client): one-click suppresses the address; account mail
    (not unsubscribable) still goes."""
    from hub.messaging.models import AddressSuppression

    hub = world.hub
    async with hub.transaction() as s:
        await queue_email(s, hub, to="News@Example.org", template="message", category="marketing",
                          context={"subject": "Spring offers", "body": "..."}, practice_id=world.practice_id)
    await hub.jobs.run_until_idle()
    msg = world.sink.messages[-1].message
    url = _path(re.search(r"<(http[^>]+)>", msg["List-Unsubscribe"]).group(1))
    resp = await wapi.client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert resp.status == 200
    async with hub.sessionmaker() as s:
        [sup] = (await s.execute(select(AddressSuppression))).scalars().all()
    assert (sup.kind, sup.address, sup.reason, sup.source, sup.active) == (
        "email", "news@example.org", "opt_out", "one_click", True)
    async with hub.transaction() as s:
        again = await queue_email(s, hub, to="news@example.org", template="message", category="loyalty",
                                  context={"subject": "s", "body": "b"})
        account = await queue_email(s, hub, to="news@example.org", template="message", category="account",
                                    context={"subject": "Your invoice", "body": "b"})
    assert again.status == "suppressed" and again.verdict_reasons[0]["code"] == "address_opted_out"
    assert account.status == "queued"
