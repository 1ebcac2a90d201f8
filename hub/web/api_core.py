"""The core's API: companies, practices, operator events, jobs; all scoped to the caller."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events, jobs
from hub.auth import Principal
from hub.db.models import Company, Job, Practice
from hub.web.auth import get_principal, require_role
from hub.web.errors import ApiError, not_found
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()


def company_json(c: Company) -> dict[str, Any]:
    return {"id": c.id, "slug": c.slug, "name": c.name, "email": c.email, "modalities": c.modalities,
            "managed_by_config": c.managed_by_config}


def practice_json(p: Practice) -> dict[str, Any]:
    return {"id": p.id, "slug": p.slug, "name": p.name, "email": p.email, "phone": p.phone,
            "country": p.country, "timezone": p.timezone, "address": p.address,
            "managed_by_config": p.managed_by_config}


def int_param(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise ApiError(400, "invalid_id", f"{name} must be an integer", field=name) from None


async def scoped_practice(session: AsyncSession, principal: Principal, practice_id: int) -> Practice:
    """The practice, or 404 when it does not exist or belongs to another tenant.

    Another tenant's practice is "not found", not "forbidden": its existence is not ours to tell.
    """
    practice = await session.get(Practice, practice_id)
    if practice is None or not await principal.can_access_practice(session, practice_id):
        raise not_found("practice")
    return practice


@routes.get("/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    p = get_principal(request)
    return web.json_response({"role": p.role, "company_id": p.company_id, "practice_id": p.practice_id,
                              "name": p.name})


@routes.get("/api/companies")
async def list_companies(request: web.Request) -> web.Response:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        ids = await principal.company_ids(session)
        stmt = select(Company).order_by(Company.id)
        if ids is not None:
            stmt = stmt.where(Company.id.in_(ids))
        items = [company_json(c) for c in (await session.execute(stmt)).scalars()]
    return web.json_response({"items": items})


@routes.get("/api/practices")
async def list_practices(request: web.Request) -> web.Response:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        ids = await principal.practice_ids(session)
        stmt = select(Practice).order_by(Practice.id)
        if ids is not None:
            stmt = stmt.where(Practice.id.in_(ids))
        items = [practice_json(p) for p in (await session.execute(stmt)).scalars()]
    return web.json_response({"items": items})


@routes.get("/api/practices/{id}")
async def get_practice(request: web.Request) -> web.Response:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    practice_id = int_param(request, "id")
    async with hub.sessionmaker() as session:
        return web.json_response(practice_json(await scoped_practice(session, principal, practice_id)))


@routes.get("/api/events")
async def list_events(request: web.Request) -> web.Response:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        ids = await principal.practice_ids(session)
        rows = await events.list_events(session, kind=request.query.get("kind"), practice_ids=ids)
    return web.json_response({"items": [
        {"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "practice_id": e.practice_id,
         "message": e.message, "data": e.data} for e in rows
    ]})


def job_json(j: Job) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "attempts": j.attempts,
            "max_attempts": j.max_attempts, "run_at": j.run_at.isoformat(), "last_error": j.last_error,
            "idempotency_key": j.idempotency_key, "payload": j.payload}


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    require_role(request, "operator")
    hub = request.app[HUB_KEY]
    status = request.query.get("status")
    if status and status not in jobs.STATUSES:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(jobs.STATUSES)}", field="status")
    async with hub.sessionmaker() as session:
        rows = await jobs.list_jobs(session, status=status, kind=request.query.get("kind"))
    return web.json_response({"items": [job_json(j) for j in rows]})
