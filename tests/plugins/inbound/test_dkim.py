"""DKIM verified in the hub (``verify_dkim``): a message signed with dkimpy, with a key made
here and its public half served by a real DNS server (``dns_server``), is believed and may open
a draft switch request; a tampered copy, or a signer the DNS does not know, is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest_asyncio
from dkim.dknewkey import ExtractRSADnsPublicKey, GenRSAKeys
from sqlalchemy import select

from hub.accounts.models import SwitchRequest
from plugins.inbound.models import InboundEmail, InboundKind
from plugins.inbound.plugin import listener_of
from tests.hub.messaging.conftest import World

from .conftest import INBOUND, lmtp_send
from .dns_txt import TxtServer, start_txt_server
from .test_messages import events_of, plain
from .test_written import SWITCH

DOMAIN, SELECTOR = "parkside.example", "s2026"


@dataclass
class Signed:
    world: World
    dns: TxtServer
    key: bytes

    def sign(self, raw: bytes, *, domain: str = DOMAIN) -> bytes:
        header = dkim.sign(raw, SELECTOR.encode(), domain.encode(), self.key,
                           include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
        return header + raw

    async def deliver(self, raw: bytes) -> InboundEmail:
        listener = listener_of(self.world.hub)
        assert listener is not None
        code, text = await asyncio.to_thread(lmtp_send, listener.port, raw, "desk@parkside.example",
                                             "support@vet.example")
        assert code == 250, text
        await self.world.hub.jobs.run_until_idle()
        async with self.world.hub.sessionmaker() as s:
            row = await s.get(InboundEmail, int(text.decode().rsplit(" ", 1)[1]))
            assert row is not None
            return row

    async def drafts(self) -> list[Any]:
        async with self.world.hub.sessionmaker() as s:
            return list((await s.execute(select(SwitchRequest.id))).scalars())


@pytest_asyncio.fixture
async def signed(world_factory, tmp_path: Path) -> AsyncIterator[Signed]:
    dns = await start_txt_server()
    try:
        # openssl (as dkimpy's own key tool does): a 2048-bit RSA key and its DNS record
        private, record = tmp_path / "dkim.key", tmp_path / "dkim.dns"
        await asyncio.to_thread(GenRSAKeys, str(private), False)
        await asyncio.to_thread(ExtractRSADnsPublicKey, str(private), str(record), False)
        dns.publish(f"{SELECTOR}._domainkey.{DOMAIN}", record.read_text().strip())
        world = await world_factory({"inbound": {**INBOUND, "trusted_authserv_ids": [], "verify_dkim": True,
                                                 "dns_server": dns.address, "dns_timeout": 5}})
        yield Signed(world, dns, private.read_bytes())
    finally:
        assert dns.transport is not None
        dns.transport.close()


def request() -> bytes:
    # no Authentication-Results: only the hub's own DKIM check can make it believed
    return plain("Parkside Desk <desk@parkside.example>", "support@vet.example", "Changing companies",
                 SWITCH, auth=None)


async def test_a_signed_switch_request_is_believed_and_opens_a_draft(signed: Signed) -> None:
    row = await signed.deliver(signed.sign(request()))
    assert row.authenticated is True and row.note == "DKIM signature verified"
    assert f"{SELECTOR}._domainkey.{DOMAIN}." in signed.dns.asked  # the key came over DNS
    assert row.kind == InboundKind.switch_request and not row.flagged
    assert await signed.drafts() == [row.outcome["switch_request_id"]]


async def test_a_tampered_message_fails_and_opens_nothing(signed: Signed) -> None:
    raw = signed.sign(request()).replace(b"from next month", b"from tomorrow")
    row = await signed.deliver(raw)
    assert row.authenticated is False and "did not verify" in row.note
    assert f"{SELECTOR}._domainkey.{DOMAIN}." in signed.dns.asked
    assert row.flagged and row.kind == InboundKind.switch_request
    assert await signed.drafts() == []
    assert await events_of(signed.world, "inbound.unauthenticated")


async def test_a_signer_without_a_published_key_fails(signed: Signed) -> None:
    # the From is the practice's, the signature another domain's that DNS answers NXDOMAIN for
    row = await signed.deliver(signed.sign(request(), domain="elsewhere.example"))
    assert row.authenticated is False and f"{SELECTOR}._domainkey.elsewhere.example." in signed.dns.asked
    assert await signed.drafts() == []
