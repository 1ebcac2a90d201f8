"""SIGKILL of `vethub run` while inbound mail arrives and is processed: every message that was
answered 250 is kept, and after a restart each is processed exactly once — a note to nobody
makes one operator event, a practice's switch request one draft switch request."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.accounts.models import SwitchRequest
from hub.core import create_hub
from hub.db.models import Account, Company, HubEvent, Practice
from plugins.inbound.models import InboundEmail
from tests.hub.messaging.test_crash import start, wait_until

pytestmark = pytest.mark.slow
N = 120
PRACTICE = "desk@crash-vets.example"


def message(i: int) -> tuple[str, str, bytes]:
    """(envelope sender, recipient, message): every fourth one a practice's switch request."""
    if i % 4 == 0:
        return PRACTICE, "support@vet.example", (
            f"From: {PRACTICE}\r\nTo: support@vet.example\r\nSubject: switching {i}\r\n"
            f"Message-ID: <switch{i}@crash-vets.example>\r\n\r\n"
            f"Please move our radiology account to another company ({i}).\r\n").encode()
    return f"someone{i}@example.org", "hub@vet.example", (
        f"From: someone{i}@example.org\r\nTo: hub@vet.example\r\nSubject: note {i}\r\n"
        f"Message-ID: <note{i}@example.org>\r\n\r\nhello {i}\r\n").encode()


def deliver_many(port: int, count: int, accepted: list[int], stop: list[bool]) -> None:
    """An MTA delivering ``count`` messages over one LMTP session; records the stored ids."""
    try:
        with smtplib.LMTP("127.0.0.1", port) as lmtp:
            for i in range(count):
                if stop:
                    return
                sender, rcpt, raw = message(i)
                if not lmtp.sendmail(sender, [rcpt], raw):
                    accepted.append(i)  # answered 250
    except (smtplib.SMTPException, OSError):
        return  # the hub was killed under us: what was answered 250 is in `accepted`


async def event_counts(config) -> tuple[dict[str, int], Counter[int], int]:
    """The stored messages by state, and how often each one's effect (an operator event, or a
    draft switch request) was recorded."""
    hub = create_hub(config)
    await hub.prepare_database(upgrade=False)
    try:
        async with hub.sessionmaker() as s:
            states = dict((await s.execute(
                select(InboundEmail.state, func.count()).group_by(InboundEmail.state))).all())
            data = (await s.execute(select(HubEvent.data).where(
                HubEvent.kind == "inbound.unrecognised"))).scalars().all()
            refs = (await s.execute(select(SwitchRequest.statement_ref).where(
                SwitchRequest.state == "draft"))).scalars().all()
    finally:
        await hub.engine.dispose()
    effects = [int(d["inbound_email_id"]) for d in data]
    effects += [int(str(ref).removeprefix("inbound_email:")) for ref in refs]
    return states, Counter(effects), len(refs)


async def add_practice(hub) -> None:
    async with hub.transaction() as s:
        practice = Practice(slug="crash-vets", name="Crash Vets", email=PRACTICE, country="US", address={})
        company = Company(slug="readers", name="Readers", modalities=[], settings={})
        s.add_all([practice, company])
        await s.flush()
        s.add(Account(practice_id=practice.id, company_id=company.id, approved_for_access=True, modalities=[]))


async def test_sigkill_between_storing_and_processing(make_config, write_config, free_port,
                                                      tmp_path: Path) -> None:
    port = free_port
    # the MTA on 127.0.0.1 is trusted, so the practice's requests are believed and open drafts
    data = {"inbound": {"listen": f"127.0.0.1:{port}", "support_address": "support@vet.example",
                        "trusted_peers": ["127.0.0.1"]},
            "jobs": {"workers": 2, "lease_seconds": 3, "backoff_initial": 0.05, "backoff_max": 0.5},
            "dicom": {"port": 0}}
    config = make_config(data)
    hub = create_hub(config)
    await hub.start(upgrade=True)
    await add_practice(hub)
    await hub.stop()
    path = write_config(data, name="inbound-sigkill.toml")
    log = tmp_path / "run.log"
    procs: list[subprocess.Popen] = []
    accepted: list[int] = []
    stop: list[bool] = []
    try:
        first = start(path, tmp_path, log)
        procs.append(first)
        await wait_until(lambda: "LMTP listening" in log.read_text(), "the LMTP listener", 60, first, log)
        sender = asyncio.create_task(asyncio.to_thread(deliver_many, port, N, accepted, stop))
        await wait_until(lambda: len(accepted) >= N // 3, "a third of the mail", 120, first, log)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        stop.append(True)
        await sender
        states, _, _ = await event_counts(config)
        stored = sum(states.values())
        assert stored >= len(accepted)  # every 250 was stored first (one more may be stored unanswered)
        assert len(accepted) < N, "the kill came too late to test anything"

        second = start(path, tmp_path, log)
        procs.append(second)

        async def all_processed() -> bool:
            now, _, _ = await event_counts(config)
            return now == {"processed": stored}

        await wait_until(all_processed, "every stored message processed", 120, second, log, every=0.3)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        _, events, drafts = await event_counts(config)
        assert len(events) == stored and set(events.values()) == {1}  # each processed exactly once
        requests = sum(1 for i in accepted if i % 4 == 0)
        assert requests <= drafts <= requests + 1  # one per answered request (one more may be stored unanswered)
    finally:
        stop.append(True)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
