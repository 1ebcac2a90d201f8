"""Clients benchmark: client search and the daily reminder run, each beside its floor.

    .venv/bin/python bench/clients.py [--clients 100000 --reminders 100000 --queries 1000]
        [--db sqlite] [--db postgresql --pg-url postgresql+asyncpg://postgres@127.0.0.1/postgres]
        [--only search|reminders]

For each database, a practice is synced from a generated export (not timed). Then:

- **search**: ``--queries`` searches through :func:`hub.clients.search.find_clients` (name
  prefixes, emails, phones in the PIMS's formats, PIMS ids; one page of 50), p50 and p99, beside
  a plain indexed ``SELECT … WHERE practice_id = ? AND surname_key >= ? AND surname_key < ?
  ORDER BY surname_key LIMIT 50`` for the same name prefixes: the ratio is the cost of the
  hub's query building, OR-ed terms and the contactable flag.
- **reminder run**: every reminder is made due 28 days from the simulated day, so one run writes
  one step (and one communication, through the contact verdict) per reminder; beside the floor
  of one plain ``INSERT`` per planned step (Core executemany of the same rows into an empty copy
  of ``reminder_steps``).
Targets (issue 23): search under 50 ms at p99 on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Date, Integer, MetaData, String, Table, select, update
from sqlalchemy.engine import make_url

from hub.clients import search
from hub.clients.models import ReminderStep
from hub.clients.reminders import run_reminders
from hub.clock import FrozenClock
from hub.config import load_config
from hub.core import create_hub
from hub.db.models import Practice
from hub.pims.models import Client, Reminder
from hub.pims.normalise import search_key
from hub.pims.sync import sync_practices
from hub.testing.exports import CLIENT_COLUMNS, generate, make_stable, write_export
from hub.testing.fixtures_core import pg_admin

#: 15:00 UTC: inside the default sending hours of a practice in UTC
DAY = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
COL = {name: i for i, name in enumerate(CLIENT_COLUMNS)}
CREATED: list[str] = []


async def fresh_url(kind: str, work: Path, pg_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{work / f'{uuid.uuid4().hex[:8]}.db'}"
    assert pg_url, "--pg-url is needed for postgresql"
    name = f"vethub_bench_{uuid.uuid4().hex[:8]}"
    await pg_admin(pg_url, f'CREATE DATABASE "{name}"')
    CREATED.append(name)
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def config_for(url: str, work: Path, drop: Path) -> Any:
    return load_config("<bench>", env={}, data={
        "hub": {"data_dir": str(work / "var"), "secret_key": "bench-secret-key-0123456789",
                "public_url": "http://127.0.0.1"},
        "database": {"url": url},
        "practices": [{"slug": "bench", "name": "Bench", "country": "US", "pims": [
            {"connector": "file_export", "drop_dir": str(drop), "batch_size": 1000,
             "sync_every_seconds": 0}]}],
        "clients": {"reminder_every_seconds": 0},
    })


def queries(rows: list[list[str]], n: int, seed: int = 1) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        r = rnd.choice(rows)
        kind = ("name", "name", "email", "phone", "id")[i % 5]
        if kind == "name":
            out.append((kind, r[COL["last_name"]][: rnd.randint(2, 5)]))
        elif kind == "email" and r[COL["email"]]:
            out.append((kind, r[COL["email"]]))
        elif kind == "phone" and r[COL["phone_mobile"]]:
            out.append((kind, r[COL["phone_mobile"]]))
        else:
            out.append(("id", r[COL["client_id"]]))
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def bench_search(hub: Any, practice_id: int, qs: list[tuple[str, str]]) -> dict[str, float]:
    hub_times, floor_times = [], []
    async with hub.sessionmaker() as session:
        for _kind, q in qs[:20]:  # warm caches and statement compilation
            await search.find_clients(session, [practice_id], q)
        for kind, q in qs:
            t = time.perf_counter()
            page = await search.find_clients(session, [practice_id], q, limit=50)
            await search.active_patient_owners(session, page.items)
            hub_times.append(time.perf_counter() - t)
            if kind == "name":
                key = search_key(q)
                t = time.perf_counter()
                list((await session.execute(
                    select(Client).where(Client.practice_id == practice_id,
                                         Client.surname_key >= key,
                                         Client.surname_key < key + "~")
                    .order_by(Client.surname_key).limit(50))).scalars())
                floor_times.append(time.perf_counter() - t)
    return {"p50": pct(hub_times, 0.5), "p99": pct(hub_times, 0.99),
            "floor_p50": pct(floor_times, 0.5), "floor_p99": pct(floor_times, 0.99)}


async def bench_reminders(hub: Any, practice_id: int, clock: FrozenClock) -> dict[str, float]:
    due = (DAY + timedelta(days=28)).date()
    async with hub.transaction() as session:
        await session.execute(update(Reminder).where(Reminder.practice_id == practice_id)
                              .values(due_date=due, status="active"))
    clock.set(DAY)
    t, cpu = time.perf_counter(), time.process_time()
    report = await run_reminders(hub)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    async with hub.sessionmaker() as session:
        steps = list((await session.execute(select(
            ReminderStep.practice_id, ReminderStep.reminder_id, ReminderStep.client_id,
            ReminderStep.step, ReminderStep.on_date, ReminderStep.status))).all())
    floor = await insert_floor(hub, [dict(r._mapping) for r in steps])
    return {"steps": report.written, "seconds": seconds, "cpu": cpu, "floor": floor}


async def insert_floor(hub: Any, rows: list[dict[str, Any]]) -> float:
    """One plain INSERT per step into an empty table shaped like reminder_steps."""
    meta = MetaData()
    table = Table(f"floor_steps_{uuid.uuid4().hex[:6]}", meta,
                  Column("id", Integer, primary_key=True), Column("practice_id", Integer),
                  Column("reminder_id", Integer), Column("client_id", Integer),
                  Column("step", String(32)), Column("on_date", Date), Column("status", String(16)))
    async with hub.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    t = time.perf_counter()
    for i in range(0, len(rows), 500):
        async with hub.engine.begin() as conn:
            await conn.execute(table.insert(), rows[i:i + 500])
    return time.perf_counter() - t


async def run_db(kind: str, args: argparse.Namespace, work: Path) -> None:
    drop = work / "drop"
    data = generate(args.clients, reminders=args.reminders, seed=3)
    make_stable(*write_export(drop, data).values())
    clock = FrozenClock(DAY)
    hub = create_hub(config_for(await fresh_url(kind, work, args.pg_url), work, drop), clock=clock)
    await hub.start(upgrade=True, lifecycle=False)
    try:
        await sync_practices(hub, practice="bench")
        async with hub.sessionmaker() as session:
            practice_id = (await session.execute(select(Practice.id))).scalar_one()
        if kind == "postgresql":
            async with hub.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")
        if args.only in (None, "search"):
            s = await bench_search(hub, practice_id, queries(data.clients, args.queries))
            print(f"{kind:<11} search over {args.clients:,} clients: p50 {s['p50']:.2f} ms, "
                  f"p99 {s['p99']:.2f} ms | plain indexed SELECT p50 {s['floor_p50']:.2f} ms, "
                  f"p99 {s['floor_p99']:.2f} ms | ratio p50 {s['p50'] / s['floor_p50']:.2f}x")
        if args.only in (None, "reminders"):
            r = await bench_reminders(hub, practice_id, clock)
            # CPU of this process (SQLite's work included, PostgreSQL's not): a guide to the
            # hub's own cost per message that machine load does not inflate as it does wall time
            print(f"{kind:<11} reminder run over {args.reminders:,} reminders: {r['steps']:,} steps "
                  f"in {r['seconds']:.2f}s ({r['steps'] / r['seconds']:,.0f}/s, hub CPU "
                  f"{r['cpu'] * 1000 / max(1, r['steps']):.2f} ms per step) | one INSERT per step "
                  f"{r['floor']:.2f}s | ratio {r['seconds'] / r['floor']:.1f}x")
    finally:
        await hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--reminders", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--only", choices=["search", "reminders"], help="run one of the two")
    parser.add_argument("--pg-url", default=None)
    args = parser.parse_args()
    print(f"clients bench on {platform.node()} ({platform.machine()}, Python "
          f"{platform.python_version()}), {date.today()}")
    for kind in args.db or ["sqlite"]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                asyncio.run(run_db(kind, args, Path(tmp)))
            finally:
                while CREATED and args.pg_url:
                    asyncio.run(pg_admin(args.pg_url,
                                         f'DROP DATABASE IF EXISTS "{CREATED.pop()}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
