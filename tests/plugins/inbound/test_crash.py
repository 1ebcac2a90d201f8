"""SIGKILL of `vethub run` while inbound mail arrives and is processed: every message that was
answered 250 is kept, and after a restart each is processed exactly once."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.core import create_hub
from hub.db.models import HubEvent
from plugins.inbound.models import InboundEmail
from tests.hub.messaging.test_crash import start, wait_until

pytestmark = pytest.mark.slow
N = 120


def deliver_many(port: int, count: int, accepted: list[int], stop: list[bool]) -> None:
    """An MTA delivering ``count`` messages over one LMTP session; records the stored ids."""
    try:
        with smtplib.LMTP("127.0.0.1", port) as lmtp:
            for i in range(count):
                if stop:
                    return
                raw = (f"From: someone{i}@example.org\r\nTo: hub@vet.example\r\nSubject: note {i}\r\n"
                       f"Message-ID: <note{i}@example.org>\r\n\r\nhello {i}\r\n").encode()
                if not lmtp.sendmail(f"someone{i}@example.org", ["hub@vet.example"], raw):
                    accepted.append(i)  # answered 250
    except (smtplib.SMTPException, OSError):
        return  # the hub was killed under us: what was answered 250 is in `accepted`


async def event_counts(config) -> tuple[dict[str, int], Counter[int]]:
    hub = create_hub(config)
    await hub.prepare_database(upgrade=False)
    try:
        async with hub.sessionmaker() as s:
            states = dict((await s.execute(
                select(InboundEmail.state, func.count()).group_by(InboundEmail.state))).all())
            data = (await s.execute(select(HubEvent.data).where(
                HubEvent.kind == "inbound.unrecognised"))).scalars().all()
    finally:
        await hub.engine.dispose()
    return states, Counter(int(d["inbound_email_id"]) for d in data)


async def test_sigkill_between_storing_and_processing(make_config, write_config, free_port,
                                                      tmp_path: Path) -> None:
    port = free_port
    data = {"inbound": {"listen": f"127.0.0.1:{port}"},
            "jobs": {"workers": 2, "lease_seconds": 3, "backoff_initial": 0.05, "backoff_max": 0.5},
            "dicom": {"port": 0}}
    config = make_config(data)
    hub = create_hub(config)
    await hub.start(upgrade=True)
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
        states, _ = await event_counts(config)
        stored = sum(states.values())
        assert stored >= len(accepted)  # every 250 was stored first (one more may be stored unanswered)
        assert len(accepted) < N, "the kill came too late to test anything"

        second = start(path, tmp_path, log)
        procs.append(second)

        async def all_processed() -> bool:
            now, _ = await event_counts(config)
            return now == {"processed": stored}

        await wait_until(all_processed, "every stored message processed", 120, second, log, every=0.3)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        _, events = await event_counts(config)
        assert len(events) == stored and set(events.values()) == {1}  # each processed exactly once
    finally:
        stop.append(True)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
