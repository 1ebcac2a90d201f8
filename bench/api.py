"""API read throughput: the hub's read routes beside a floor server doing the same queries.

    .venv/bin/python bench/api.py [--backend sqlite,postgresql] [--connections 20] [--seconds 8]
                                  [--rounds 3] [--paths /api/practices,...] [--load wrk|aiohttp]
                                  [--practices 50]
                                  [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

For each backend, on a fresh database seeded with 50 practices (``--practices``; each with an
account with one company, 40 clients with a patient each), 200 cases and an operator token; the
routes are those the console leans on: practices, the account list with a filter, cases, client
search:

- **hub**: `vethub run` in its own process, the whole path (token middleware, scoping, the
  declared response model, JSON);
- **floor**: a plain aiohttp server in its own process that, per request, looks the token's
  hash up and runs the route's SELECT through the raw driver (aiosqlite with one connection per
  request slot, asyncpg's pool), then writes the rows as JSON — the least any such API must do.

A load generator — wrk (Debian's package; one thread, so the cores are left to the servers)
when installed, else ``--load aiohttp``, a Python client — keeps ``--connections`` requests in
flight for ``--seconds`` against each in turn (hub, floor, hub, floor... per round) and reports requests/s, mean, p50 and p99 latency. The
ratio printed is hub/floor in the same round; the median over rounds is the figure to record.
Run on a quiet machine; PostgreSQL needs ``--pg-url`` or ``VETHUB_BENCH_POSTGRES_URL`` /
``VETHUB_TEST_POSTGRES_URL`` (a user that may create databases).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.testing.fixtures_core import dump_toml, pg_admin  # noqa: E402

PRACTICES = 50
CASES = 200  # over four practices' worth of submissions; the list answers them all
CLIENTS_PER_PRACTICE = 40  # "Smith 0..39" at every practice: the search below finds 50 a page

# The routes the console leans on, and the floor's statements for each: what the hub's handler
# must read at the least (its scope for an operator is "everything").
CLIENT_SQL = (
    "SELECT id, practice_id, external_id, first_name, last_name, status, email, phone_mobile, "
    "comms_disabled FROM clients WHERE practice_id IN (SELECT id FROM practices) AND "
    "(external_id = $1 OR (name_key >= $1 AND name_key < $1 || '~') OR "
    "(surname_key >= $1 AND surname_key < $1 || '~')) ORDER BY surname_key, id LIMIT 51")
OWNERS_SQL = ("SELECT DISTINCT practice_id, client_external_id FROM patients WHERE status = 'active' "
              "AND practice_id = ANY($1) AND client_external_id = ANY($2)")
PATHS = {
    "/api/practices": ["SELECT id, slug, name, email, phone, country, timezone, address, "
                       "managed_by_config FROM practices ORDER BY id"],
    "/api/accounts?status=active": [
        "SELECT a.id, p.id, p.name, p.slug, c.id, c.slug, c.name, a.approved_for_access, "
        "a.modalities, a.auto_submit, a.status, a.managed_by_config, a.created_at, a.updated_at "
        "FROM accounts a JOIN practices p ON p.id = a.practice_id JOIN companies c ON c.id = a.company_id "
        "WHERE a.status = 'active' ORDER BY a.id"],
    "/api/cases": ["SELECT * FROM cases ORDER BY id DESC LIMIT 500"],
    "/api/clients?q=smith": [CLIENT_SQL, OWNERS_SQL],
}


# --- set-up ------------------------------------------------------------------------------------


def write_config(workdir: Path, url: str, practices_count: int = PRACTICES) -> Path:
    practices = [{"slug": f"p{i:03d}", "name": f"Practice {i}", "email": f"p{i}@example.org",
                  "calling_aes": [f"P{i:03d}"]} for i in range(practices_count)]
    accounts = [{"practice": p["slug"], "company": "rads", "approved_for_access": True} for p in practices]
    data = {
        "hub": {"data_dir": str(workdir / "var"), "secret_key": "bench-" + "k" * 40,
                "public_url": "http://127.0.0.1:8080"},
        "database": {"url": url},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "WARNING"},
        "companies": [{"slug": "rads", "name": "Rads", "email": "r@example.org", "modalities": ["CT"]}],
        "practices": practices,
        "accounts": accounts,
        "plugins": {"disabled": ["dicom"]},
    }
    path = workdir / "bench.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


async def seed(url: str) -> None:
    """Cases (each on its own study) and clients with a patient each, written with Core inserts
    into the fresh database: the bench needs rows to list, not the paths that file them."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.db.models import Account, Practice
    from hub.imaging.models import Case, Study
    from hub.pims.models import Client, Patient

    now = datetime.now(UTC)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        practices = [r[0] for r in await conn.execute(select(Practice.id).order_by(Practice.id))]
        accounts = {r[0]: (r[1], r[2]) for r in await conn.execute(
            select(Account.practice_id, Account.id, Account.company_id))}
        studies = [{"practice_id": practices[i % len(practices)], "study_instance_uid": f"1.2.826.0.1.{i}",
                    "modalities": ["CT"], "instance_count": 100, "status": "stable",
                    "first_received_at": now, "last_received_at": now} for i in range(CASES)]
        ids = [r[0] for r in await conn.execute(insert(Study).returning(Study.id, Study.practice_id),
                                                studies)]
        study_practice = {s_id: st["practice_id"] for s_id, st in zip(ids, studies, strict=True)}
        await conn.execute(insert(Case), [
            {"practice_id": pid, "study_id": sid, "account_id": accounts[pid][0],
             "company_id": accounts[pid][1], "status": "delivered", "submitted_by": "bench",
             "clinical_history": "lame left fore, three weeks", "question": "fracture?",
             "patient": {"name": "Rex", "species": "canine"}, "due_at": now + timedelta(days=1)}
            for sid, pid in study_practice.items()])
        await conn.execute(insert(Client), [
            {"practice_id": pid, "external_id": f"c{n}", "first_name": f"Ann{n}", "last_name": "Smith",
             "email": f"ann{n}@example.org", "phone_mobile": "+15555550100", "synced_at": now,
             "name_key": f"ann{n} smith", "surname_key": f"smith ann{n}", "email_key": f"ann{n}@example.org"}
            for pid in practices for n in range(CLIENTS_PER_PRACTICE)])
        await conn.execute(insert(Patient), [
            {"practice_id": pid, "external_id": f"p{n}", "client_external_id": f"c{n}", "name": "Rex",
             "synced_at": now, "name_key": "rex"}
            for pid in practices for n in range(CLIENTS_PER_PRACTICE)])
    await engine.dispose()


def vethub(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("vethub")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=True)


def start_hub(config: Path) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).with_name("vethub")
    proc = subprocess.Popen([str(exe), "run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on http://" in line:
            return proc, line.split("listening on ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("vethub run did not start")


# --- the floor server --------------------------------------------------------------------------


def floor_main(url: str, port_queue: Any, slots: int) -> None:
    asyncio.run(_floor(url, port_queue, slots))


async def _floor(url: str, port_queue: Any, slots: int) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        import aiosqlite

        conns: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(slots):
            conn = await aiosqlite.connect(u.database)
            await conn.execute("PRAGMA query_only=ON")
            conns.put_nowait(conn)

        async def fetch(sql: str, *args: Any) -> list[Any]:
            conn = await conns.get()
            try:
                # the same statements; SQLite has no ANY(array): expand it into IN (...)
                params: list[Any] = []
                for i, arg in enumerate(args, 1):
                    values = arg if isinstance(arg, list) else [arg]
                    marks = [f"?{len(params) + k}" for k in range(1, len(values) + 1)]
                    sql = (sql.replace(f"= ANY(${i})", f"IN ({', '.join(marks)})") if isinstance(arg, list)
                           else sql.replace(f"${i}", marks[0]))
                    params += values
                async with conn.execute(sql, params) as cur:
                    return list(await cur.fetchall())
            finally:
                conns.put_nowait(conn)
    else:
        import asyncpg

        pool = await asyncpg.create_pool(user=u.username, host=u.host, port=u.port or 5432,
                                         database=u.database, min_size=slots, max_size=slots)

        async def fetch(sql: str, *args: Any) -> list[Any]:
            return list(await pool.fetch(sql, *args))

    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").partition(" ")[2]
        digest = hashlib.sha256(token.encode()).hexdigest()
        rows = await fetch("SELECT role, company_id, practice_id FROM api_tokens WHERE token_hash = $1 "
                           "AND revoked_at IS NULL", digest)
        if not rows:
            return web.json_response({"error": "invalid_token"}, status=401)
        statements = PATHS[request.path_qs]
        if len(statements) == 1:
            items = [tuple(r) for r in await fetch(statements[0])]
        else:  # client search: the page, then which of its clients have an active patient
            items = [tuple(r) for r in await fetch(statements[0], request.query["q"])]
            owners = {tuple(o) for o in await fetch(statements[1], sorted({r[1] for r in items}),
                                                    sorted({r[2] for r in items}))}
            items = [(*r, r[5] == "active" and not r[8] and (r[1], r[2]) in owners) for r in items]
        return web.json_response({"items": items}, dumps=lambda o: json.dumps(o, default=str))

    app = web.Application()
    for path in {p.partition("?")[0] for p in PATHS}:
        app.router.add_get(path, handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port_queue.put(runner.addresses[0][1])
    await asyncio.Event().wait()


# --- the load generator ------------------------------------------------------------------------


# wrk's done() hook prints the figures as one JSON line; latency is in microseconds.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "mean_us": %f, "p50_us": %d, '
    .. '"p99_us": %d, "errors": %d}\\n', summary.requests, summary.duration, latency.mean,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def wrk_load(base: str, path: str, token: str, connections: int, seconds: float) -> dict[str, float]:
    """Drive ``path`` with wrk (one thread: C, so it leaves the cores to the servers)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_REPORT)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name,
             "-H", f"Authorization: Bearer {token}", f"{base}{path}"],
            capture_output=True, text=True, check=True, timeout=seconds + 120).stdout
    finally:
        os.unlink(script.name)
    r = json.loads(out.strip().splitlines()[-1])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "mean_ms": r["mean_us"] / 1000,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "errors": r["errors"]}


def load_main(base: str, path: str, token: str, connections: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(_load(base, path, token, connections, seconds)))


async def _load(base: str, path: str, token: str, connections: int, seconds: float) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as session:
        async with session.get(path) as warm:  # one request before the clock
            if warm.status != 200:
                raise RuntimeError(f"{base}{path} answered {warm.status}: {await warm.text()}")
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.get(path) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "mean_ms": 1000 * statistics.fmean(latencies),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "errors": errors}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(base: str, path: str, token: str, connections: int, seconds: float,
            server_pid: int, load: str) -> dict[str, float]:
    cpu0 = cpu_seconds(server_pid)
    if load == "wrk":
        result = wrk_load(base, path, token, connections, seconds)
    else:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=load_main, args=(base, path, token, connections, seconds, out))
        proc.start()
        result = out.get(timeout=seconds + 120)
        proc.join()
    if result["errors"]:
        raise RuntimeError(f"{base}{path}: {result['errors']:.0f} failed requests")
    # The server's CPU per request: on a busy machine wall-clock rates swing with the load,
    # while this shows the work the server's own code does.
    result["cpu_ms"] = 1000 * (cpu_seconds(server_pid) - cpu0) / max(1, result["rps"] * seconds)
    return result


# --- one backend -------------------------------------------------------------------------------


def run_backend(name: str, url: str, args: argparse.Namespace) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-api-{name}-"))
    config = write_config(workdir, url, args.practices)
    vethub("db", "upgrade", "--config", str(config))
    token = vethub("admin", "create-token", "--config", str(config), "--role", "operator",
                   "--name", "bench").stdout.strip().splitlines()[-1]
    asyncio.run(seed(url))
    hub_proc, hub_base = start_hub(config)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    floor = ctx.Process(target=floor_main, args=(url, port_q, args.connections), daemon=True)
    floor.start()
    floor_base = f"http://127.0.0.1:{port_q.get(timeout=60)}"
    results = []
    try:
        for path in args.paths:
            for _ in range(args.rounds):
                hub_r = measure(hub_base, path, token, args.connections, args.seconds, hub_proc.pid,
                                args.load)
                floor_r = measure(floor_base, path, token, args.connections, args.seconds, floor.pid,
                                  args.load)
                results.append((path, hub_r, floor_r))
                print(f"{name:<10} {path:<28} hub {hub_r['rps']:8.0f} req/s p50 {hub_r['p50_ms']:6.1f} "
                      f"p99 {hub_r['p99_ms']:6.1f} ms cpu {hub_r['cpu_ms']:.2f} ms/req | floor {floor_r['rps']:8.0f} req/s p50 "
                      f"{floor_r['p50_ms']:6.1f} p99 {floor_r['p99_ms']:6.1f} ms cpu {floor_r['cpu_ms']:.2f} ms/req | hub/floor "
                      f"{hub_r['rps'] / floor_r['rps']:.2f}", flush=True)
    finally:
        hub_proc.terminate()
        hub_proc.wait(timeout=30)
        floor.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--practices", type=int, default=PRACTICES,
                        help="practices seeded (each with an account and 40 clients); the practice list answers them all")
    parser.add_argument("--load", choices=["wrk", "aiohttp"], default="wrk" if shutil.which("wrk") else "aiohttp",
                        help="load generator: wrk (Debian's; the default when installed) or an aiohttp client")
    parser.add_argument("--pg-url", default=os.environ.get("VETHUB_BENCH_POSTGRES_URL")
                        or os.environ.get("VETHUB_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    args.paths = [p for p in args.paths.split(",") if p]
    print(f"# bench/api.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.connections} connections, "
          f"{args.seconds:g} s x {args.rounds} rounds, load generator {args.load}, {args.practices} practices")
    summary = []
    for backend in args.backend.split(","):
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-api-db-')}/hub.db"
            results = run_backend("sqlite", url, args)
        elif backend == "postgresql":
            if not args.pg_url:
                print("postgresql: skipped (no --pg-url)")
                continue
            from sqlalchemy.engine import make_url

            db = f"vethub_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(pg_admin(args.pg_url, f'CREATE DATABASE "{db}"'))
            url = make_url(args.pg_url).set(database=db).render_as_string(hide_password=False)
            try:
                results = run_backend("postgresql", url, args)
            finally:
                asyncio.run(pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        else:
            raise SystemExit(f"unknown backend {backend}")
        for path in args.paths:
            ratios = [h["rps"] / f["rps"] for p, h, f in results if p == path]
            p99 = [h["p99_ms"] for p, h, f in results if p == path]
            summary.append(f"{backend:<10} {path:<28} median hub/floor {statistics.median(ratios):.2f} "
                           f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); hub p99 median "
                           f"{statistics.median(p99):.1f} ms")
    print("\n".join(["# summary", *summary]))


if __name__ == "__main__":
    main()
