"""Templates and the request's console context (who is signed in, the form token, the menu)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from hub.auth import Principal
from hub.web.keys import HUB_KEY

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
HTMX = "htmx-2.0.11.min.js"

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("vethub_console_principal", Principal)
SESSION: web.RequestKey[str] = web.RequestKey("vethub_console_session", str)
CSRF: web.RequestKey[str] = web.RequestKey("vethub_console_csrf", str)

env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(("html", "j2")),
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

#: The menu per role: (path under /console, label).
MENU: dict[str, list[tuple[str, str]]] = {
    "operator": [("/console/", "Home"), ("/console/jobs", "Dead jobs"), ("/console/events", "Rejected associations"),
                 ("/console/sync", "PIMS sync"), ("/console/plugins", "Plugins"), ("/console/tokens", "Tokens"),
                 ("/console/accounts", "Accounts"), ("/console/account-requests", "Account requests"),
                 ("/console/reports/onboarding", "Onboarding report"),
                 ("/console/switch-requests", "Switch requests"), ("/console/cases", "Cases"),
                 ("/console/clients", "Clients"),
                 ("/console/reminders", "Retention calendar"), ("/console/colleagues", "Users")],
    "company_admin": [("/console/", "Home"), ("/console/cases", "Cases"), ("/console/accounts", "Accounts"),
                      ("/console/account-requests", "Account requests"),
                      ("/console/reports/onboarding", "Onboarding report"),
                      ("/console/switch-requests", "Switch requests"), ("/console/colleagues", "Colleagues")],
    "practice_staff": [("/console/", "Home"), ("/console/clients", "Clients"),
                       ("/console/studies", "Studies"), ("/console/cases", "Cases"),
                       ("/console/reminders", "Retention calendar"),
                       ("/console/switch-requests", "Switch or add a company"),
                       ("/console/colleagues", "Colleagues")],
}
#: Messages a redirect may ask for by key (``?notice=saved``); never text from the URL itself.
NOTICES = {
    "saved": "Saved.", "signed_out": "You are signed out.", "replayed": "The job is queued again.",
    "revoked": "The token is revoked.", "invited": "The invitation is created.",
    "accepted": "The request is accepted; the practice has been emailed.", "rejected": "The request is rejected.",
    "asked": "The practice has been asked for more information.", "recorded": "Your answer is recorded.",
}
ROLE_NAMES = {"operator": "Operator", "company_admin": "Company admin", "practice_staff": "Practice staff"}


def fmt_dt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value.replace("T", " ")[:16]
    return value.strftime("%Y-%m-%d %H:%M")


env.filters["dt"] = fmt_dt


def render(request: web.Request, template: str, *, status: int = 200, title: str, **context: Any) -> web.Response:
    hub = request.app[HUB_KEY]
    me = request.get(PRINCIPAL)
    html = env.get_template(template).render(
        title=title, me=me, csrf=request.get(CSRF, ""), path=request.path, hub_name=hub.config.hub.name,
        menu=MENU.get(me.role, []) if me else [], role_name=ROLE_NAMES.get(me.role, "") if me else "",
        htmx=f"/console/static/{HTMX}", notice=NOTICES.get(request.query.get("notice", ""), ""), **context)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)
