"""PIMS sync benchmark: a generated export through the file-export connector and the sync engine.

    .venv/bin/python bench/pims_sync.py [--clients 100000 --patients 150000 --reminders 300000]
        [--db sqlite] [--db postgresql --pg-url postgresql+asyncpg://postgres@127.0.0.1/postgres]

For each database: the floor (a plain SQLAlchemy Core bulk INSERT of the same normalised rows
into empty tables, batches of 1,000 in one transaction each: what no upsert can beat), then the
hub's full sync of the export into the empty database (CSV parsing, content hashes,
normalisation, upserts, checkpoints, rejects), then an incremental run with 1,000 changed
clients, then a repeated full sync of the unchanged export (every record's content hash
matches: parsed and hashed, not normalised or written). Prints rows/s and the ratio to the
floor. Targets (issue 4): full sync within 3x the floor; the incremental run under 2 s;
(issue 24): full sync within 1.6x the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import make_url

from hub.config import load_config
from hub.core import create_hub
from hub.db.models import Practice
from hub.pims.connector import ConnectorContext
from hub.pims.normalise import normalise
from hub.pims.prepare import _FIELDS, KINDS
from hub.pims.sync import sync_practices
from hub.testing.exports import generate, make_stable, write_export
from hub.testing.fixtures_core import pg_admin

BATCH = 1000


def config_for(url: str, work: Path, drop: Path) -> Any:
    return load_config("<bench>", env={}, data={
        "hub": {"data_dir": str(work / "var"), "secret_key": "bench-secret-key-0123456789",
                "public_url": "http://127.0.0.1"},
        "database": {"url": url},
        "practices": [{"slug": "bench", "name": "Bench", "country": "US", "pims": [
            {"connector": "file_export", "drop_dir": str(drop), "batch_size": BATCH,
             "sync_every_seconds": 0}]}],
    })


CREATED: list[str] = []




async def fresh_url(kind: str, work: Path, pg_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{work / f'{uuid.uuid4().hex[:8]}.db'}"
    assert pg_url, "--pg-url is needed for postgresql"
    name = f"vethub_bench_{uuid.uuid4().hex[:8]}"
    await pg_admin(pg_url, f'CREATE DATABASE "{name}"')
    CREATED.append(name)
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


async def drop_created(pg_url: str | None) -> None:
    while CREATED and pg_url:
        await pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{CREATED.pop()}" WITH (FORCE)')


async def normalised_rows(drop: Path, practice_id: int) -> dict[str, list[dict[str, Any]]]:
    """The rows the sync stores, produced by the same connector and normaliser (not timed)."""
    from connectors.file_export.connector import FileExportConfig, FileExportConnector

    # Read a copy so the real files stay for the sync.
    connector = FileExportConnector(FileExportConfig(drop_dir=drop, stable_seconds=0, batch_size=BATCH),
                                    ConnectorContext("bench", "US"))
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for kind, path in connector.ready_files():
        opened = connector._open(kind, path, "")
        row = 0
        more = True
        while more:
            batch, row, more = connector._read(opened, row, 0)
            for attr_kind, (attr, _t, _c) in KINDS.items():
                for record in getattr(batch, attr):
                    if not isinstance(normalise(record, "US"), str):
                        r = {f: getattr(record, f) for f in _FIELDS[attr_kind]}
                        r["practice_id"] = practice_id
                        rows[attr_kind].append(r)
        opened.handle.close()
    return rows


async def run_db(kind: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    data = generate(args.clients, args.patients, args.reminders, appointments=0, seed=1)
    drop = work / f"drop-{kind}"
    make_stable(*write_export(drop, data).values())
    total = len(data.clients) + len(data.patients) + len(data.reminders)
    # A hub does not hold the export in memory while it syncs it. Here the generated rows
    # (120,000 lists at the size) made each full garbage collection of the timed
    # phases ~40% dearer; they are generated again (same seed, same rows) when needed.
    del data

    # Floor: plain Core bulk insert of the same rows into empty tables.
    hub = create_hub(config_for(await fresh_url(kind, work, args.pg_url), work, drop))
    await hub.start(lifecycle=False, upgrade=True)
    async with hub.sessionmaker() as s:
        practice_id = (await s.execute(Practice.__table__.select())).first().id
    rows = await normalised_rows(drop, practice_id)
    now = hub.clock.now()
    start, cpu = time.perf_counter(), time.process_time()
    for k, (_a, table, _c) in KINDS.items():
        for i in range(0, len(rows[k]), BATCH):
            chunk = [{**r, "synced_at": now} for r in rows[k][i:i + BATCH]]
            async with hub.engine.begin() as conn:
                await conn.execute(insert(table), chunk)
    floor, floor_cpu = time.perf_counter() - start, time.process_time() - cpu
    await hub.stop()

    # The hub's full sync, then an incremental run of 1,000 changed clients.
    hub = create_hub(config_for(await fresh_url(kind, work, args.pg_url), work, drop))
    await hub.start(lifecycle=False, upgrade=True)
    start, cpu = time.perf_counter(), time.process_time()
    [full] = await sync_practices(hub, full=True)
    full_s, full_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert full.status == "succeeded", full.error
    data = generate(args.clients, args.patients, args.reminders, appointments=0, seed=1)
    make_stable(*write_export(drop, data.change(1000), suffix="-delta").values())
    start = time.perf_counter()
    [inc] = await sync_practices(hub)
    inc_s = time.perf_counter() - start
    assert inc.status == "succeeded", inc.error
    # The export's files moved to processed/: drop the same export again.
    make_stable(*write_export(drop, data).values())
    del data
    start, cpu = time.perf_counter(), time.process_time()
    [repeat] = await sync_practices(hub, full=True)
    repeat_s, repeat_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert repeat.status == "succeeded", repeat.error
    await hub.stop()
    changed = inc.counts["client"]["updated"] + inc.counts["patient"]["updated"]
    synced = sum(c["inserted"] for c in full.counts.values())
    print(f"{kind:<11} rows {total:,}: floor {floor:6.1f}s ({total / floor:8,.0f} rows/s) | "
          f"full sync {full_s:6.1f}s ({total / full_s:8,.0f} rows/s) ratio {full_s / floor:4.2f}x | "
          f"incremental 1,000 changes {inc_s:5.2f}s ({changed} updated) | "
          f"repeat full, unchanged {repeat_s:6.1f}s ratio {repeat_s / floor:4.2f}x", flush=True)
    per = 1000 / synced
    print(f"{'':<11} this process's CPU per 1,000 rows synced ({synced:,}, visits included): floor "
          f"{floor_cpu * per * 1000:5.1f} ms | full sync {full_cpu * per * 1000:5.1f} ms "
          f"({full_cpu / floor_cpu:4.2f}x) | repeat {repeat_cpu * per * 1000:5.1f} ms "
          f"({repeat_cpu / floor_cpu:4.2f}x){' (PostgreSQL server not included)' if kind != 'sqlite' else ''}",
          flush=True)
    return {"floor": floor, "full": full_s, "incremental": inc_s, "repeat": repeat_s, "rows": total,
            "floor_cpu": floor_cpu, "full_cpu": full_cpu, "repeat_cpu": repeat_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--patients", type=int, default=150_000)
    parser.add_argument("--reminders", type=int, default=300_000)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default=None)
    args = parser.parse_args()
    print(f"PIMS sync bench on {platform.node()} ({platform.machine()}, Python {platform.python_version()}): "
          f"{args.clients:,} clients, {args.patients:,} patients, {args.reminders:,} reminders")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db or ["sqlite"]:
            try:
                asyncio.run(run_db(kind, args, Path(tmp)))
            finally:
                asyncio.run(drop_created(args.pg_url))


if __name__ == "__main__":
    main()
