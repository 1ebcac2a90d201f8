"""The console's aiohttp sub-application at ``/console``: session, form tokens, security headers
and HTML error pages, then the pages of each role."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from hub.console import sessions
from hub.console.lockout import Lockout
from hub.console.render import CSRF, PRINCIPAL, SESSION, STATIC, render
from hub.core import Hub
from hub.db.models import User
from hub.errors import DomainError, Forbidden
from hub.web.keys import HUB_KEY

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_COOKIE = "vh_session"
PRE_COOKIE = "vh_pre"  # binds the sign-in form's token before there is a session
LOCKOUT_KEY: web.AppKey[Lockout] = web.AppKey("vethub_console_lockout", Lockout)
OPEN_PATHS = ("/console/sign-in", "/console/static/")

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def secure_cookies(hub: Hub) -> bool:
    return hub.config.hub.public_url.lower().startswith("https://")


def set_cookie(response: web.StreamResponse, hub: Hub, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax", secure=secure_cookies(hub),
                        max_age=max_age)


def _secret(hub: Hub) -> str:
    return hub.config.hub.secret_key.get_secret_value()


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as pages: another tenant's object is "Not found", exactly like a missing one."""
    try:
        return await handler(request)
    except DomainError as err:
        title = {404: "Not found", 403: "Not allowed", 409: "Not possible now", 410: "No longer valid"}.get(
            err.status, "Not saved")
        return render(request, "error.html.j2", status=err.status, title=title, message=err.message)
    except web.HTTPNotFound:
        return render(request, "error.html.j2", status=404, title="Not found",
                      message="There is no such page, or it is not yours to see.")


@web.middleware
async def session_and_csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    token = request.cookies.get(SESSION_COOKIE, "")
    new_pre = None
    if token:
        try:
            async with hub.sessionmaker() as session:
                request[PRINCIPAL] = await sessions.principal_for(session, hub, token)
            request[SESSION] = token
        except sessions.SignInRefused as err:
            token = ""
            if err.suspended is not None and not request.path.startswith(OPEN_PATHS):
                page = render(request, "suspended.html.j2", status=403, title="Access suspended",
                              suspended=err.suspended)
                page.del_cookie(SESSION_COOKIE, path="/")
                return page
    binding = token or request.cookies.get(PRE_COOKIE, "")
    if not binding:
        binding = new_pre = secrets.token_urlsafe(24)
    request[CSRF] = sessions.csrf_token(_secret(hub), binding)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        form = await request.post()
        sent = str(form.get("csrf", "") or request.headers.get("X-CSRF-Token", ""))
        if new_pre is not None or not sessions.csrf_ok(_secret(hub), binding, sent):
            return render(request, "error.html.j2", status=403, title="Form expired",
                          message="This form was not sent from this console session (its security token "
                                  "is missing or old). Go back, reload the page and send it again.")
    if PRINCIPAL not in request and not request.path.startswith(OPEN_PATHS):
        raise web.HTTPSeeOther(location=f"/console/sign-in?next={quote(request.path_qs)}"
                               if request.path != "/console/" else "/console/sign-in")
    response = await handler(request)
    if new_pre is not None:
        set_cookie(response, hub, PRE_COOKIE, new_pre)
    return response


def requires(*roles: str) -> Callable[[Handler], Handler]:
    """A page for these roles only; the data it shows is still scoped by the services."""

    def deco(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if request[PRINCIPAL].role not in roles:
                raise Forbidden("this page is for " + " or ".join(r.replace("_", " ") for r in roles))
            return await handler(request)
        return wrapper
    return deco


def create_console(hub: Hub) -> web.Application:
    from hub.console import pages_auth, pages_cases, pages_company, pages_operator, pages_practice

    console = web.Application(middlewares=[security_headers, html_errors, session_and_csrf])
    console[HUB_KEY] = hub
    console[LOCKOUT_KEY] = Lockout()
    console.router.add_static("/static/", STATIC, name="static")
    for module in (pages_auth, pages_company, pages_operator, pages_practice, pages_cases):
        console.add_routes(module.routes)
    return console


async def to_console(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def install(app: web.Application, hub: Hub) -> None:
    """Mount the console on the hub's app (``/console/``)."""
    app.router.add_get("/console", to_console)
    app.add_subapp("/console/", create_console(hub))
    app.on_startup.append(_first_operator_hint)


async def _first_operator_hint(app: web.Application) -> None:
    """On a fresh install, say how to create the first sign-in (the quick start's next step)."""
    hub = app[HUB_KEY]
    try:
        async with hub.sessionmaker() as session:
            if (await session.execute(select(User.id).where(User.role == "operator").limit(1))).first():
                return
    except Exception:  # the hub may not be started by this app; the hint is only a courtesy
        return
    config = f" --config {hub.config.path}" if hub.config.path else ""
    log.warning("console: no operator can sign in yet; create one with: vethub admin create-user%s "
                "--role operator --email YOU@EXAMPLE.COM  (then open %s/console/)", config,
                hub.config.hub.public_url.rstrip("/"))


def form_value(form: Any, name: str, limit: int = 2000) -> str:
    return str(form.get(name, "") or "").strip()[:limit]
