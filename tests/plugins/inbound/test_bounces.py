"""Bounces delivered over LMTP: DSNs (RFC 3464) and a non-standard format, matched to the
communication by the VERP envelope sender or the quoted Message-ID."""

from __future__ import annotations

from sqlalchemy import select

from hub.clients.alerts import AlertCode, alerts
from hub.clients.details import email_status
from hub.db.models import HubEvent
from hub.messaging.models import AddressSuppression, ConsentRecord
from hub.pims.models import Client
from plugins.channels.email import read_address_token
from plugins.inbound.models import InboundEmail, InboundKind, InboundState
from plugins.inbound.process import process

from .conftest import Inbox, sample


async def _client_email_state(inbox: Inbox) -> tuple[str, list[str]]:
    async with inbox.hub.sessionmaker() as s:
        client = await s.get(Client, inbox.client_id)
        return await email_status(s, client), [a.code for a in await alerts(s, client, inbox.hub.clock.now())]


async def test_outbound_mail_carries_verp_and_reply_tokens(inbox: Inbox) -> None:
    sent = inbox.sent
    local = sent.mail_from.rpartition("@")[0]
    assert local.startswith("bounces+")
    secret = inbox.hub.config.hub.secret_key.get_secret_value().encode()
    assert read_address_token(secret, "verp", local.partition("+")[2]) == inbox.comm_id
    assert read_address_token(secret, "reply", local.partition("+")[2]) is None  # bound to its purpose
    reply_to = sent.message["Reply-To"]
    assert reply_to.startswith("reply+") and reply_to.endswith("@vet.example")
    forged = f"{inbox.comm_id}-{'0' * 20}"
    assert read_address_token(secret, "verp", forged) is None


async def test_hard_bounce_to_verp_marks_the_address_bounced(inbox: Inbox) -> None:
    assert await _client_email_state(inbox) == ("unverified", [])
    raw = sample("dsn_hard.eml", TO=inbox.sent.mail_from, RCPT="ann@example.org", MESSAGE_ID="<unrelated@x>")
    row = await inbox.deliver(raw, rcpt=inbox.sent.mail_from)
    assert row.state == InboundState.processed and row.kind == InboundKind.bounce_hard
    assert row.communication_id == inbox.comm_id and row.address == "ann@example.org"
    assert (await inbox.comm()).status == "bounced"
    async with inbox.hub.sessionmaker() as s:
        sup = (await s.execute(select(AddressSuppression).where(
            AddressSuppression.address == "ann@example.org"))).scalar_one()
        assert (sup.reason, sup.source, sup.active) == ("invalid", "bounce", True)
        assert "5.1.1" in sup.detail and f"inbound email {row.id}" in sup.detail  # provenance
        ledger = (await s.execute(select(ConsentRecord).where(
            ConsentRecord.address == "ann@example.org"))).scalars().all()
        assert [(r.source, r.allowed) for r in ledger] == [("bounce", False)]
    status, codes = await _client_email_state(inbox)
    assert status == "bounced" and AlertCode.invalid_email in codes


async def test_bounce_matched_by_message_id(inbox: Inbox) -> None:
    comm = await inbox.comm()
    raw = sample("dsn_hard.eml", TO="hub@vet.example", RCPT="ann@example.org", MESSAGE_ID=comm.provider_id)
    # authenticated by our MTA (the DSN went to the plain envelope address, not a VERP one)
    raw = b"Authentication-Results: mx.vet.example; spf=pass smtp.mailfrom=mx.example.org\r\n" + raw
    raw = raw.replace(b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>",
                      b"From: MAILER-DAEMON@mx.example.org")
    row = await inbox.deliver(raw, rcpt="hub@vet.example")
    assert row.kind == InboundKind.bounce_hard and row.communication_id == comm.id
    assert row.authenticated is True
    assert (await _client_email_state(inbox))[0] == "bounced"


async def test_unauthenticated_bounce_without_verp_changes_nothing(inbox: Inbox) -> None:
    comm = await inbox.comm()
    raw = sample("dsn_hard.eml", TO="hub@vet.example", RCPT="ann@example.org", MESSAGE_ID=comm.provider_id)
    row = await inbox.deliver(raw, rcpt="hub@vet.example")
    assert row.flagged and row.authenticated is False and row.kind == InboundKind.bounce_hard
    assert (await _client_email_state(inbox))[0] == "unverified"
    async with inbox.hub.sessionmaker() as s:
        kinds = (await s.execute(select(HubEvent.kind))).scalars().all()
    assert "inbound.unauthenticated" in kinds and "messaging.address_invalid" not in kinds


async def test_forged_verp_token_is_not_trusted(inbox: Inbox) -> None:
    forged = f"bounces+{inbox.comm_id}-{'a' * 20}@vet.example"
    raw = sample("dsn_hard.eml", TO=forged, RCPT="ann@example.org", MESSAGE_ID="<x@y>")
    row = await inbox.deliver(raw, rcpt=forged)
    assert row.flagged and row.communication_id is None
    assert (await _client_email_state(inbox))[0] == "unverified"


async def test_soft_bounces_count_toward_the_threshold(inbox: Inbox) -> None:
    raw = sample("dsn_soft.eml", TO=inbox.sent.mail_from, RCPT="ann@example.org", MESSAGE_ID="<m@x>")
    first = await inbox.deliver(raw, rcpt=inbox.sent.mail_from)
    assert first.kind == InboundKind.bounce_soft and first.outcome["failures"][0]["marked_invalid"] is False
    assert (await _client_email_state(inbox))[0] == "unverified"
    assert (await inbox.comm()).status == "sent"  # a delay is not a bounce
    second = await inbox.deliver(raw, rcpt=inbox.sent.mail_from)  # threshold 2 in the fixture
    assert second.outcome["failures"][0]["marked_invalid"] is True
    assert (await _client_email_state(inbox))[0] == "bounced"


async def test_non_standard_bounce_via_flufl_bounce(inbox: Inbox) -> None:
    raw = sample("qmail_bounce.eml", TO=inbox.sent.mail_from, RCPT="ann@example.org", MESSAGE_ID="<m@x>")
    row = await inbox.deliver(raw, rcpt=inbox.sent.mail_from)
    assert row.kind == InboundKind.bounce_hard and row.outcome["source"] == "flufl.bounce"
    assert (await _client_email_state(inbox))[0] == "bounced"


async def test_processing_twice_acts_once(inbox: Inbox) -> None:
    """The job replayed after a crash (or run twice) finds the row processed and does nothing."""
    raw = sample("dsn_soft.eml", TO=inbox.sent.mail_from, RCPT="ann@example.org", MESSAGE_ID="<m@x>")
    row = await inbox.deliver(raw, rcpt=inbox.sent.mail_from, process=False)
    assert row.state == InboundState.pending  # stored before the 250, not yet processed
    assert await process(inbox.hub, row.id) == InboundKind.bounce_soft
    assert await process(inbox.hub, row.id) == InboundKind.bounce_soft
    await inbox.hub.jobs.run_until_idle()  # the stored job itself, after the fact
    async with inbox.hub.sessionmaker() as s:
        rows = (await s.execute(select(InboundEmail))).scalars().all()
    assert len(rows) == 1 and rows[0].outcome["failures"][0]["marked_invalid"] is False
    assert (await _client_email_state(inbox))[0] == "unverified"  # one soft bounce, counted once
