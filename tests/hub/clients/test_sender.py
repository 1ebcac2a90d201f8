"""Messages come from the practice: its name as the sender, replies to the practice, and its
own domain signed with its own DKIM key when configured (the hub's stay the fallback)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from hub.clients.reminders import run_reminders
from hub.clients.sender import SENDERS, sender_for
from hub.messaging.models import Communication
from hub.messaging.outbound import queue_email

from .conftest import World


@pytest.fixture(scope="module")
def practice_key(tmp_path_factory) -> tuple[Path, bytes]:
    d = tmp_path_factory.mktemp("dkim")
    key = d / "oak.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return key, base64.b64encode(pub)


async def sent_mail(world: World) -> list:
    await run_reminders(world.hub)
    await world.hub.jobs.run_until_idle()
    return [m for m in world.sink.messages]


async def test_practice_name_reply_to_and_own_dkim(world_factory, practice_key) -> None:
    key, public = practice_key
    world = await world_factory(120, extra={"clients": {"practices": {"oak": {
        "reply_to": "desk@oak.example", "from_address": "care@oak.example",
        "dkim_selector": "oak1", "dkim_private_key_path": str(key)}}}})
    mails = await sent_mail(world)
    assert mails
    for mail in mails[:5]:
        msg = mail.message
        assert msg["From"].addresses[0].display_name == "Oak Veterinary"
        assert msg["From"].addresses[0].addr_spec == "care@oak.example"
        assert msg["Reply-To"].addresses[0].addr_spec == "desk@oak.example"
        # bounces still come back to the hub
        assert mail.mail_from == "hub@vet.example"

        def dns(name: bytes, timeout: int = 5) -> bytes:
            assert name == b"oak1._domainkey.oak.example."
            return b"v=DKIM1; k=rsa; p=" + public

        assert dkim.verify(mail.data, dnsfunc=dns)


async def test_hub_address_is_the_fallback(world: World) -> None:
    mails = await sent_mail(world)
    assert mails
    msg = mails[0].message
    assert msg["From"].addresses[0].display_name == "Oak Veterinary"
    assert msg["From"].addresses[0].addr_spec == "hub@vet.example"
    # the practice has no email in config: no Reply-To is invented
    assert msg["Reply-To"] is None
    # mail that is not a practice's keeps the hub's own name
    async with world.hub.transaction() as s:
        await queue_email(s, world.hub, to="ops@example.org", template="message",
                          context={"subject": "hello", "body": "hi"})
    await world.hub.jobs.run_until_idle()
    last = [m for m in world.sink.messages if m.rcpt_tos == ["ops@example.org"]]
    assert last and last[0].message["From"].addresses[0].display_name == "VetHub"


async def test_sms_and_postcards_carry_the_practice_name(world: World) -> None:
    await run_reminders(world.hub)
    async with world.hub.sessionmaker() as s:
        comms = (await s.execute(select(Communication).where(
            Communication.category == "reminder", Communication.status == "queued"))).scalars()
        for comm in comms:
            if comm.channel == "sms":
                assert comm.body_text.startswith("Oak Veterinary:")
            elif comm.channel == "postcard":
                assert "Oak Veterinary" in (comm.postcard_front_html or "")


def test_practice_dkim_config_must_be_complete(make_config) -> None:
    from hub.config import ConfigError
    from hub.plugins import get_plugin_manager  # noqa: F401 - sections come from plugins

    with pytest.raises(ConfigError, match="DKIM"):
        make_config({"clients": {"practices": {"oak": {"dkim_selector": "x"}}}})


async def test_misses_at_the_same_moment_share_one_read_of_the_practice(world_factory) -> None:
    # A worker's first claimed batch is many messages of one practice, all missing the cache.
    world = await world_factory(5)
    hub = world.hub
    reads: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM practices" in statement:
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", on_execute)  # every engine: reads have their own
    try:
        senders = await asyncio.gather(*(sender_for(hub, world.practice_id) for _ in range(20)))
        assert len(reads) == 1
        assert {s.display_name for s in senders if s is not None} == {"Oak Veterinary"}
        assert await sender_for(hub, world.practice_id) is senders[0]  # cached: no read
        assert len(reads) == 1
        # one waiter cancelled (its job stopped) does not cancel the read the others wait for
        hub.state.pop(SENDERS)
        first = asyncio.ensure_future(sender_for(hub, world.practice_id))
        second = asyncio.ensure_future(sender_for(hub, world.practice_id))
        await asyncio.sleep(0)  # one loop turn: both are waiting on the same read
        first.cancel()
        sender = await second
        assert sender is not None and sender.display_name == "Oak Veterinary"
        assert len(reads) == 2
        assert await sender_for(hub, 999_999) is None  # no such practice: nothing cached
        assert 999_999 not in hub.state[SENDERS]
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
