"""SIGKILL of `vethub run` while 1,000 emails go out: after a restart each one was received at
least once, and there are no more duplicates than messages in flight at the kill."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.core import create_hub
from hub.messaging.models import Communication
from hub.messaging.outbound import queue_email
from hub.testing.smtp import ThreadedSmtpSink, _message_id

N = 1000
pytestmark = pytest.mark.slow


def start(config: Path, cwd: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed when the test ends
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "--config", str(config), "--port", "0"],
        cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def wait_until(predicate, what: str, deadline_s: float, proc: subprocess.Popen | None = None,
                     log: Path | None = None, every: float = 0.02) -> None:
    """Poll ``predicate`` (sync, or async when it reads the database) until true or the deadline."""
    deadline = time.monotonic() + deadline_s
    while not await _holds(predicate):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"vethub run exited {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:] if log else ''}")
        await asyncio.sleep(every)


async def _holds(predicate) -> bool:
    result = predicate()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


async def status_counts(hub) -> dict[str, int]:
    async with hub.sessionmaker() as s:
        return dict((await s.execute(
            select(Communication.status, func.count()).group_by(Communication.status))).all())


async def all_sent(hub) -> bool:
    return await status_counts(hub) == {"sent": N}


async def test_sigkill_while_sending(make_config, write_config, tmp_path: Path) -> None:
    received: Counter[str] = Counter()
    sink = ThreadedSmtpSink(keep_messages=False)
    sink.on_message = lambda mail: received.update([_message_id(mail.data)])
    sink.start_sync()
    procs: list[subprocess.Popen] = []
    try:
        data = {
            "email": {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
                      "from_address": "hub@vet.example", "connections": 4},
            "jobs": {"workers": 4, "lease_seconds": 5, "backoff_initial": 0.05, "backoff_max": 0.5},
            "dicom": {"port": 0},
        }
        config = make_config(data)
        hub = create_hub(config)
        await hub.start(upgrade=True)  # PostgreSQL is never upgraded implicitly
        try:
            async with hub.transaction() as s:
                for i in range(N):
                    await queue_email(s, hub, to=f"owner{i}@example.org", template="message",
                                      context={"subject": f"Message {i}", "body": "Hello."})
        finally:
            await hub.stop()

        # Not the default vethub.toml: stopping a hub by its config name (pkill -f vethub.toml)
        # is common on a shared machine and would stop this one mid-test.
        path = write_config(data, name="sigkill-test.toml")
        log = tmp_path / "run.log"
        first = start(path, tmp_path, log)
        procs.append(first)
        await wait_until(lambda: sum(received.values()) >= N // 4, "a quarter of the mail", 120, first, log)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        at_kill = sum(received.values())

        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        counts = await status_counts(hub)
        await hub.engine.dispose()
        in_flight = counts.get("sending", 0)
        assert at_kill < N, "the kill came too late to test anything"
        assert counts.get("sent", 0) + in_flight + counts.get("queued", 0) == N

        second = start(path, tmp_path, log)
        procs.append(second)
        await wait_until(lambda: len(received) >= N, "every message", 180, second, log)
        # Every Message-ID having arrived does not mean every communication is recorded: one that
        # reached the sink just before the kill is still "sending" until its job's lease expires
        # and this process sends it again. Stopping at the first condition alone left it
        # "sending" whenever the restart got through the rest of the queue within one lease.
        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        try:
            await wait_until(lambda: all_sent(hub), "every communication recorded sent", 120, second, log,
                             every=0.2)
        finally:
            await hub.engine.dispose()
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0

        assert len(received) == N  # each one at least once
        duplicates = sum(received.values()) - N
        dup_ids = sorted((m, c) for m, c in received.items() if c > 1)
        assert duplicates <= in_flight, (duplicates, in_flight, counts, at_kill, dup_ids)
        hub = create_hub(config)
        await hub.prepare_database(upgrade=False)
        statuses = await status_counts(hub)
        await hub.engine.dispose()
        assert statuses == {"sent": N}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        sink.stop_sync()
