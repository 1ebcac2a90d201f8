"""SIGKILL a `vethub sync` subprocess in the middle of a 50,000-client sync, then restart it:
the final state equals a clean run's, with no duplicates and no double counting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from hub.pims.models import Client, Patient, SyncRun
from hub.testing.exports import generate, make_stable, write_export

CLIENTS = 50_000
COLUMNS = [c for c in Client.__table__.columns.keys() if c not in ("id", "practice_id", "synced_at")]


def vethub(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hub.cli", *args, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def test_sigkill_mid_sync_then_restart(write_config, db_url: str, tmp_path: Path) -> None:
    data = generate(CLIENTS, patients=5_000, reminders=0, appointments=0, seed=11)
    practices = []
    for slug in ("oak", "clean"):
        drop = tmp_path / slug
        make_stable(*write_export(drop, data).values())
        practices.append({"slug": slug, "name": slug, "country": "US", "pims": [
            {"connector": "file_export", "drop_dir": str(drop), "batch_size": 500}]})
    config = write_config({"practices": practices})
    upgrade = subprocess.run([sys.executable, "-m", "hub.cli", "db", "upgrade", "--config", str(config)],
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr

    engine = create_async_engine(db_url)
    try:
        async def clients(slug_id: int) -> int:
            async with engine.connect() as conn:
                return (await conn.execute(select(func.count()).select_from(Client)
                                           .where(Client.practice_id == slug_id))).scalar_one()

        proc = vethub(config, "sync", "--practice", "oak")
        deadline = time.monotonic() + 240
        try:
            while True:  # wait until the sync is well under way, then kill it hard
                assert proc.poll() is None, proc.stdout.read()
                try:
                    if await clients(1) >= 10_000:
                        break
                except Exception:  # tables may be mid-creation on the first polls
                    pass
                assert time.monotonic() < deadline, "the sync never got going"
                await asyncio.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        killed_at = await clients(1)
        assert 10_000 <= killed_at < CLIENTS

        for slug in ("oak", "clean"):
            done = vethub(config, "sync", "--practice", slug)
            out, _ = done.communicate(timeout=600)
            assert done.returncode == 0, out

        async with engine.connect() as conn:
            ids = dict((await conn.execute(select(Client.practice_id, func.count())
                                           .group_by(Client.practice_id))).all())
            assert ids == {1: CLIENTS, 2: CLIENTS}
            rows = {}
            for pid in (1, 2):
                result = await conn.execute(select(*[Client.__table__.c[c] for c in COLUMNS])
                                            .where(Client.practice_id == pid)
                                            .order_by(Client.external_id))
                rows[pid] = [tuple(r) for r in result]
            assert rows[1] == rows[2]
            pets = dict((await conn.execute(select(Patient.practice_id, func.count())
                                            .group_by(Patient.practice_id))).all())
            assert pets == {1: 5_000, 2: 5_000}
            runs = (await conn.execute(select(SyncRun.status, SyncRun.counts)
                                       .where(SyncRun.practice_id == 1).order_by(SyncRun.id))).all()
        # The killed run is marked interrupted by the next; its committed batches plus the
        # resumed run's count every client exactly once.
        assert [r.status for r in runs] == ["interrupted", "succeeded"]
        assert sum(r.counts["client"]["inserted"] for r in runs) == CLIENTS
        assert sum(r.counts["client"]["updated"] for r in runs) == 0
    finally:
        await engine.dispose()
