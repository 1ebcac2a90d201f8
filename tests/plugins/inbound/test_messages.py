"""Complaints, mailto unsubscribes, replies and spoofed mail over LMTP (written requests:
test_written.py)."""

from __future__ import annotations

import re
from email.utils import make_msgid

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.db.models import HubEvent
from hub.messaging.facts import load_consent, resolve_preference
from hub.messaging.models import ConsentRecord, InboundMessage
from hub.testing.fixtures_core import ApiClient
from hub.web.app import create_app
from plugins.inbound.models import InboundKind

from .conftest import AUTHSERV, Inbox, sample

PASS = f"{AUTHSERV}; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org"


def plain(sender: str, to: str, subject: str, body: str, *, auth: str | None = PASS,
          extra: str = "") -> bytes:
    headers = [f"Authentication-Results: {auth}"] if auth else []
    headers += [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: {make_msgid()}",
                "Date: Mon, 2 Mar 2026 16:00:00 +0000", "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8"]
    if extra:
        headers.append(extra)
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


async def events_of(inbox: Inbox, kind: str) -> list[HubEvent]:
    async with inbox.hub.sessionmaker() as s:
        return list((await s.execute(select(HubEvent).where(HubEvent.kind == kind))).scalars())


async def preference(inbox: Inbox, category: str) -> tuple[bool | None, str | None]:
    async with inbox.hub.sessionmaker() as s:
        rows = (await load_consent(s, [inbox.client_id])).get(inbox.client_id, [])
    return resolve_preference(rows, category, "email")


# --- complaints ---------------------------------------------------------------------------------


async def test_arf_complaint_suppresses_marketing_with_provider_source(inbox: Inbox) -> None:
    comm = await inbox.comm()
    raw = sample("arf_abuse.eml", TO="abuse-reports@vet.example", RCPT="ann@example.org",
                 MESSAGE_ID=comm.provider_id, AUTHRES=f"{AUTHSERV}; dmarc=pass header.from=mailbox.example")
    row = await inbox.deliver(raw, rcpt="abuse-reports@vet.example")
    assert row.kind == InboundKind.complaint and row.communication_id == comm.id and not row.flagged
    assert await preference(inbox, "marketing") == (False, "provider")
    assert (await preference(inbox, "reminder"))[0] is None  # only marketing
    async with inbox.hub.sessionmaker() as s:
        rec = (await s.execute(select(ConsentRecord).where(ConsentRecord.source == "provider"))).scalar_one()
    assert rec.actor == "mail.mailbox.example" and "abuse" in rec.detail


async def test_spoofed_complaint_changes_nothing(inbox: Inbox) -> None:
    comm = await inbox.comm()
    # an Authentication-Results header the sender wrote itself: not our MTA's authserv-id
    raw = sample("arf_abuse.eml", TO="abuse-reports@vet.example", RCPT="ann@example.org",
                 MESSAGE_ID=comm.provider_id, AUTHRES="mx.attacker.example; dmarc=pass")
    row = await inbox.deliver(raw, rcpt="abuse-reports@vet.example")
    assert row.flagged and row.authenticated is False
    assert await preference(inbox, "marketing") == (None, None)
    assert await events_of(inbox, "inbound.unauthenticated")


# --- mailto unsubscribe -------------------------------------------------------------------------


def _mailto_subject(inbox: Inbox) -> str:
    header = " ".join(inbox.sent.message["List-Unsubscribe"].split())
    mailto = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", header)
    assert mailto is not None and mailto.group(1) == "unsubscribe@vet.example"
    return mailto.group(2).replace("%20", " ")


async def test_mailto_unsubscribe_does_what_one_click_does(inbox: Inbox) -> None:
    subject = _mailto_subject(inbox)
    raw = plain("ann@example.org", "unsubscribe@vet.example", subject, "")
    row = await inbox.deliver(raw, rcpt="unsubscribe@vet.example", mail_from="ann@example.org")
    assert row.kind == InboundKind.unsubscribe and row.outcome["unsubscribed"] == "reminder"
    assert await preference(inbox, "reminder") == (False, "one_click")
    assert (await preference(inbox, "marketing"))[0] is None  # "this list" only, as one-click


async def test_mailto_unsubscribe_token_in_the_address(inbox: Inbox) -> None:
    token = _mailto_subject(inbox).split(" ", 1)[1]
    raw = plain("ann@example.org", f"unsubscribe+{token}@vet.example", "please stop", "")
    row = await inbox.deliver(raw, rcpt=f"unsubscribe+{token}@vet.example")
    assert row.kind == InboundKind.unsubscribe
    assert await preference(inbox, "reminder") == (False, "one_click")


async def test_mailto_unsubscribe_forged_or_unauthenticated(inbox: Inbox) -> None:
    subject = _mailto_subject(inbox)
    forged = subject[:-3] + ("AAA" if not subject.endswith("AAA") else "BBB")
    row = await inbox.deliver(plain("ann@example.org", "unsubscribe@vet.example", forged, ""),
                              rcpt="unsubscribe@vet.example")
    assert row.flagged and row.kind == InboundKind.unsubscribe
    spoofed = await inbox.deliver(plain("ann@example.org", "unsubscribe@vet.example", subject, "", auth=None),
                                  rcpt="unsubscribe@vet.example")
    assert spoofed.flagged and spoofed.authenticated is False
    assert await preference(inbox, "reminder") == (None, None)


# --- replies ------------------------------------------------------------------------------------


async def _timeline(inbox: Inbox, practice_id: int) -> tuple[int, dict]:
    app = create_app(inbox.hub, start_hub=False, run_workers=False)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        staff = await ApiClient(client, inbox.hub).as_role("practice_staff", practice_id=practice_id)
        async with staff.get(f"/api/clients/{inbox.client_id}/timeline") as resp:
            return resp.status, await resp.json()
    finally:
        await client.close()


async def test_reply_by_reply_token_lands_on_the_practice_timeline(inbox: Inbox) -> None:
    reply_to = inbox.sent.message["Reply-To"]
    raw = plain("Ann Smith <ann@example.org>", reply_to, "Re: A reminder", "Can we come on Friday?",
                auth=None)
    row = await inbox.deliver(raw, rcpt=reply_to, mail_from="ann@example.org")
    assert row.kind == InboundKind.reply and row.communication_id == inbox.comm_id
    async with inbox.hub.sessionmaker() as s:
        msg = (await s.execute(select(InboundMessage))).scalar_one()
    assert (msg.client_id, msg.practice_id, msg.channel) == (inbox.client_id, inbox.world.practice_id, "email")
    status, page = await _timeline(inbox, inbox.world.practice_id)
    assert status == 200
    replies = [i for i in page["items"] if i["kind"] == "inbound"]
    assert replies and replies[0]["body"].strip() == "Can we come on Friday?"
    status, _ = await _timeline(inbox, inbox.world.other_practice_id)
    assert status == 404  # another practice does not see it


async def test_reply_by_in_reply_to(inbox: Inbox) -> None:
    comm = await inbox.comm()
    raw = plain("ann@example.org", "hub@vet.example", "Re: A reminder", "Thanks!",
                extra=f"In-Reply-To: {comm.provider_id}")
    row = await inbox.deliver(raw, rcpt="hub@vet.example", mail_from="ann@example.org")
    assert row.kind == InboundKind.reply and row.communication_id == comm.id


async def test_unmatched_reply_is_kept_for_an_operator_never_guessed(inbox: Inbox) -> None:
    # from the client's own address, but answering nothing we sent: not attributed by address
    raw = plain("ann@example.org", "hub@vet.example", "Re: something", "Hello?",
                extra="In-Reply-To: <not-ours@elsewhere.example>")
    row = await inbox.deliver(raw, rcpt="hub@vet.example", mail_from="ann@example.org")
    assert row.kind == InboundKind.unmatched_reply and row.flagged
    async with inbox.hub.sessionmaker() as s:
        assert (await s.execute(select(InboundMessage))).first() is None
    [event] = await events_of(inbox, "inbound.unmatched_reply")
    assert event.practice_id is None and event.data["inbound_email_id"] == row.id
