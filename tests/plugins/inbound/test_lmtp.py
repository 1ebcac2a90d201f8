"""The LMTP listener itself: size caps, garbage, several recipients, a store that fails."""

from __future__ import annotations

import asyncio
import smtplib

from sqlalchemy import select

from plugins.inbound.models import InboundEmail, InboundKind

from .conftest import Inbox


def _session(port: int, raw: bytes, rcpts: list[str]) -> list[tuple[int, bytes]]:
    """MAIL, RCPT..., DATA by hand: LMTP answers DATA once per recipient (RFC 2033)."""
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        assert lmtp.mail("sender@example.org")[0] == 250
        for rcpt in rcpts:
            assert lmtp.rcpt(rcpt)[0] == 250
        code, _ = lmtp.docmd("DATA")
        assert code == 354
        lmtp.send(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")  # raw ends in CRLF
        return [lmtp.getreply() for _ in rcpts]


async def test_one_answer_per_recipient(inbox: Inbox) -> None:
    raw = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    answers = await asyncio.to_thread(_session, inbox.port, raw, ["one@vet.example", "two@vet.example"])
    assert [code for code, _ in answers] == [250, 250]
    assert answers[0][1] == answers[1][1]  # stored once for both
    async with inbox.hub.sessionmaker() as s:
        [row] = (await s.execute(select(InboundEmail))).scalars().all()
    assert row.rcpt_to == ["one@vet.example", "two@vet.example"]


async def test_size_cap_keeps_the_head(inbox: Inbox) -> None:
    body = ("x" * 70 + "\r\n") * 300  # ~21 KiB, over the 16 KiB cap below
    raw = f"From: a@example.org\r\nSubject: big\r\n\r\n{body}".encode()
    config = inbox.hub.config.section("inbound")
    config.max_bytes = 16 * 1024  # the listener reads its config per message
    row = await inbox.deliver(raw, rcpt="hub@vet.example")
    assert row.truncated and row.size > len(row.raw) == 16 * 1024
    assert row.raw.startswith(b"From: a@example.org")
    assert row.kind == InboundKind.unrecognised and row.flagged


async def test_over_the_refusal_limit_is_refused(inbox: Inbox) -> None:
    inbox.hub.config.section("inbound").refuse_bytes = 16 * 1024
    # a new listener reads the new limit: restart it
    from plugins.inbound.plugin import listener_of

    listener = listener_of(inbox.hub)
    assert listener is not None
    await listener.stop()
    await listener.start()
    raw = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"y" * (64 * 1024) + b"\r\n"
    answers = await asyncio.to_thread(_session_expect_refusal, listener.port, raw)
    assert answers.startswith(b"5") or answers == b"552"
    async with inbox.hub.sessionmaker() as s:
        assert (await s.execute(select(InboundEmail))).first() is None


def _session_expect_refusal(port: int, raw: bytes) -> bytes:
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        try:
            lmtp.sendmail("sender@example.org", ["hub@vet.example"], raw)
        except smtplib.SMTPDataError as err:
            return str(err.smtp_code).encode()
        except smtplib.SMTPSenderRefused as err:
            return str(err.smtp_code).encode()
    return b"accepted"


async def test_garbage_is_kept_and_flagged_not_crashed_on(inbox: Inbox) -> None:
    raw = b"\x00\xff not a message at all\r\n\r\n--\r\nContent-Type: multipart/report\r\n"
    row = await inbox.deliver(raw, rcpt="bounces+1-deadbeef@vet.example")
    assert row.kind == InboundKind.unrecognised and row.flagged and row.communication_id is None

