"""Email throughput: the hub's whole path beside raw aiosmtplib, into the same aiosmtpd sink.

    .venv/bin/python bench/email_throughput.py [--n 5000] [--db sqlite|URL]

Reference (same run, same sink): aiosmtplib building each message with
``email.message.EmailMessage`` and sending over 1 and 10 connections — the figures
the peers were measured at (529/s and 673/s on this machine kind).

Hub: N reminder emails to N clients through the whole path — contact verdict for every client,
Jinja2 render, the communication row with its verdict and status history, the outbox job, the
worker claiming it, the SMTP channel (10 connections), the sent status — timed from the start
of queueing until the sink has received the last message.

The sink runs in its own process (``python -m hub.testing.smtp``) so that it does not share an
event loop with either sender. Prints both rates and the ratio, and the client CPU per message
of each; the targets (issue 24) are a ratio of at least 0.7 to the raw ten-connection rate and
hub CPU per message at most 1.5 times raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = (
    "Dear Ann Smith,\n\nRex is due for the rabies vaccine on 2026-03-09.\n"
    "Please call Parkside Vets on 555-0100 to book.\n\n"
    "Choose which messages you receive: https://hub.example/messaging/preferences/abc\n"
)
HTML = (
    "<html><body><p>Dear Ann Smith,</p><p><strong>Rex</strong> is due for the rabies vaccine "
    "on 2026-03-09.</p><p>Please call Parkside Vets on 555-0100 to book.</p><p><a href="
    "'https://hub.example/messaging/preferences/abc'>Choose which messages you receive</a></p>"
    "</body></html>"
)


#: client CPU seconds per message of each run (this process, its threads included)
CPU: dict[str, float] = {}


class Sink:
    """aiosmtpd in a child process; counts messages through its log file."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "sink.log"
        self.log.touch()
        port_file = workdir / "sink.port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.testing.smtp", "--log", str(self.log), "--port-file", str(port_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("SMTP sink did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self._offset = 0
        self._count = 0

    def count(self) -> int:
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        last = chunk.rfind(b"\n")
        if last >= 0:
            self._count += chunk[: last + 1].count(b"\n")
            self._offset += last + 1
        return self._count

    async def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink has {self.count()} of {total}")
            await asyncio.sleep(0.05)  # each poll opens a file: keep it cheap

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def build(i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Parkside Vets <hub@vet.example>"
    msg["To"] = f"owner{i}@example.org"
    msg["Subject"] = "Parkside Vets: Rex is due for rabies vaccine"
    msg["Message-ID"] = f"<raw.{i}@vet.example>"
    msg.set_content(TEXT)
    msg.add_alternative(HTML, subtype="html")
    return msg


async def raw_rate(sink: Sink, n: int, connections: int) -> float:
    start_count = sink.count()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False)
        await smtp.connect()
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                msg = build(i)
                await smtp.sendmail("hub@vet.example", [msg["To"]], msg.as_bytes())
        finally:
            await smtp.quit()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    await sink.wait_for(start_count + n)
    CPU[f"raw{connections}"] = (time.process_time() - c0) / n
    return n / (time.perf_counter() - t0)


async def hub_rate(sink: Sink, n: int, db: str, workdir: Path, workers: int = 10,
                   claim_batch: int = 1, _fresh: bool = False) -> tuple[float, dict[str, float]]:
    from sqlalchemy import func, select

    from hub.config import load_config
    from hub.core import create_hub
    from hub.db.models import Account, Company, Practice
    from hub.messaging.models import Communication
    from hub.messaging.outbound import queue_many
    from hub.pims.models import Client, Patient

    if db != "sqlite" and not _fresh:  # a throwaway database on that server, never the one named
        import uuid

        from sqlalchemy.engine import make_url

        from hub.testing.fixtures_core import pg_admin

        name = f"vethub_email_bench_{uuid.uuid4().hex[:8]}"
        await pg_admin(db, f'CREATE DATABASE "{name}"')
        try:
            return await hub_rate(sink, n, make_url(db).set(database=name).render_as_string(hide_password=False),
                                  workdir, workers, claim_batch, _fresh=True)
        finally:
            await pg_admin(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}" if db == "sqlite" else db
    config = load_config("<bench>", env={}, data={
        "hub": {"data_dir": str(workdir / "var"), "secret_key": "bench-secret"},
        "database": {"url": url},
        "http": {"port": 0},
        "jobs": {"workers": workers, "claim_batch": claim_batch, "poll_interval": 0.05, "lease_seconds": 60},
        "email": {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
                  "from_address": "hub@vet.example", "from_name": "Parkside Vets", "connections": 10},
        "messaging": {"quiet_hours_channels": []},
        "dicom": {"port": 0},
    })
    hub = create_hub(config)
    await hub.start(upgrade=True)
    try:
        async with hub.transaction() as s:
            practice = Practice(slug="parkside", name="Parkside Vets", country="US",
                                timezone="America/New_York", address={})
            company = Company(slug="c", name="C", modalities=[], settings={})
            s.add_all([practice, company])
            await s.flush()
            s.add(Account(practice_id=practice.id, company_id=company.id, approved_for_access=True, modalities=[]))
            clients = [Client(practice_id=practice.id, external_id=f"c{i}", first_name="Ann", last_name=f"Smith{i}",
                              email=f"owner{i}@example.org", phone_mobile="+12025550143",
                              address_line1="1 Main St", city="Springfield", postcode="62701")
                       for i in range(n)]
            s.add_all(clients)
            s.add_all(Patient(practice_id=practice.id, external_id=f"p{i}", client_external_id=f"c{i}",
                              name="Rex") for i in range(n))
            await s.flush()
            ids = [c.id for c in clients]
        start_count = sink.count()
        timings: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        async with hub.transaction() as s:
            await queue_many(s, hub, client_ids=ids, template="reminder", category="reminder",
                             channels=["email"], context={"patient_name": "Rex", "service": "rabies vaccine",
                                                          "due_date": "2026-03-09"})
        timings["queue (verdict, render, record, outbox)"] = time.perf_counter() - t0
        hub.jobs.start()
        await sink.wait_for(start_count + n)
        elapsed = time.perf_counter() - t0
        CPU["hub"] = (time.process_time() - c0) / n
        timings["send (claim, SMTP, status)"] = elapsed - timings["queue (verdict, render, record, outbox)"]
        await hub.jobs.stop()
        async with hub.sessionmaker() as s:
            sent = (await s.execute(select(func.count()).where(Communication.status == "sent"))).scalar_one()
        timings["communications marked sent"] = sent
        return n / elapsed, timings
    finally:
        await hub.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--raw-n", type=int, default=2000, help="messages per raw reference run")
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a postgresql+asyncpg:// URL")
    parser.add_argument("--workers", type=int, default=4, help="hub job workers (SMTP connections: 10)")
    parser.add_argument("--claim-batch", type=int, default=25, help="jobs each worker claims at once (jobs.claim_batch)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vethub-bench-") as tmp:
        workdir = Path(tmp)
        sink = Sink(workdir)
        try:
            raw1 = await raw_rate(sink, args.raw_n, 1)
            raw10 = await raw_rate(sink, args.raw_n, 10)
            rate, timings = await hub_rate(sink, args.n, args.db, workdir, args.workers, args.claim_batch)
            raw10_after = await raw_rate(sink, args.raw_n, 10)
        finally:
            sink.stop()
    ref = (raw10 + raw10_after) / 2
    print(f"raw aiosmtplib, EmailMessage per message, 1 connection : {raw1:8.0f} msg/s")
    print(f"raw aiosmtplib, EmailMessage per message, 10 connections: {raw10:8.0f} msg/s (before), "
          f"{raw10_after:.0f} (after)")
    print(f"hub whole path ({args.n} emails, {args.db.split(':')[0]}, {args.workers} workers x {args.claim_batch} claimed, 10 SMTP connections): {rate:8.0f} msg/s")
    for k, v in timings.items():
        print(f"    {k}: {v:.2f}{'' if k.startswith('communications') else ' s'}")
    print(f"ratio hub / raw ten-connection (mean of before and after): {rate / ref:.2f} (target >= 0.70)")
    print(f"client CPU per message: raw 10 connections {CPU['raw10'] * 1000:.2f} ms, hub {CPU['hub'] * 1000:.2f} ms "
          f"(hub / raw {CPU['hub'] / CPU['raw10']:.2f}, target <= 1.5); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
