"""Whose "no" holds: the public communications API cannot send operational "account" mail to a
client, bypass a known client's preferences with a bare address, override the hub's own links,
send the hub's internal templates, or tell another tenant's client from a missing one."""

from __future__ import annotations

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from hub.messaging import service
from hub.messaging.models import Communication
from hub.messaging.outbound import MessagingError, queue_communication
from hub.testing.fixtures_core import ApiClient
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


async def count(hub) -> int:
    async with hub.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(Communication))).scalar()


async def opt_out(hub, cid: int, practice_id: int, category: str = "*") -> None:
    async with hub.transaction() as s:
        await service.record_consent(s, hub, client_id=cid, category=category, channel="*", allowed=False,
                                     source="staff", practice_id=practice_id)


async def test_account_category_never_reaches_a_client(world, wapi, client_maker) -> None:
    cid = await client_maker(world.hub, world.practice_id, "ann")
    await opt_out(world.hub, cid, world.practice_id)
    for role in ("operator", "practice_staff"):
        caller = await wapi.as_role(role, practice_id=world.practice_id if role != "operator" else None)
        r = await caller.post("/api/communications", json={"client_id": cid, "template": "message",
                                                           "category": "account", "context": {"body": "hi"}})
        assert r.status == 422 and (await r.json())["error"]["code"] == "account_to_client"
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id)
    r = await staff.post("/api/communications", json={"to": "desk@other.example", "template": "message",
                                                      "category": "account", "practice_id": world.practice_id})
    assert r.status == 422 and (await r.json())["error"]["field"] == "category"
    with pytest.raises(MessagingError):
        async with world.hub.transaction() as s:
            await queue_communication(s, world.hub, client_id=cid, template="message", category="account",
                                      context={"body": "hi"})
    assert await count(world.hub) == 0


async def test_a_bare_address_of_a_known_client_keeps_the_clients_no(world, wapi, client_maker,
                                                                     reminder_context) -> None:
    cid = await client_maker(world.hub, world.practice_id, "ann")
    await opt_out(world.hub, cid, world.practice_id, "reminder")
    op = await wapi.as_role("operator")
    r = await op.post("/api/communications", json={"to": "ANN@example.org", "template": "reminder",
                                                   "category": "reminder", "context": reminder_context})
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["status"] == "suppressed" and body["verdict"] == "veto"


async def test_context_cannot_set_the_hubs_links(world, wapi, client_maker, reminder_context) -> None:
    cid = await client_maker(world.hub, world.practice_id, "ann")
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id)
    for key in ("unsubscribe_url", "preferences_url", "practice"):
        r = await staff.post("/api/communications", json={
            "client_id": cid, "template": "reminder", "category": "reminder",
            "context": {**reminder_context, key: "https://evil.example/x"}})
        assert r.status == 422 and (await r.json())["error"]["field"] == f"context.{key}"
    # and a domain caller's context does not win over them either
    async with world.hub.transaction() as s:
        comm = await queue_communication(s, world.hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",),
                                         context={**reminder_context, "unsubscribe_url": "https://evil.example/x"})
        assert "evil.example" not in comm.headers["List-Unsubscribe"]
        assert "evil.example" not in (comm.body_text or "")


async def test_internal_templates_and_free_form_sends(world, wapi) -> None:
    op = await wapi.as_role("operator")
    for template in ("account_welcome", "switch_notify_current", "account_practice_confirm"):
        r = await op.post("/api/communications", json={"to": "x@example.org", "template": template,
                                                       "category": "account"})
        assert r.status == 422 and (await r.json())["error"]["code"] == "internal_template", template
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id)
    company = await wapi.as_role("company_admin", company_id=1)
    for caller in (staff, company):
        r = await caller.post("/api/communications", json={"to": "x@example.org", "template": "message",
                                                           "category": "marketing",
                                                           "practice_id": world.practice_id,
                                                           "context": {"body": "hi"}})
        assert r.status == 403 and (await r.json())["error"]["code"] == "operators_only"
    assert await count(world.hub) == 0


async def test_another_tenants_client_answers_like_a_missing_one(world, wapi, client_maker,
                                                                 reminder_context) -> None:
    other = await client_maker(world.hub, world.other_practice_id, "zed")
    staff = await wapi.as_role("practice_staff", practice_id=world.practice_id)
    answers = []
    for cid in (other, other + 1000):
        for method, path, body in (
            ("post", "/api/communications", {"client_id": cid, "template": "reminder", "category": "reminder",
                                             "context": reminder_context}),
            ("get", f"/api/clients/{cid}/communications", None),
            ("post", f"/api/clients/{cid}/consent", {"allowed": False}),
        ):
            r = await getattr(staff, method)(path, json=body) if body else await staff.get(path)
            text = (await r.text()).replace(str(cid), "ID")
            answers.append((path.replace(str(cid), "ID"), r.status, text))
    assert answers[:3] == answers[3:]
    assert all(status == 404 for _, status, _ in answers)
    assert await count(world.hub) == 0
