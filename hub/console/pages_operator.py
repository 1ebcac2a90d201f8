"""Operator pages: dead jobs with Replay, rejected DICOM associations, PIMS sync per practice,
plugins and their health, tokens."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from hub import events, jobs
from hub.console import listing, tokens
from hub.console.app import requires
from hub.console.listing import Column
from hub.console.pages_company import path_id
from hub.console.render import PRINCIPAL, render
from hub.db.models import Practice
from hub.errors import NotFound
from hub.pims.api import sync_status
from hub.web.api_core import scoped_practice
from hub.web.health import readiness
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()
REJECTED_ASSOCIATION = "dicom.association_rejected"  # the DICOM receiver's operator event

JOB_COLUMNS = (
    Column("id", "Job", kind="int"),
    Column("kind", "Kind"),
    Column("attempts", "Attempts", kind="int"),
    Column("last_error", "Error"),
    Column("finished_at", "Finished", kind="date"),
)


@routes.get("/jobs")
@requires("operator")
async def job_list(request: web.Request) -> web.StreamResponse:
    """Dead jobs by default (with Replay); ``?status=`` shows the others, e.g. a replayed job's success."""
    hub = request.app[HUB_KEY]
    status = request.query.get("status", jobs.JobStatus.DEAD)
    if status not in set(jobs.JobStatus):
        raise NotFound("there is no such job status")
    async with hub.sessionmaker() as session:
        rows = [{"id": j.id, "kind": j.kind, "attempts": j.attempts, "last_error": j.last_error or "",
                 "finished_at": j.finished_at.strftime("%Y-%m-%d %H:%M") if j.finished_at else ""}
                for j in await jobs.list_jobs(session, status=status, limit=1000)]
    shown = listing.build(rows, JOB_COLUMNS, request.query, request.path, keep=("status",))
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, f"{status}-jobs.csv")
    return render(request, "jobs.html.j2", title="Dead jobs" if status == jobs.JobStatus.DEAD else f"Jobs: {status}",
                  listing=shown, job_status=status, statuses=list(jobs.JobStatus))


@routes.post("/jobs/{id}/replay")
@requires("operator")
async def replay(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    job_id = path_id(request)
    async with hub.transaction() as session:
        if await jobs.retry_jobs(session, hub.clock.now(), ids=[job_id]) != 1:
            raise NotFound("no dead job with this id (it may have been replayed already)")
        hub.jobs.wake_after_commit(session)
    raise web.HTTPSeeOther("/console/jobs?notice=replayed")


EVENT_COLUMNS = (
    Column("at", "When", kind="date"),
    Column("practice", "Practice"),
    Column("message", "What happened"),
    Column("calling_ae", "Calling AE"),
    Column("address", "From address"),
)


@routes.get("/events")
@requires("operator")
async def rejected_associations(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        names = dict((await session.execute(select(Practice.id, Practice.name))).all())
        found = await events.list_events(session, kind=REJECTED_ASSOCIATION,
                                         practice_ids=await me.practice_ids(session), limit=1000)
    rows = [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "practice": names.get(e.practice_id or 0, ""),
             "message": e.message, "calling_ae": str((e.data or {}).get("calling_ae", "")),
             "address": str((e.data or {}).get("address", (e.data or {}).get("peer", "")))} for e in found]
    shown = listing.build(rows, EVENT_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "rejected-associations.csv")
    return render(request, "events.html.j2", title="Rejected DICOM associations", listing=shown)


@routes.get("/sync")
@requires("operator")
async def sync(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    practices = []
    async with hub.sessionmaker() as session:
        for p in (await session.execute(select(Practice).order_by(Practice.name))).scalars():
            await scoped_practice(session, me, p.id)
            practices.append((p, await sync_status(session, hub, p)))
    return render(request, "sync.html.j2", title="PIMS sync", practices=practices)


@routes.get("/plugins")
@requires("operator")
async def plugins(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    checks = await readiness(hub)
    return render(request, "plugins.html.j2", title="Plugins and health", plugins=hub.pm.describe(),
                  checks=checks)


TOKEN_COLUMNS = (
    Column("prefix", "Token"),
    Column("kind", "Kind"),
    Column("name", "Name"),
    Column("role", "Role"),
    Column("created_at", "Created", kind="date"),
    Column("expires_at", "Expires", kind="date"),
    Column("state", "State"),
)


@routes.get("/tokens")
@requires("operator")
async def token_list(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        rows = await tokens.list_tokens(session, me)
    shown = listing.build(rows, TOKEN_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "tokens.csv")
    return render(request, "tokens.html.j2", title="Tokens", listing=shown)


@routes.post("/tokens/{id}/revoke")
@requires("operator")
async def revoke(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.transaction() as session:
        await tokens.revoke_token(session, hub, me, path_id(request))
    raise web.HTTPSeeOther("/console/tokens?notice=revoked")
