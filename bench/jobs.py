"""Job-queue throughput: no-op jobs through enqueue -> claim -> complete, beside the floor.

    .venv/bin/python bench/jobs.py [--jobs N] [--repeat R] [--procs 1,2] [--backend sqlite,postgresql]
                                   [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

For each backend and each number of worker processes P, on a fresh database:

- **floor**: each of P processes writes its share of N jobs with SQLAlchemy Core, one INSERT
  per job and then one UPDATE (to ``succeeded``) per job, each in its own transaction — the
  least any durable queue must do, with no queue logic at all;
- **queue**: each of P processes enqueues its share with ``hub.jobs.enqueue`` (one transaction
  per job, as a service would) and runs the hub's own worker loop (``hub.jobs.start(workers=1)``:
  claim with a lease, run the no-op handler, record the outcome) until all N jobs have
  succeeded. Workers in one process take jobs that another process enqueued.

Timing starts when every process is ready (engine connected, hub built) and ends when the last
one is done, so start-up is not counted. Prints jobs/s for each and floor/queue (target: <= 1.5, issue 24),
and the client CPU per job (process time of the worker processes, the aiosqlite thread included;
not the PostgreSQL server's): on a machine shared with other work, wall-clock rates swing with
the load while CPU per job shows the work the code itself does.
PostgreSQL needs ``--pg-url`` or ``VETHUB_BENCH_POSTGRES_URL`` / ``VETHUB_TEST_POSTGRES_URL``
(a user that may create databases); without one it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.config import load_config  # noqa: E402
from hub.core import Hub  # noqa: E402
from hub.db.engine import make_engine  # noqa: E402
from hub.db.models import Job  # noqa: E402
from hub.hookspecs import hookimpl  # noqa: E402
from hub.jobs import JobContext  # noqa: E402
from hub.plugins import get_plugin_manager  # noqa: E402
from hub.testing.fixtures_core import pg_admin  # noqa: E402


class NoopPlugin:
    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        return {"bench.noop": noop}


# Handler runs so far, shared by the worker processes of a run (set in each child): waiting on
# it costs nothing, where polling the database would add client work to every job measured.
RUNS: Any = None


async def noop(hub: Hub, job: JobContext) -> None:
    if RUNS is not None:
        with RUNS.get_lock():
            RUNS.value += 1


def hub_config(url: str, data_dir: str, poll: float) -> Any:
    return load_config("<bench>", env={}, data={
        "hub": {"data_dir": data_dir, "secret_key": "bench"},
        "database": {"url": url},
        "jobs": {"workers": 1, "poll_interval": poll, "lease_seconds": 60},
    })


def make_hub(url: str, data_dir: str, poll: float = 0.05) -> Hub:
    pm = get_plugin_manager(builtins=(), load_entry_points=False, extra=[("bench", NoopPlugin())])
    return Hub(hub_config(url, data_dir, poll), pm)


# --- one process of a run --------------------------------------------------------------------------


async def floor_child(url: str, share: int, ready: Any, go: Any) -> tuple[float, float, float]:
    engine = make_engine(url)
    async with engine.begin() as conn:  # connect before the clock starts
        await conn.execute(select(1))
    ready.wait()
    go.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    now = datetime.now(UTC)
    ids = []
    for i in range(share):
        async with engine.begin() as conn:
            ids.append((await conn.execute(
                insert(Job).values(kind="bench.noop", payload={"i": i}, status="queued", run_at=now, attempts=0,
                                   max_attempts=8, created_at=now).returning(Job.id)
            )).scalar_one())
    for job_id in ids:
        async with engine.begin() as conn:
            await conn.execute(update(Job).where(Job.id == job_id)
                               .values(status="succeeded", attempts=1, finished_at=datetime.now(UTC)))
    t1, c1 = time.perf_counter(), time.process_time()
    await engine.dispose()
    return t0, t1, c1 - c0


async def queue_child(url: str, share: int, total: int, data_dir: str, ready: Any,
                      go: Any) -> tuple[float, float, float]:
    hub = make_hub(url, data_dir)
    await hub.start(upgrade=False, lifecycle=False)
    async with hub.transaction() as session:  # connect before the clock starts
        await session.execute(select(1))
    ready.wait()
    go.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(share):
        async with hub.transaction() as session:
            await hub.jobs.enqueue(session, "bench.noop", {"i": i})
    hub.jobs.start(workers=1)
    while RUNS.value < total:  # every process's jobs have run ...
        await asyncio.sleep(0.002)
    while True:  # ... and their outcomes are committed
        async with hub.sessionmaker() as session:
            done = (await session.execute(
                select(func.count()).select_from(Job).where(Job.status == "succeeded"))).scalar_one()
        if done >= total:
            break
        await asyncio.sleep(0.002)
    t1, c1 = time.perf_counter(), time.process_time()
    await hub.stop()
    return t0, t1, c1 - c0


def child_main(kind: str, url: str, share: int, total: int, data_dir: str, ready: Any, go: Any, out: Any,
               runs: Any) -> None:
    global RUNS
    RUNS = runs
    if kind == "floor":
        result = asyncio.run(floor_child(url, share, ready, go))
    else:
        result = asyncio.run(queue_child(url, share, total, data_dir, ready, go))
    out.put(result)


# --- a run: a fresh database, P processes -----------------------------------------------------------




class Database:
    """One fresh database per backend for the whole benchmark, emptied before each run."""

    def __init__(self, backend: str, pg_url: str | None, tmp: Path) -> None:
        self.backend, self.pg_url, self.tmp = backend, pg_url, tmp
        self.name = f"vethub_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> Database:
        if self.backend == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.tmp / (self.name + '.db')}"
        else:
            assert self.pg_url
            asyncio.run(pg_admin(self.pg_url, f'CREATE DATABASE "{self.name}"'))
            self.url = make_url(self.pg_url).set(database=self.name).render_as_string(hide_password=False)

        async def _migrate() -> None:
            hub = make_hub(self.url, str(self.tmp / "var"))
            await hub.prepare_database(upgrade=True)
            await hub.engine.dispose()

        asyncio.run(_migrate())
        return self

    def empty(self) -> None:
        if self.backend == "sqlite":
            conn = sqlite3.connect(make_url(self.url).database or "")
            conn.execute("DELETE FROM jobs")
            conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        else:
            asyncio.run(pg_admin(self.url.replace("+asyncpg", ""), "TRUNCATE jobs RESTART IDENTITY"))

    def __exit__(self, *exc: Any) -> None:
        if self.backend == "postgresql":
            asyncio.run(pg_admin(self.pg_url or "", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def run(kind: str, db: Database, procs: int, n: int) -> tuple[float, float]:
    """-> (jobs/s, client CPU ms per job summed over the processes)."""
    # fork: the children inherit the imported hub (spawn re-imports it, seconds per run on a
    # busy machine); the parent holds no event loop, thread or connection at this point.
    ctx = mp.get_context("fork")
    db.empty()
    url, data_dir = db.url, str(db.tmp / "var")
    ready, go, out, runs = ctx.Barrier(procs + 1), ctx.Event(), ctx.Queue(), ctx.Value("q", 0)
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children = [ctx.Process(target=child_main, args=(kind, url, s, n, data_dir, ready, go, out, runs)) for s in shares]
    for c in children:
        c.start()
    ready.wait(timeout=120)
    go.set()
    times = [out.get(timeout=600) for _ in children]
    for c in children:
        c.join(timeout=60)
        if c.exitcode != 0:
            raise SystemExit(f"{kind} worker process failed with exit code {c.exitcode}")
    if kind == "queue":
        asyncio.run(check_all_succeeded(url, n))
    wall = max(t[1] for t in times) - min(t[0] for t in times)
    return n / wall, sum(t[2] for t in times) / n * 1000


async def check_all_succeeded(url: str, n: int) -> None:
    engine = make_engine(url)
    async with engine.connect() as conn:
        rows = dict((await conn.execute(select(Job.status, func.count()).group_by(Job.status))).all())
        max_attempts = (await conn.execute(select(func.max(Job.attempts)))).scalar_one()
    await engine.dispose()
    if rows != {"succeeded": n} or max_attempts != 1:
        raise SystemExit(f"queue run incomplete or repeated: {rows}, max attempts {max_attempts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300, help="jobs per run (default 300)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure, the best is kept (default 2)")
    parser.add_argument("--procs", default="1,2", help="worker process counts (default 1,2)")
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("VETHUB_BENCH_POSTGRES_URL")
                        or os.environ.get("VETHUB_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    backends = args.backend.split(",")

    print(f"# vethub job queue, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {args.jobs} no-op jobs per run, "
          f"best of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'backend':<11} {'procs':>5} {'floor jobs/s':>13} {'queue jobs/s':>13} {'floor/queue':>12}"
          f" {'floor cpu ms/job':>17} {'queue cpu ms/job':>17}")
    results = []
    with tempfile.TemporaryDirectory(prefix="vethub-bench-") as tmp:
        for backend in backends:
            if backend == "postgresql" and not args.pg_url:
                print("postgresql: skipped (set --pg-url or VETHUB_BENCH_POSTGRES_URL)")
                continue
            with Database(backend, args.pg_url, Path(tmp)) as db:
                for p in procs:
                    # Best of --repeat runs, floor and queue interleaved, so a burst of load
                    # from elsewhere on the machine hurts one sample rather than one side.
                    floors, queues = [], []
                    for _ in range(args.repeat):
                        floors.append(run("floor", db, p, args.jobs))
                        queues.append(run("queue", db, p, args.jobs))
                    floor, floor_cpu = max(floors)[0], min(f[1] for f in floors)
                    queue, queue_cpu = max(queues)[0], min(q[1] for q in queues)
                    results.append((backend, p, floor, queue))
                    print(f"{backend:<11} {p:>5} {floor:>13.0f} {queue:>13.0f} {floor / queue:>11.2f}x"
                          f" {floor_cpu:>17.2f} {queue_cpu:>17.2f}", flush=True)
    for backend in backends:
        by_p = {p: q for b, p, _f, q in results if b == backend}
        if 1 in by_p and 2 in by_p:
            print(f"{backend}: 2 processes / 1 process = {by_p[2] / by_p[1]:.2f}x")


if __name__ == "__main__":
    main()
