"""Liveness, readiness and Prometheus metrics: the open operational routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select, text

from hub.db.models import Job
from hub.ops.metrics import CHECK_OK, READY
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()
JOBS_BY_STATUS = Gauge("vethub_job_queue", "Jobs in the queue by status", ["status"])
STARTED = time.monotonic()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "uptime_seconds": round(time.monotonic() - STARTED, 1)})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks = await readiness(request.app[HUB_KEY])
    ready = all(c["ok"] for c in checks.values())
    if not await _operator_asks(request):
        checks = _public(checks)
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def readiness(hub: Any) -> dict[str, dict[str, object]]:
    """Every check: the database, each channel, each plugin's (also the console's plugins page)."""
    checks: dict[str, dict[str, object]] = {}
    try:
        async with asyncio.timeout(5), hub.read_session() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True, "detail": hub.engine.dialect.name}
    except Exception as err:
        checks["database"] = {"ok": False, "detail": f"{type(err).__name__}: {err}"}
    for name, channel in hub.channels.items():
        try:
            async with asyncio.timeout(5):
                ok, detail = await channel.health()
        except Exception as err:
            ok, detail = False, f"{type(err).__name__}: {err}"
        checks[f"channel:{name}"] = {"ok": ok, "detail": detail}
    for contributed in hub.pm.hook.vethub_health_checks(hub=hub):
        for name, check in (contributed or {}).items():
            checks[name] = await _run_check(check)
    ready = all(c["ok"] for c in checks.values())
    READY.set(1 if ready else 0)
    for name, check in checks.items():
        CHECK_OK.labels(name).set(1 if check["ok"] else 0)
    return checks


def _public(checks: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """What anyone may see: ok per kind of check; no tenant (practice slugs are in the names
    after the colon) and no provider error text, which only an operator token shows."""
    out: dict[str, dict[str, object]] = {}
    for name, check in checks.items():
        kind = name.split(":", 1)[0]
        out[kind] = {"ok": bool(out.get(kind, {"ok": True})["ok"]) and bool(check["ok"])}
    return out


async def _operator_asks(request: web.Request) -> bool:
    from hub.auth import AuthError, authenticate_on

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    hub = request.app[HUB_KEY]
    token, now = token.strip(), hub.clock.now()
    try:  # a read: the read engine, never SQLite's write lock
        return (await hub.read(lambda conn: authenticate_on(conn, token, now))).is_operator
    except AuthError:
        return False


async def _run_check(check: Callable[[], Awaitable[tuple[bool, str]]]) -> dict[str, object]:
    try:
        async with asyncio.timeout(5):
            ok, detail = await check()
    except Exception as err:
        ok, detail = False, f"{type(err).__name__}: {err}"
    return {"ok": ok, "detail": detail}


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:  # the counters must still be served while the database is down
        async with asyncio.timeout(5), hub.read_session() as session:
            counts = dict((await session.execute(select(Job.status, func.count()).group_by(Job.status))).all())
    except Exception:
        counts = None
    for status in ("queued", "running", "succeeded", "dead"):
        if counts is not None:
            JOBS_BY_STATUS.labels(status).set(counts.get(status, 0))
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
