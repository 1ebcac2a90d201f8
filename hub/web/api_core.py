"""The core's API: companies, practices, operator events, jobs; all scoped to the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events, jobs
from hub.auth import Principal
from hub.db.models import Company, Job, Practice
from hub.db.transactions import row_dicts
from hub.errors import NotFound
from hub.web.auth import get_principal, read_as_caller, require_role
from hub.web.contract import ApiRoutes, Id, Prebuilt, RequestModel, ResponseModel
from hub.web.keys import HUB_KEY

routes = ApiRoutes(tag="core")


class CompanyOut(ResponseModel):
    """A reading company, as the API returns it."""
    id: int
    slug: str
    name: str
    email: str | None
    modalities: list[str]
    managed_by_config: bool


class CompanyList(ResponseModel):
    """Response body of the company list."""
    items: list[CompanyOut]


class PracticeOut(ResponseModel):
    """A practice, as the API returns it."""
    id: int
    slug: str
    name: str
    email: str | None
    phone: str | None
    country: str
    timezone: str
    address: dict[str, Any]
    managed_by_config: bool


class PracticeList(ResponseModel):
    """Response body of the practice list."""
    items: list[PracticeOut]


class IdPath(RequestModel):
    """Path parameters of the core routes addressed by a numeric id."""
    id: Id


class WhoAmI(ResponseModel):
    """Response body saying who the caller is and what its role and scope are."""
    role: str
    company_id: int | None
    practice_id: int | None
    name: str


class EventQuery(RequestModel):
    """Query filtering the event log by kind."""
    kind: str | None = Field(default=None, max_length=100)


class EventOut(ResponseModel):
    """One entry of the hub's event log."""
    id: int
    at: datetime
    kind: str
    practice_id: int | None
    message: str
    data: dict[str, Any] | None


class EventList(ResponseModel):
    """Response body of the event log, newest first."""
    items: list[EventOut]


class JobQuery(RequestModel):
    """Query filtering the job list by status and kind."""
    status: jobs.JobStatus | None = None
    kind: str | None = Field(default=None, max_length=100)


class JobOut(ResponseModel):
    """A job in the durable queue, as operators inspect it."""
    id: int
    kind: str
    status: jobs.JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    last_error: str | None
    idempotency_key: str | None
    payload: dict[str, Any]


class JobList(ResponseModel):
    """Response body of the job list."""
    items: list[JobOut]


def company_json(c: Company) -> dict[str, Any]:
    return {"id": c.id, "slug": c.slug, "name": c.name, "email": c.email, "modalities": c.modalities,
            "managed_by_config": c.managed_by_config}


def practice_json(p: Practice) -> dict[str, Any]:
    return {"id": p.id, "slug": p.slug, "name": p.name, "email": p.email, "phone": p.phone,
            "country": p.country, "timezone": p.timezone, "address": p.address,
            "managed_by_config": p.managed_by_config}


async def scoped_practice(session: AsyncSession, principal: Principal, practice_id: int) -> Practice:
    """The practice, or 404 when it does not exist or belongs to another tenant.

    Another tenant's practice is "not found", not "forbidden": its existence is not ours to tell.
    """
    practice = await session.get(Practice, practice_id)
    if practice is None or not await principal.can_access_practice(session, practice_id):
        raise NotFound.of("practice")
    return practice


@routes.get("/api/whoami", summary="Who the token belongs to", response=WhoAmI)
async def whoami(request: web.Request) -> WhoAmI:
    p = get_principal(request)
    return WhoAmI(role=p.role, company_id=p.company_id, practice_id=p.practice_id, name=p.name)


@routes.get("/api/companies", summary="Companies the caller may see", response=CompanyList)
async def list_companies(request: web.Request) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.read_session() as session:
        ids = await principal.company_ids(session)
        stmt = select(Company).order_by(Company.id)
        if ids is not None:
            stmt = stmt.where(Company.id.in_(ids))
        return {"items": [company_json(c) for c in (await session.execute(stmt)).scalars()]}


PRACTICE_COLUMNS = tuple(getattr(Practice, name) for name in PracticeOut.model_fields)


# Built once: constructing the select for every request cost more than SQLite took to run it.
_ALL_PRACTICES = select(*PRACTICE_COLUMNS).order_by(Practice.id)
_SOME_PRACTICES = _ALL_PRACTICES.where(Practice.id.in_(bindparam("ids", expanding=True)))


def _practice_rows(conn: Connection, principal: Principal) -> list[dict[str, Any]]:
    ids = principal.practice_ids_on(conn)
    if ids is None:
        return row_dicts(conn.execute(_ALL_PRACTICES))
    return row_dicts(conn.execute(_SOME_PRACTICES, {"ids": ids}))


@routes.get("/api/practices", summary="Practices the caller may see", response=PracticeList,
            auth_in_read=True)
async def list_practices(request: web.Request) -> Prebuilt:
    # Token, scope and rows in one hand-off, as plain rows of PracticeOut's columns: a list
    # route's cost was ORM instances, round trips and validating every row into the model.
    return Prebuilt({"items": await read_as_caller(request, _practice_rows)})


@routes.get("/api/practices/{id}", summary="One practice", path_params=IdPath, response=PracticeOut,
            errors=(404,))
async def get_practice(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.read_session() as session:
        return practice_json(await scoped_practice(session, principal, path.id))


@routes.get("/api/events", summary="Operator events, newest first", query=EventQuery, response=EventList)
async def list_events(request: web.Request, query: EventQuery) -> EventList:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.read_session() as session:
        ids = await principal.practice_ids(session)
        rows = await events.list_events(session, kind=query.kind, practice_ids=ids)
    return EventList.model_validate({"items": [
        {"id": e.id, "at": e.at, "kind": e.kind, "practice_id": e.practice_id,
         "message": e.message, "data": e.data} for e in rows
    ]})


def job_json(j: Job) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "attempts": j.attempts,
            "max_attempts": j.max_attempts, "run_at": j.run_at.isoformat(), "last_error": j.last_error,
            "idempotency_key": j.idempotency_key, "payload": j.payload}


@routes.get("/api/jobs", summary="Jobs (operators)", query=JobQuery, response=JobList, errors=(403,))
async def list_jobs(request: web.Request, query: JobQuery) -> dict[str, Any]:
    require_role(request, "operator")
    hub = request.app[HUB_KEY]
    async with hub.read_session() as session:
        rows = await jobs.list_jobs(session, status=query.status, kind=query.kind)
    return {"items": [job_json(j) for j in rows]}
