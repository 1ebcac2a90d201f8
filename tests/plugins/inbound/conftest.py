"""Fixtures: a hub with ``[inbound]`` listening on LMTP (port 0), its email going to an aiosmtpd
sink with VERP and reply tokens on, and a client who has been sent one reminder."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import select

from hub.messaging.models import Communication
from hub.messaging.outbound import queue_communication
from hub.testing.smtp import ReceivedMail
from plugins.inbound.models import InboundEmail
from plugins.inbound.plugin import listener_of
from tests.hub.messaging.conftest import (  # noqa: F401 - fixtures used by these tests
    World,
    add_client,
    client_maker,
    reminder_context,
    world_factory,
)

SAMPLES = Path(__file__).parent / "samples"
AUTHSERV = "mx.vet.example"


def sample(name: str, **values: str) -> bytes:
    text = (SAMPLES / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def lmtp_send(port: int, raw: bytes, mail_from: str, rcpt: str) -> tuple[int, bytes]:
    """Deliver as an MTA would, over LMTP (smtplib's client), and return the DATA answer."""
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        code, text = lmtp.mail(mail_from)
        assert code == 250, text
        code, text = lmtp.rcpt(rcpt)
        assert code == 250, text
        return lmtp.data(raw)


@dataclass
class Inbox:
    world: World
    client_id: int
    comm_id: int
    sent: ReceivedMail

    @property
    def hub(self) -> Any:
        return self.world.hub

    @property
    def port(self) -> int:
        listener = listener_of(self.hub)
        assert listener is not None
        return listener.port

    async def deliver(self, raw: bytes, *, rcpt: str, mail_from: str = "", process: bool = True) -> InboundEmail:
        code, text = await asyncio.to_thread(lmtp_send, self.port, raw, mail_from, rcpt)
        assert code == 250, text
        ident = int(text.decode().rsplit(" ", 1)[1])
        if process:
            await self.hub.jobs.run_until_idle()
        async with self.hub.sessionmaker() as s:
            row = await s.get(InboundEmail, ident)
            assert row is not None
            return row

    async def comm(self) -> Communication:
        async with self.hub.sessionmaker() as s:
            return (await s.execute(select(Communication).where(Communication.id == self.comm_id))).scalar_one()


INBOUND = {"listen": "127.0.0.1:0", "trusted_authserv_ids": [AUTHSERV],
           "support_address": "support@vet.example", "soft_bounce_threshold": 2}


@pytest_asyncio.fixture
async def inbox(world_factory, reminder_context) -> Inbox:  # noqa: F811
    world = await world_factory({"inbound": dict(INBOUND)},
                                email={"verp_domain": "vet.example", "reply_tokens": True,
                                       "unsubscribe_mailto": "unsubscribe@vet.example"})
    hub = world.hub
    cid = await add_client(hub, world.practice_id, "ann")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        comm_id = comm.id
    await hub.jobs.run_until_idle()
    await world.sink.wait_for(1)
    return Inbox(world, cid, comm_id, world.sink.messages[0])
