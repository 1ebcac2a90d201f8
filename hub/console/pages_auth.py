"""Signing in and out, the home page, and inviting colleagues."""

from __future__ import annotations

from aiohttp import web

from hub.console import sessions, users
from hub.console.app import LOCKOUT_KEY, PRE_COOKIE, SESSION_COOKIE, form_value, set_cookie
from hub.console.render import PRINCIPAL, SESSION, render
from hub.db.models import Company, Practice
from hub.errors import DomainError
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()


def _next(value: str) -> str:
    # only a path inside the console: never an open redirect
    return value if value.startswith("/console/") and not value.startswith("//") else "/console/"


@routes.get("/sign-in")
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    if PRINCIPAL in request:
        raise web.HTTPSeeOther(_next(request.query.get("next", "")))
    return render(request, "sign_in.html.j2", title="Sign in", email="", error=None,
                  next=_next(request.query.get("next", "")))


@routes.post("/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    form = await request.post()
    email, password = form_value(form, "email", 320), str(form.get("password", ""))[:1000]
    nxt = _next(form_value(form, "next"))
    try:
        async with hub.transaction() as session:
            token = await sessions.sign_in(session, hub, request.app[LOCKOUT_KEY], email, password)
    except sessions.SignInRefused as err:
        if err.suspended is not None:
            return render(request, "suspended.html.j2", status=403, title="Access suspended",
                          suspended=err.suspended)
        return render(request, "sign_in.html.j2", status=err.status, title="Sign in", email=email,
                      error=err.message, next=nxt)
    response = web.HTTPSeeOther(nxt)
    set_cookie(response, hub, SESSION_COOKIE, token, max_age=sessions.SESSION_HOURS * 3600)
    response.del_cookie(PRE_COOKIE, path="/")
    raise response


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        await sessions.sign_out(session, hub, request[SESSION])
    response = web.HTTPSeeOther("/console/sign-in?notice=signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        company = await session.get(Company, me.company_id) if me.company_id else None
        practice = await session.get(Practice, me.practice_id) if me.practice_id else None
    return render(request, "home.html.j2", title="Home", company=company, practice=practice)


async def _colleagues_page(request: web.Request, *, status: int = 200, error: str | None = None,
                           link: str | None = None, values: dict[str, str] | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        people = await users.colleagues(session, me)
    return render(request, "colleagues.html.j2", status=status, title="Colleagues" if not me.is_operator else "Users",
                  people=people, error=error, link=link, values=values or {})


@routes.get("/colleagues")
async def colleagues(request: web.Request) -> web.StreamResponse:
    return await _colleagues_page(request)


@routes.post("/colleagues")
async def invite(request: web.Request) -> web.StreamResponse:
    """Invite a colleague of one's own company or practice; the link is shown once, to pass on."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    form = await request.post()
    email, name = form_value(form, "email", 320), form_value(form, "name", 200)
    try:
        async with hub.transaction() as session:
            _, link, _ = await users.create_user(session, hub, me, role=me.role, email=email, name=name,
                                                 company_id=me.company_id, practice_id=me.practice_id)
    except DomainError as err:
        return await _colleagues_page(request, status=err.status, error=err.message,
                                      values={"email": email, "name": name})
    return await _colleagues_page(request, link=link)
