"""Written requests to the support address over LMTP: a switch request from a practice's
registered address becomes a draft switch request (hub.accounts.drafts) that only operators see;
a spoofed one or one from a stranger opens nothing; other mail is an operator conversation."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.accounts.models import SwitchRequest
from hub.db.models import Company, HubEvent
from hub.messaging.models import AddressSuppression
from hub.testing.fixtures_core import ApiClient
from hub.web.app import create_app
from plugins.inbound.models import InboundKind

from .conftest import AUTHSERV, Inbox
from .test_messages import events_of, plain

SWITCH = "Please switch our teleradiology to a new company, Bright Readers, from next month."
DMARC_PASS = f"{AUTHSERV}; dmarc=pass header.from=parkside.example"


async def api_get(inbox: Inbox, path: str, role: str, **ids: Any) -> tuple[int, Any]:
    app = create_app(inbox.hub, start_hub=False, run_workers=False)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        caller = await ApiClient(client, inbox.hub).as_role(role, **ids)
        async with caller.get(path) as resp:
            return resp.status, await resp.json()
    finally:
        await client.close()


async def switch_requests(inbox: Inbox) -> list[SwitchRequest]:
    async with inbox.hub.sessionmaker() as s:
        return list((await s.execute(select(SwitchRequest).order_by(SwitchRequest.id))).scalars())


async def add_company(inbox: Inbox, slug: str, name: str) -> int:
    async with inbox.hub.transaction() as s:
        company = Company(slug=slug, name=name, email=f"ops@{slug}.example", modalities=[], settings={})
        s.add(company)
        await s.flush()
        return company.id


async def test_switch_request_by_email_becomes_a_draft_for_an_operator(inbox: Inbox) -> None:
    bright = await add_company(inbox, "bright", "Bright Readers")
    raw = plain("Parkside Desk <desk@parkside.example>", "support@vet.example", "Changing companies", SWITCH,
                auth=DMARC_PASS)
    row = await inbox.deliver(raw, rcpt="support@vet.example", mail_from="desk@parkside.example")
    [draft] = await switch_requests(inbox)
    assert row.kind == InboundKind.switch_request and not row.flagged
    assert row.outcome["switch_request_id"] == draft.id
    status, body = await api_get(inbox, "/api/switch-requests?state=draft", "operator")
    [item] = body["items"]
    assert status == 200 and item["id"] == draft.id and item["state"] == "draft"
    assert item["statement"].strip() == SWITCH and item["statement_ref"] == f"inbound_email:{row.id}"
    assert item["practice_id"] == inbox.world.practice_id and item["requester_name"] == "Parkside Desk"
    # "Readers" is the practice's current company; the other one the email names is the target
    assert item["new_company_id"] == bright and item["deadline_at"] is None
    [event] = await events_of(inbox, "switch_request.draft")
    assert event.practice_id == inbox.world.practice_id and event.data["switch_request_id"] == draft.id
    status, body = await api_get(inbox, f"/api/switch-requests/{draft.id}", "practice_staff",
                                 practice_id=inbox.world.practice_id)
    assert status == 404  # the practice's own staff: not a request until an operator confirms it
    # processed once: a replayed job changes nothing
    from plugins.inbound.process import process

    await process(inbox.hub, row.id)
    assert len(await switch_requests(inbox)) == 1


async def test_spoofed_switch_request_opens_nothing(inbox: Inbox) -> None:
    raw = plain("desk@parkside.example", "support@vet.example", "Changing companies", SWITCH,
                auth=f"{AUTHSERV}; spf=fail smtp.mailfrom=parkside.example; dmarc=fail")
    row = await inbox.deliver(raw, rcpt="support@vet.example")
    assert row.flagged and row.authenticated is False and row.kind == InboundKind.switch_request
    assert await switch_requests(inbox) == []
    assert await events_of(inbox, "switch_request.draft") == []
    assert await events_of(inbox, "inbound.unauthenticated")


async def test_other_support_mail_is_a_conversation_and_strangers_change_nothing(inbox: Inbox) -> None:
    row = await inbox.deliver(plain("desk@parkside.example", "support@vet.example", "Login trouble",
                                    "We cannot log in since Monday."), rcpt="support@vet.example")
    assert row.kind == InboundKind.conversation
    [event] = await events_of(inbox, "inbound.conversation")
    assert event.practice_id == inbox.world.practice_id
    stranger = await inbox.deliver(plain("someone@elsewhere.example", "support@vet.example", "Switch", SWITCH,
                                         auth=f"{AUTHSERV}; dmarc=pass header.from=elsewhere.example"),
                                   rcpt="support@vet.example")
    assert stranger.kind == InboundKind.unknown_sender and stranger.flagged
    assert await switch_requests(inbox) == []
    async with inbox.hub.sessionmaker() as s:
        assert (await s.execute(select(AddressSuppression))).first() is None
        assert (await s.execute(select(HubEvent).where(HubEvent.kind == "switch_request.draft"))).first() is None
