"""Polling a real Dovecot IMAP server (started by the test with a throw-away config and mail
directory): messages are stored, then deleted from the mailbox, then processed; IDLE picks up
new mail; a message fetched twice (a crash before the delete) is stored once."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from hub.db.models import Job
from hub.messaging.outbound import queue_communication
from plugins.inbound.models import InboundEmail, InboundKind
from plugins.inbound.plugin import poller_of
from plugins.inbound.store import store
from tests.hub.messaging.conftest import add_client

from .conftest import sample
from .dovecot import PASSWORD, USER, Dovecot

pytestmark = pytest.mark.skipif(not Dovecot.available(), reason="dovecot-imapd is not installed")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    root = Path(tempfile.mkdtemp(prefix="vethub-dovecot-"))
    server = Dovecot(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def until(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def imap_world(world_factory, reminder_context, dovecot: Dovecot):
    world = await world_factory(
        {"inbound": {"lmtp": False, "imap": {"host": "127.0.0.1", "port": dovecot.port, "tls": "none",
                                             "username": USER, "password": PASSWORD,
                                             "poll_seconds": 300}}},
        email={"verp_domain": "vet.example"})
    cid = await add_client(world.hub, world.practice_id, "ann")
    async with world.hub.transaction() as s:
        comm = await queue_communication(s, world.hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        comm_id = comm.id
    await world.hub.jobs.run_until_idle()
    await world.sink.wait_for(1)
    return world, comm_id


async def rows(hub) -> list[InboundEmail]:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(InboundEmail).order_by(InboundEmail.id))).scalars())


async def test_bounce_from_imap_is_stored_deleted_and_processed(imap_world, dovecot: Dovecot) -> None:
    world, comm_id = imap_world
    hub = world.hub
    verp = world.sink.messages[0].mail_from
    raw = sample("dsn_hard.eml", TO=verp, RCPT="ann@example.org", MESSAGE_ID="<x@y>").replace(
        b"Return-Path: <>\r\n", f"Return-Path: <>\r\nDelivered-To: {verp}\r\n".encode())
    dovecot.deliver(raw, "1.bounce")

    async def stored() -> bool:
        return len(await rows(hub)) == 1 and dovecot.count() == 0

    await until(stored, "the bounce fetched and deleted from the mailbox")
    await hub.jobs.run_until_idle()
    [row] = await rows(hub)
    assert (row.via, row.mail_from, row.rcpt_to) == ("imap", "", [verp])
    assert row.kind == InboundKind.bounce_hard and row.communication_id == comm_id

    poller = poller_of(hub)
    assert poller is not None
    polls = poller.polls
    # the poller now waits in IDLE (Dovecot offers it); new mail wakes it before poll_seconds
    dovecot.deliver(b"From: someone@example.org\r\nTo: hub@vet.example\r\nSubject: hi\r\n\r\nhello\r\n", "2.note")

    async def second() -> bool:
        return len(await rows(hub)) == 2 and poller.polls > polls

    await until(second, "the second message")  # 30 s, against a 300 s poll: only IDLE gets it


async def test_a_message_fetched_twice_is_stored_once(imap_world) -> None:
    """A crash after storing but before the IMAP delete fetches the message again."""
    world, _ = imap_world
    hub = world.hub
    raw = b"From: someone@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    key = "imap:127.0.0.1/INBOX/1/7"
    first = await store(hub, raw, via="imap", peer="127.0.0.1", mail_from="someone@example.org",
                        rcpt_to=["hub@vet.example"], max_bytes=1 << 20, source_key=key)
    again = await store(hub, raw, via="imap", peer="127.0.0.1", mail_from="someone@example.org",
                        rcpt_to=["hub@vet.example"], max_bytes=1 << 20, source_key=key)
    assert first == again and len(await rows(hub)) == 1
    async with hub.sessionmaker() as s:
        jobs = (await s.execute(select(func.count(Job.id)).where(Job.kind == "inbound.process"))).scalar()
    assert jobs == 1
