"""SIGKILL of `vethub run` while emails go out with a large claim batch: after a restart every
message arrives, and the duplicates are bounded by the messages that were on the wire (handed
to the SMTP server, answer not recorded) — not by the jobs the workers held."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from hub.core import create_hub
from hub.messaging.outbound import queue_email
from hub.testing.smtp import ThreadedSmtpSink, _message_id
from tests.hub.messaging.test_crash import start, status_counts, wait_until

N = 400
CONNECTIONS = 4
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


async def all_sent(hub) -> bool:
    return await status_counts(hub) == {"sent": N}


def on_the_wire(journal: Path, sending: set[int]) -> set[int]:
    handed, accepted = set(), set()
    for line in journal.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        cid = int(rest.split(" ")[0])
        (handed if kind == "H" else accepted).add(cid)
    return (handed - accepted) & sending


async def test_duplicates_bounded_by_messages_on_the_wire(make_config, write_config, tmp_path: Path,
                                                          db_url: str) -> None:
    received: Counter[str] = Counter()
    sink = ThreadedSmtpSink(keep_messages=False)
    sink.on_message = lambda mail: received.update([_message_id(mail.data)])
    sink.start_sync()
    procs: list[subprocess.Popen] = []
    try:
        data = {
            "email": {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
                      "from_address": "hub@vet.example", "connections": CONNECTIONS},
            "jobs": {"workers": 4, "claim_batch": 25, "lease_seconds": 5, "backoff_initial": 0.05,
                     "backoff_max": 0.5},
            "dicom": {"port": 0},
        }
        config = make_config(data)
        hub = create_hub(config)
        await hub.start(upgrade=True)
        try:
            async with hub.transaction() as s:
                for i in range(N):
                    await queue_email(s, hub, to=f"owner{i}@example.org", template="message",
                                      context={"subject": f"Message {i}", "body": "Hello."})
        finally:
            await hub.stop()
        path = write_config(data, name="dup-bound-test.toml")
        log = tmp_path / "run.log"
        first = start(path, tmp_path, log)
        procs.append(first)
        await wait_until(lambda: sum(received.values()) >= N // 4, "a quarter of the mail", 120, first, log)
        first.send_signal(signal.SIGKILL)
        first.wait(30)

        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        from sqlalchemy import select

        from hub.messaging.models import Communication
        async with hub.sessionmaker() as s:
            sending = set((await s.execute(select(Communication.id).where(
                Communication.status == "sending"))).scalars())
        await hub.engine.dispose()
        wire = on_the_wire(config.hub.data_dir / "messaging" / "handoff.log", sending)
        assert len(wire) <= 2 * CONNECTIONS, (len(wire), len(sending))

        second = start(path, tmp_path, log)
        procs.append(second)
        await wait_until(lambda: len(received) >= N, "every message", 180, second, log)
        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        try:
            await wait_until(lambda: all_sent(hub), "every communication recorded sent", 120, second, log,
                             every=0.2)
        finally:
            await hub.engine.dispose()
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert len(received) == N
        duplicates = sum(received.values()) - N
        # the old bound was every "sending" message; now only those on the wire
        assert duplicates <= len(wire), (duplicates, len(wire), len(sending))
        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        assert await status_counts(hub) == {"sent": N}
        await hub.engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        sink.stop_sync()
